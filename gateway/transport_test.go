package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	v1reflection "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/auth"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload/tlstest"
)

// tlsSetup is a CA, the gateway's reloader over its files, and a client
// certificate of the CA.
type tlsSetup struct {
	dir        string
	ca         *tlstest.CA
	server     tlstest.Files
	reloader   *tlsreload.Reloader
	clientCert tls.Certificate
}

func newTLSSetup(t *testing.T, mutual bool) *tlsSetup {
	t.Helper()
	s := &tlsSetup{dir: t.TempDir(), ca: tlstest.NewCA(t, "test CA")}
	s.server = s.ca.Issue(t, "gateway").Write(t, s.dir, "gateway")
	cfg := tlsreload.Config{CertFile: s.server.Cert, KeyFile: s.server.Key}
	if mutual {
		cfg.CAFile = s.ca.WriteCA(t, s.dir, "clients.pem")
	}
	r, err := tlsreload.New(cfg, tlsreload.Deps{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	s.reloader = r
	p := s.ca.Issue(t, "client")
	if s.clientCert, err = tls.X509KeyPair(p.CertPEM, p.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return s
}

// clientConfig trusts the CA and, with withCert, presents the client
// certificate.
func (s *tlsSetup) clientConfig(withCert bool) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.ca.PEM)
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if withCert {
		c.Certificates = []tls.Certificate{s.clientCert}
	}
	return c
}

func (s *tlsSetup) dial(t *testing.T, addr string, withCert bool) colpaliv1.EmbeddingServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(s.clientConfig(withCert))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return colpaliv1.NewEmbeddingServiceClient(conn)
}

func (s *tlsSetup) httpClient(t *testing.T, withCert bool) *http.Client {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: s.clientConfig(withCert), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func postJSON(t *testing.T, c *http.Client, url, body string) (int, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func TestTLSServesGRPCAndREST(t *testing.T) {
	s := newTLSSetup(t, false)
	g := startGateway(t, Config{}, Deps{TLS: s.reloader})
	if _, err := s.dial(t, g.srv.GRPCAddr(), false).EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); err != nil {
		t.Fatalf("gRPC over TLS: %v", err)
	}
	// The REST side's hop to the gRPC server works with TLS on.
	code, body, err := postJSON(t, s.httpClient(t, false), "https://"+g.srv.HTTPAddr()+"/v1/queries:embed", `{"queries":["q"]}`)
	if err != nil || code != http.StatusOK {
		t.Fatalf("REST over TLS: %d %s %v", code, body, err)
	}
	// Clear text is refused.
	plain, err := grpc.NewClient(g.srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := colpaliv1.NewEmbeddingServiceClient(plain).EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}); status.Code(err) != codes.Unavailable {
		t.Errorf("clear-text gRPC client: got %v, want UNAVAILABLE", err)
	}
}

func TestMutualTLSRefusesClientWithoutCertificate(t *testing.T) {
	s := newTLSSetup(t, true)
	g := startGateway(t, Config{}, Deps{TLS: s.reloader})
	req := &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}}
	if _, err := s.dial(t, g.srv.GRPCAddr(), true).EmbedQueries(testContext(t), req); err != nil {
		t.Fatalf("gRPC with a client certificate: %v", err)
	}
	if _, err := s.dial(t, g.srv.GRPCAddr(), false).EmbedQueries(testContext(t), req); status.Code(err) != codes.Unavailable {
		t.Errorf("gRPC without a client certificate: got %v, want UNAVAILABLE (handshake refused)", err)
	}
	url := "https://" + g.srv.HTTPAddr() + "/v1/queries:embed"
	if code, body, err := postJSON(t, s.httpClient(t, true), url, `{"queries":["q"]}`); err != nil || code != http.StatusOK {
		t.Fatalf("REST with a client certificate: %d %s %v", code, body, err)
	}
	if _, _, err := postJSON(t, s.httpClient(t, false), url, `{"queries":["q"]}`); err == nil {
		t.Error("REST without a client certificate was served")
	}
}

