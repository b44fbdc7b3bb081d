package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func noEnv(string) string { return "" }

func TestRunReportsEveryBadSetting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env := map[string]string{"COLPALI_MAX_IMAGES": "-2"}
	err := run(ctx, []string{"-max-queries", "0x", "-default-timeout", "5m", "-query-model", "a b", "-log-format", "xml", "-max-top-k", "-1", "-stream-timeout", "-1s"},
		io.Discard, func(k string) string { return env[k] })
	if err == nil {
		t.Fatal("run accepted bad settings")
	}
	for _, want := range []string{"-max-queries", "max images must be positive", "default timeout 5m0s exceeds max timeout", `query model "a b"`, "-log-format", "max top k must be positive", "stream timeout must be positive"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
}

func TestRunHelp(t *testing.T) {
	var out strings.Builder
	err := run(context.Background(), []string{"-help"}, &out, noEnv)
	if !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "COLPALI_") || !strings.Contains(out.String(), "-triton-addr") {
		t.Fatalf("err %v, usage %q", err, out.String())
	}
}

// running is a gateway started through run, logging JSON to the test log.
type running struct {
	grpcAddr, httpAddr string
	conn               *grpc.ClientConn
	stop               func() error // ends run and returns its error
}

// startRun runs the gateway command with args and env (COLPALI_TRITON_ADDR
// set to simAddr), waits until it logs where it serves, and dials it. It is
// stopped in t.Cleanup unless stop was called.
func startRun(t *testing.T, ctx context.Context, simAddr string, args []string, env map[string]string) *running {
	t.Helper()
	logR, logW := io.Pipe()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-log-format", "json"}, args...),
			logW, func(k string) string {
				if k == "COLPALI_TRITON_ADDR" {
					return simAddr
				}
				return env[k]
			})
		logW.Close()
	}()

	// Read log lines until the gateway says where it serves; keep draining
	// afterwards so the gateway never blocks on its log.
	type addrs struct{ grpc, http string }
	served := make(chan addrs, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(logR)
		for sc.Scan() {
			var line struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "gateway serving" {
				served <- addrs{line.GRPCAddr, line.HTTPAddr}
			}
			t.Log(sc.Text())
		}
		io.Copy(io.Discard, logR)
	}()
	var once sync.Once
	var runErr error
	r := &running{}
	r.stop = func() error {
		once.Do(func() {
			if r.conn != nil {
				r.conn.Close()
			}
			cancel()
			runErr = <-done
			<-readerDone // no t.Log after the test returns
		})
		return runErr
	}
	t.Cleanup(func() { _ = r.stop() })
	select {
	case a := <-served:
		r.grpcAddr, r.httpAddr = a.grpc, a.http
	case err := <-done:
		done <- err
		t.Fatalf("run returned before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("the gateway never logged its address")
	}
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	r.conn = conn
	return r
}

// unreachableDatabase returns the URL of a Postgres that is not there: a
// loopback port that was free a moment ago.
func unreachableDatabase(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return "postgres://colpali@" + addr + "/colpali?sslmode=disable&connect_timeout=2"
}

// TestRunServesAndStops runs the gateway command against a simulator with
// its database down (DATABASE_URL names nothing): embeddings are served,
// document calls answer UNAVAILABLE, and the command stops with its
// context.
func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sim, err := tritonsim.Start(ctx, tritonsim.Config{GRPCAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()
	r := startRun(t, ctx, sim.GRPCAddr(), nil, map[string]string{"DATABASE_URL": unreachableDatabase(t)})

	resp, err := colpaliv1.NewEmbeddingServiceClient(r.conn).EmbedQueries(ctx, &colpaliv1.EmbedQueriesRequest{Queries: []string{"hello"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEmbeddings()) != 1 || resp.GetEmbeddings()[0].GetDimension() != 128 {
		t.Fatalf("response %v", resp)
	}
	_, err = colpaliv1.NewDocumentServiceClient(r.conn).ListDocuments(ctx, &colpaliv1.ListDocumentsRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("ListDocuments with the database down: %v, want Unavailable", err)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func TestMigrateCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, []string{"migrate", "-help"}, &out, noEnv); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-database-url") {
		t.Errorf("migrate -help: %v, usage %q", err, out.String())
	}
	// The database is down: migrate fails, naming why, within its timeout.
	err := run(ctx, []string{"migrate", "-timeout", "3s"}, io.Discard, func(k string) string {
		if k == "DATABASE_URL" {
			return unreachableDatabase(t)
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("migrate against no database: %v, want an error", err)
	}
}
