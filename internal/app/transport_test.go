package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload/tlstest"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
)

func TestTLSFlagsGoTogether(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-tls-cert-file", "c.pem"}, "-tls-cert-file and -tls-key-file go together"},
		{[]string{"-tls-client-ca-file", "ca.pem"}, "-tls-client-ca-file needs -tls-cert-file"},
		{[]string{"-triton-key-file", "k.pem"}, "-triton-cert-file and -triton-key-file go together"},
		{[]string{"-admin-addr", "nowhere"}, `-admin-addr "nowhere": want host:port`},
	} {
		if _, err := parseOptions(tc.args, io.Discard, noEnv); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestRunWithMutualTLSEverywhere runs the gateway command with mutual TLS on
// its listeners and to a simulator that requires client certificates: a
// client with a certificate of the CA is served end to end.
func TestRunWithMutualTLSEverywhere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "test CA")
	caFile := ca.WriteCA(t, dir, "ca.pem")
	simFiles := ca.Issue(t, "triton").Write(t, dir, "triton")
	simTLS, err := tlsreload.New(tlsreload.Config{CertFile: simFiles.Cert, KeyFile: simFiles.Key, CAFile: caFile}, tlsreload.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", TLS: simTLS.ServerConfig("h2")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	gw := ca.Issue(t, "gateway").Write(t, dir, "gateway")
	r := startRun(t, ctx, sim.GRPCAddr()+"="+sim.MetricsAddr(), []string{
		"-tls-cert-file", gw.Cert, "-tls-key-file", gw.Key, "-tls-client-ca-file", caFile,
		"-triton-ca-file", caFile, "-triton-cert-file", gw.Cert, "-triton-key-file", gw.Key,
	}, map[string]string{"DATABASE_URL": unreachableDatabase(t), "COLPALI_ROUTER_HEALTH_INTERVAL": "50ms"})

	client := ca.Issue(t, "client")
	cert, err := tls.X509KeyPair(client.CertPEM, client.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert},
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for {
		resp, err := colpaliv1.NewEmbeddingServiceClient(conn).EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
		if status.Code(err) == codes.Unavailable && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond) // the router's first health check over TLS
			continue
		}
		if err != nil || len(resp.GetEmbeddings()) != 1 {
			t.Fatalf("EmbedQueries over mutual TLS to the gateway and on to Triton: %v, %v", resp, err)
		}
		break
	}
	if err := r.stop(); err != nil {
		t.Errorf("run: %v", err)
	}
}
