package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/triton"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context { return testutil.Context(t) }

// syncBuffer is a bytes.Buffer safe for the logger's goroutines and the
// test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunReportsEveryFlagErrorAtOnce(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-instances", "two", "-speed", "fast"}, []string{`-instances "two"`, `-speed "fast"`}},
		{[]string{"-extra-latency", "soon", "-error-rate", "1.5", "-output-datatype", "INT8"},
			[]string{`-extra-latency "soon"`, "error rate 1.5", `output datatype "INT8"`}},
		{[]string{"-max-queue-size", "-1", "-not-ready", "colpali_image,ghost", "-log-format", "xml", "-log-level", "loud"},
			[]string{"max queue size -1", `not ready "ghost"`, `-log-format "xml"`, `-log-level "loud"`}},
		{[]string{"-dimension", "0.5", "stray"}, []string{`-dimension "0.5"`, `unexpected arguments ["stray"]`}},
		{[]string{"-profile", "a100", "-query-cost-curve", "8:1ms,4:2ms", "-jitter-sigma", "-1", "-stall-probability", "2",
			"-seed", "-3", "-gpu-layout", "diagonal", "-dynamic-batching=maybe"},
			[]string{`profile "a100"`, `-query-cost-curve "8:1ms,4:2ms"`, "jitter sigma -1", "stall probability 2",
				`-seed "-3"`, `layout "diagonal"`, `-dynamic-batching "maybe"`}},
		{[]string{"-image-preferred-batch-sizes", "4,x", "-query-preferred-batch-sizes", "128", "-image-timeout-action", "DROP",
			"-query-priority-levels", "2", "-query-default-priority-level", "3"},
			[]string{`-image-preferred-batch-sizes "4,x"`, "preferred batch size 128", `timeout action "DROP"`, "default priority level 3"}},
	} {
		var stderr syncBuffer
		err := run(testContext(t), tc.args, &stderr)
		if err == nil {
			t.Errorf("run(%q) succeeded", tc.args)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("run(%q) error does not mention %q:\n%v", tc.args, w, err)
			}
		}
	}
}

