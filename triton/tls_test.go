package triton

import (
	"errors"
	"testing"

	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload/tlstest"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
)

// TestMutualTLSToBackend calls a simulator that requires client
// certificates: with the CA and a certificate the calls work; without the
// certificate, or trusting another CA, the backend is unavailable.
func TestMutualTLSToBackend(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "backends CA")
	caFile := ca.WriteCA(t, dir, "ca.pem")
	sf := ca.Issue(t, "triton").Write(t, dir, "triton")
	serverTLS, err := tlsreload.New(tlsreload.Config{CertFile: sf.Cert, KeyFile: sf.Key, CAFile: caFile}, tlsreload.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := tritonsim.Start(testContext(t), tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", TLS: serverTLS.ServerConfig("h2")}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)

	client := func(cfg tlsreload.Config) *Client {
		r, err := tlsreload.New(cfg, tlsreload.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Config{Addr: sim.GRPCAddr(), Models: model.Config{}.WithDefaults(), TLS: r.ClientConfig("")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cf := ca.Issue(t, "gateway").Write(t, dir, "gateway")
	good := client(tlsreload.Config{CAFile: caFile, CertFile: cf.Cert, KeyFile: cf.Key})
	if live, err := good.ServerLive(testContext(t)); err != nil || !live {
		t.Fatalf("mutual TLS to the backend: live %v, %v", live, err)
	}
	if _, err := good.Embed(testContext(t), model.Query, [][]byte{[]byte("q")}, EmbedOptions{}); err != nil {
		t.Fatalf("Embed over mutual TLS: %v", err)
	}
	noCert := client(tlsreload.Config{CAFile: caFile})
	if _, err := noCert.ServerLive(testContext(t)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("without a client certificate: got %v, want ErrUnavailable", err)
	}
	other := tlstest.NewCA(t, "other")
	wrongCA := client(tlsreload.Config{CAFile: other.WriteCA(t, dir, "other.pem"), CertFile: cf.Cert, KeyFile: cf.Key})
	if _, err := wrongCA.ServerLive(testContext(t)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("trusting another CA: got %v, want ErrUnavailable", err)
	}
}
