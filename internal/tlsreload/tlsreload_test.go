package tlsreload_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/internal/clock/clocktest"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload/tlstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serial(t *testing.T, c *tls.Certificate) string {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.String()
}

func TestReloadFollowsFilesAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	first := ca.Issue(t, "first")
	f := first.Write(t, dir, "server")
	clk := clocktest.New(time.Unix(0, 0))
	r, err := tlsreload.New(tlsreload.Config{CertFile: f.Cert, KeyFile: f.Key, Interval: time.Second},
		tlsreload.Deps{Logger: testutil.Logger(t), Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testutil.Context(t))
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	if got := serial(t, r.Certificate()); got != first.Serial.String() {
		t.Fatalf("serves %s, want the first pair %s", got, first.Serial)
	}
	if r.Check() {
		t.Error("Check reloaded files that did not change")
	}

	second := ca.Issue(t, "second")
	second.Write(t, dir, "server")
	testutil.Eventually(t, "the rotated pair is served after an interval", func() bool {
		clk.Advance(time.Second)
		return serial(t, r.Certificate()) == second.Serial.String()
	})

	// A half-written pair (a key that does not match, then garbage) keeps
	// the last good one.
	third := ca.Issue(t, "third")
	if err := os.WriteFile(f.Key, third.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if r.Check() {
		t.Error("Check took a key that does not match its certificate")
	}
	if err := os.WriteFile(f.Cert, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r.Check() || serial(t, r.Certificate()) != second.Serial.String() {
		t.Error("a broken certificate file replaced the last good pair")
	}
	// Once the pair is whole again, it is taken.
	third.Write(t, dir, "server")
	if !r.Check() || serial(t, r.Certificate()) != third.Serial.String() {
		t.Error("the repaired pair was not taken")
	}
}

func TestNewRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	f := tlstest.NewCA(t, "ca").Issue(t, "x").Write(t, dir, "x")
	for name, cfg := range map[string]tlsreload.Config{
		"cert without key": {CertFile: f.Cert},
		"missing file":     {CertFile: f.Cert + ".nope", KeyFile: f.Key},
		"key as CA":        {CAFile: f.Key},
	} {
		if _, err := tlsreload.New(cfg, tlsreload.Deps{}); !errors.Is(err, errclass.Invalid) {
			t.Errorf("%s: got %v, want an Invalid error", name, err)
		}
	}
}

// handshake runs one TLS handshake between a server and a client config
// over an in-memory pipe, the server sending one byte once it accepts the
// client; it returns the client's error.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		s := tls.Server(a, server)
		if s.HandshakeContext(testutil.Context(t)) == nil {
			_, _ = s.Write([]byte{1})
		}
		s.Close()
	})
	c := tls.Client(b, client)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	err := c.HandshakeContext(testutil.Context(t))
	if err == nil {
		// TLS 1.3 reports a refused client certificate on the first read.
		_, err = c.Read(make([]byte, 1))
	}
	c.Close()
	wg.Wait()
	return err
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := tlstest.NewCA(t, "ca"), tlstest.NewCA(t, "other")
	caFile := ca.WriteCA(t, dir, "ca.pem")
	sf := ca.Issue(t, "server").Write(t, dir, "server")
	server, err := tlsreload.New(tlsreload.Config{CertFile: sf.Cert, KeyFile: sf.Key, CAFile: caFile}, tlsreload.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	client := func(name string, ca *tlstest.CA) *tls.Config {
		var cfg tlsreload.Config
		cfg.CAFile = caFile
		if ca != nil {
			f := ca.Issue(t, name).Write(t, dir, name)
			cfg.CertFile, cfg.KeyFile = f.Cert, f.Key
		}
		r, err := tlsreload.New(cfg, tlsreload.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		return r.ClientConfig("127.0.0.1")
	}
	if err := handshake(t, server.ServerConfig(), client("good", ca)); err != nil {
		t.Errorf("client with a certificate of the CA: %v", err)
	}
	if err := handshake(t, server.ServerConfig(), client("none", nil)); err == nil {
		t.Error("client without a certificate was let in")
	}
	if err := handshake(t, server.ServerConfig(), client("stranger", other)); err == nil {
		t.Error("client with a certificate of another CA was let in")
	}
	// The client side verifies the server against its CA bundle.
	if err := handshake(t, server.ServerConfig(), &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool()}); err == nil {
		t.Error("a client that does not trust the CA completed the handshake")
	}
}