func TestRunUnknownFlag(t *testing.T) {
	var stderr syncBuffer
	err := run(testContext(t), []string{"-bogus"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "-bogus") {
		t.Errorf("run(-bogus) = %v, want an error naming the flag", err)
	}
}

func TestRunHelpSaysItIsASimulator(t *testing.T) {
	var stderr syncBuffer
	if err := run(testContext(t), []string{"-h"}, &stderr); err != nil {
		t.Fatalf("run(-h) = %v, want nil", err)
	}
	help := stderr.String()
	if !strings.HasPrefix(help, "tritonsim is a simulator of NVIDIA Triton Inference Server for development and\ntests. It is not Triton") {
		t.Errorf("help does not start by saying it is a simulator, not Triton:\n%s", help)
	}
	for _, flag := range []string{
		"-grpc-addr", "-metrics-addr", "-query-model", "-image-model", "-query-input", "-image-input",
		"-embeddings-output", "-num-tokens-output", "-dimension", "-output-datatype", "-instances",
		"-max-queue-size", "-query-max-batch-size", "-image-max-batch-size", "-speed", "-query-base-cost",
		"-query-item-cost", "-image-base-cost", "-image-item-cost", "-extra-latency", "-error-rate",
		"-not-ready", "-stop-after", "-log-format", "-log-level", "-profile", "-query-cost-curve", "-image-cost-curve",
		"-jitter-sigma", "-stall-probability", "-stall-duration", "-seed", "-gpu-layout", "-dynamic-batching", "-summary-latencies",
		"-query-preferred-batch-sizes", "-query-max-queue-delay", "-query-priority-levels", "-query-default-priority-level",
		"-query-timeout-action", "-query-default-timeout", "-query-allow-timeout-override", "-query-max-queue-size",
		"-image-preferred-batch-sizes", "-image-max-queue-delay", "-image-max-queue-size",
	} {
		if !strings.Contains(help, "\n  "+flag+" ") && !strings.Contains(help, "\n  "+flag+"\n") { // a bool flag has no argument
			t.Errorf("help does not document %s", flag)
		}
	}
}

// startRun runs the command on free ports with JSON logs and returns the
// addresses it logged and the channel run's result arrives on.
func startRun(t *testing.T, ctx context.Context, extra ...string) (grpcAddr, metricsAddr string, result <-chan error) {
	t.Helper()
	var stderr syncBuffer
	ch := make(chan error, 1)
	args := append([]string{"-grpc-addr", "127.0.0.1:0", "-metrics-addr", "127.0.0.1:0", "-log-format", "json"}, extra...)
	go func() { ch <- run(ctx, args, &stderr) }()

	deadline := time.Now().Add(testutil.Timeout)
	for grpcAddr == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no start line with grpc_addr in the logs:\n%s", stderr.String())
		}
		select {
		case err := <-ch:
			t.Fatalf("run returned %v before starting; logs:\n%s", err, stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		sc := bufio.NewScanner(strings.NewReader(stderr.String()))
		for sc.Scan() {
			var line struct {
				Msg         string `json:"msg"`
				GRPCAddr    string `json:"grpc_addr"`
				MetricsAddr string `json:"metrics_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.GRPCAddr != "" {
				grpcAddr, metricsAddr = line.GRPCAddr, line.MetricsAddr
				if !strings.Contains(line.Msg, "not Triton") {
					t.Errorf("start line %q does not say it is a simulator", line.Msg)
				}
				break
			}
		}
	}
	t.Cleanup(func() { t.Logf("logs:\n%s", stderr.String()) })
	return grpcAddr, metricsAddr, ch
}

func dial(t *testing.T, addr string) inference.GRPCInferenceServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return inference.NewGRPCInferenceServiceClient(conn)
}

func TestRunServesUntilCanceled(t *testing.T) {
	ctx := testContext(t)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	grpcAddr, metricsAddr, result := startRun(t, runCtx, "-instances", "2", "-output-datatype", "FP32")
	if _, _, err := net.SplitHostPort(metricsAddr); err != nil {
		t.Errorf("metrics_addr %q: %v", metricsAddr, err)
	}

	c := dial(t, grpcAddr)
	md, err := c.ServerMetadata(ctx, &inference.ServerMetadataRequest{})
	if err != nil || md.GetName() != tritonsim.Name {
		t.Fatalf("ServerMetadata = %v, %v", md, err)
	}
	meta, err := c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: model.DefaultQueryModel})
	if err != nil || meta.GetOutputs()[0].GetDatatype() != "FP32" {
		t.Errorf("-output-datatype FP32 not applied: %v, %v", meta, err)
	}

	cancel()
	select {
	case err := <-result:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after its context was canceled")
	}
	if _, err := c.ServerLive(ctx, &inference.ServerLiveRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("ServerLive after stop: %v, want Unavailable", err)
	}
}

func TestRunStopAfterCrashes(t *testing.T) {
	ctx := testContext(t)
	grpcAddr, _, result := startRun(t, ctx, "-stop-after", "1")
	c := dial(t, grpcAddr)
	req := triton.NewCodec(model.Config{}).Request(model.Query, [][]byte{[]byte("boom")}, triton.EmbedOptions{})
	if _, err := c.ModelInfer(ctx, req); status.Code(err) != codes.Unavailable {
		t.Errorf("first call with -stop-after 1: %v, want Unavailable", err)
	}
	select {
	case err := <-result:
		if err == nil || !strings.Contains(err.Error(), "-stop-after") {
			t.Errorf("run = %v, want an error naming -stop-after", err)
		}
	case <-ctx.Done():
		t.Fatal("run did not return after the crash")
	}
}

func TestRunReportsListenErrors(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	var stderr syncBuffer
	err = run(testContext(t), []string{"-grpc-addr", lis.Addr().String(), "-metrics-addr", "127.0.0.1:0"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("run on a busy port = %v, want a listen error", err)
	}
}

func TestFlagsReachTheConfig(t *testing.T) {
	var stderr syncBuffer
	o, err := parseFlags([]string{"-profile", "bench-2x", "-image-cost-curve", "1:90ms,16:900ms", "-jitter-sigma", "0.2",
		"-stall-probability", "0.01", "-stall-duration", "250ms", "-seed", "7", "-gpu-layout", "separate", "-dynamic-batching=false",
		"-query-preferred-batch-sizes", "", "-query-max-queue-delay", "0s", "-query-default-timeout", "0s",
		"-query-allow-timeout-override=false", "-query-max-queue-size", "0", "-image-priority-levels", "2", "-image-timeout-action", "DELAY"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	c := o.cfg
	if c.Profile != "bench-2x" || c.ImageCurve.String() != "1:90ms,16:900ms" || c.JitterSigma != 0.2 || c.StallProbability != 0.01 ||
		c.StallDuration != 250*time.Millisecond || c.Seed != 7 || c.Layout != tritonsim.LayoutSeparate || !c.DisableDynamicBatching {
		t.Errorf("cost and layout flags not applied: %+v", c)
	}
	if c.ImageBatching.PriorityLevels != 2 || c.ImageBatching.DefaultQueuePolicy.TimeoutAction != "DELAY" ||
		c.ImageBatching.MaxQueueDelay != 5*time.Millisecond || c.ImageBatching.DefaultQueuePolicy.MaxQueueSize != 64 {
		t.Errorf("image batching %+v, want the repository's with two levels and DELAY", c.ImageBatching)
	}
	// Every query setting emptied: Triton's defaults, not the repository's.
	q := c.QueryBatching
	if len(q.PreferredBatchSizes) != 0 || q.MaxQueueDelay != 0 || q.DefaultQueuePolicy.MaxQueueSize != 0 ||
		q.DefaultQueuePolicy.DefaultTimeout != 0 || q.DefaultQueuePolicy.TimeoutAction != "REJECT" {
		t.Errorf("query batching %+v, want Triton's defaults", q)
	}
}