// TestCertificateRotationBreaksNoCall rotates the gateway's certificate
// while calls run, on connections made before and after, and checks that
// none fails and that new handshakes see the new certificate.
func TestCertificateRotationBreaksNoCall(t *testing.T) {
	s := newTLSSetup(t, true)
	g := startGateway(t, Config{}, Deps{TLS: s.reloader})
	addr := g.srv.GRPCAddr()
	served := func() string {
		conn, err := tls.Dial("tcp", addr, func() *tls.Config { c := s.clientConfig(true); c.NextProtos = []string{"h2"}; return c }())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	before := served()

	ctx, cancel := context.WithCancel(testContext(t))
	var wg sync.WaitGroup
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	long := s.dial(t, addr, true) // one connection made before the rotation
	for i := range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				client := long
				if i%2 == 1 { // the others make a new connection each time
					conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(s.clientConfig(true))))
					if err != nil {
						t.Error(err)
						return
					}
					client = colpaliv1.NewEmbeddingServiceClient(conn)
					defer conn.Close()
				}
				_, err := client.EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
				if ctx.Err() != nil {
					return
				}
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	waitCalls := func(n int64) {
		start := calls.Load()
		testutil.Eventually(t, "calls to run", func() bool { return calls.Load() >= start+n })
	}
	waitCalls(20)
	next := s.ca.Issue(t, "gateway, rotated")
	next.Write(t, s.dir, "gateway")
	if !s.reloader.Check() {
		t.Fatal("the reloader did not take the rotated files")
	}
	waitCalls(20)
	cancel()
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d of %d calls failed across the rotation; the first: %v", n, calls.Load(), firstErr.Load())
	}
	if after := served(); after == before || after != next.Serial.String() {
		t.Errorf("a new handshake sees certificate %s; want the rotated %s (was %s)", after, next.Serial, before)
	}
}

func TestAdminListener(t *testing.T) {
	g := startGateway(t, Config{}, Deps{})
	if code, _ := g.get(t, "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the public listener: HTTP %d, want 404", code)
	}
	if code, _ := g.get(t, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ on the public listener: HTTP %d, want 404", code)
	}
	if code, _ := g.getAdmin(t, "/metrics"); code != http.StatusOK {
		t.Errorf("/metrics on the admin listener: HTTP %d", code)
	}
	if code, body := g.getAdmin(t, "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Errorf("pprof on the admin listener: HTTP %d", code)
	}
	if code, _ := g.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz on the public listener: HTTP %d", code)
	}

	// Reflection: on the admin listener, describing the public API; not on
	// the public listener.
	listServices := func(addr string) ([]string, error) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		stream, err := v1reflection.NewServerReflectionClient(conn).ServerReflectionInfo(testContext(t))
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&v1reflection.ServerReflectionRequest{MessageRequest: &v1reflection.ServerReflectionRequest_ListServices{}}); err != nil {
			// The server may end the stream (UNIMPLEMENTED) before the
			// request is sent: Send says io.EOF, Recv says why.
			_, err := stream.Recv()
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		return names, nil
	}
	names, err := listServices(g.srv.AdminAddr())
	if err != nil || !strings.Contains(strings.Join(names, ","), "colpali.v1.EmbeddingService") {
		t.Errorf("admin reflection lists %v (%v); want the EmbeddingService", names, err)
	}
	if _, err := listServices(g.srv.GRPCAddr()); status.Code(err) != codes.Unimplemented {
		t.Errorf("public reflection: got %v, want UNIMPLEMENTED", err)
	}
	// gRPC health is on both.
	for _, addr := range []string{g.srv.GRPCAddr(), g.srv.AdminAddr()} {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = healthpb.NewHealthClient(conn).Check(testContext(t), &healthpb.HealthCheckRequest{})
		conn.Close()
		if err != nil {
			t.Errorf("gRPC health on %s: %v", addr, err)
		}
	}
}

func TestAdminAddressInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	srv, err := New(Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: busy.Addr().String()},
		Deps{Logger: testLogger(t), Embedder: &fakeEmbedder{}, Ready: func(context.Context) error { return nil }, Authenticator: auth.None()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Fatalf("Listen with the admin address taken: %v", err)
	}
}
