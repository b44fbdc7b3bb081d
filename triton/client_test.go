package triton

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context { return testutil.Context(t) }

func startSim(t *testing.T, cfg tritonsim.Config) (*tritonsim.Server, *Client) {
	t.Helper()
	cfg.GRPCAddr, cfg.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0"
	sim, err := tritonsim.Start(testContext(t), cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Stop)
	c, err := New(Config{Addr: sim.GRPCAddr()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return sim, c
}

var testCodec = NewCodec(model.Config{})

func TestHealthAndMetadata(t *testing.T) {
	_, c := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{NotReady: []string{"colpali_image"}}})
	ctx := testContext(t)
	if live, err := c.ServerLive(ctx); err != nil || !live {
		t.Fatalf("ServerLive = %v, %v", live, err)
	}
	if ready, err := c.ServerReady(ctx); err != nil || !ready {
		t.Fatalf("ServerReady = %v, %v", ready, err)
	}
	if ready, err := c.ModelReady(ctx, "colpali_query", ""); err != nil || !ready {
		t.Fatalf("ModelReady(query) = %v, %v", ready, err)
	}
	if ready, err := c.ModelReady(ctx, "colpali_image", ""); err != nil || ready {
		t.Fatalf("ModelReady(image) = %v, %v; want false", ready, err)
	}
	md, err := c.ModelMetadata(ctx, "colpali_query", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(md.GetInputs()) != 1 || md.GetInputs()[0].GetName() != "text" || md.GetInputs()[0].GetDatatype() != "BYTES" {
		t.Errorf("query model inputs %v", md.GetInputs())
	}
	_, err = c.ModelMetadata(ctx, "no_such_model", "")
	if backendCode(err) != codes.NotFound || !errors.Is(err, ErrFailed) || errclass.Of(err) != errclass.Internal {
		t.Errorf("unknown model: %v, want NotFound classed ErrFailed (Internal)", err)
	}
}

func TestInferAndStatistics(t *testing.T) {
	_, c := startSim(t, tritonsim.Config{})
	ctx := testContext(t)
	resp, err := c.Infer(ctx, testCodec.Request(model.Query, [][]byte{[]byte("a b"), []byte("c")}, EmbedOptions{ID: "x1"}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetId() != "x1" {
		t.Errorf("response id %q, want the request's x1", resp.GetId())
	}
	embs, err := testCodec.Decode(2, resp)
	if err != nil {
		t.Fatal(err)
	}
	if embs[0].Rows != tritonsim.QueryTokens("a b") || embs[1].Rows != tritonsim.QueryTokens("c") {
		t.Errorf("rows %d, %d", embs[0].Rows, embs[1].Rows)
	}
	stats, err := c.ModelStatistics(ctx, "colpali_query", "")
	if err != nil {
		t.Fatal(err)
	}
	if s := stats.GetModelStats(); len(s) != 1 || s[0].GetInferenceCount() != 2 || s[0].GetExecutionCount() != 1 {
		t.Errorf("statistics %v, want 2 inferences in 1 execution", s)
	}
}

func TestErrorClasses(t *testing.T) {
	t.Run("rejected", func(t *testing.T) {
		_, c := startSim(t, tritonsim.Config{})
		_, err := c.Infer(testContext(t), testCodec.Request(model.Image, [][]byte{[]byte("not an image")}, EmbedOptions{}))
		if !errors.Is(err, ErrRejected) || backendCode(err) != codes.InvalidArgument {
			t.Fatalf("err = %v, want ErrRejected with InvalidArgument", err)
		}
	})
	t.Run("failed", func(t *testing.T) {
		_, c := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{ErrorRate: 1}})
		_, err := c.Infer(testContext(t), testCodec.Request(model.Query, [][]byte{[]byte("q")}, EmbedOptions{}))
		var be *Error
		if !errors.Is(err, ErrFailed) || !errors.As(err, &be) || be.Backend == "" || backendCode(err) != codes.Internal {
			t.Fatalf("err = %v, want ErrFailed naming the backend with Internal", err)
		}
	})
	t.Run("overloaded", func(t *testing.T) {
		_, c := startSim(t, tritonsim.Config{Instances: 1, MaxQueueSize: 1, Faults: tritonsim.Faults{ExtraLatency: 300 * time.Millisecond}})
		var wg sync.WaitGroup
		errs := make(chan error, 5)
		for range 5 {
			wg.Go(func() {
				_, err := c.Infer(testContext(t), testCodec.Request(model.Query, [][]byte{[]byte("q")}, EmbedOptions{}))
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		overloaded := 0
		for err := range errs {
			if errors.Is(err, ErrOverloaded) {
				overloaded++
			} else if err != nil {
				t.Errorf("unexpected error %v", err)
			}
		}
		if overloaded == 0 {
			t.Fatal("no call was refused as overloaded with a queue of 1 and 5 callers")
		}
	})
	t.Run("timed out in the queue", func(t *testing.T) {
		sim, c := startSim(t, tritonsim.Config{Instances: 1, DisableDynamicBatching: true, Faults: tritonsim.Faults{ExtraLatency: 500 * time.Millisecond}})
		ctx := testContext(t)
		first := make(chan error, 1)
		go func() {
			_, err := c.Infer(ctx, testCodec.Request(model.Query, [][]byte{[]byte("first")}, EmbedOptions{}))
			first <- err
		}()
		// Once the first executes, the second waits behind it, past its
		// 50ms timeout parameter.
		for len(sim.Observed()) == 0 {
			if ctx.Err() != nil {
				t.Fatal("the first call never arrived")
			}
			time.Sleep(time.Millisecond)
		}
		_, err := c.Infer(ctx, testCodec.Request(model.Query, [][]byte{[]byte("second")}, EmbedOptions{Timeout: 50 * time.Millisecond}))
		if !errors.Is(err, ErrTimedOut) || errors.Is(err, ErrUnavailable) {
			t.Errorf("err = %v, want ErrTimedOut (the backend is alive)", err)
		}
		if err := <-first; err != nil {
			t.Errorf("first call: %v", err)
		}
	})
	t.Run("response over the size limit", func(t *testing.T) {
		sim, _ := startSim(t, tritonsim.Config{})
		small, err := New(Config{Addr: sim.GRPCAddr(), MaxRecvMsgSize: 1024})
		if err != nil {
			t.Fatal(err)
		}
		defer small.Close()
		_, err = small.Infer(testContext(t), testCodec.Request(model.Query, [][]byte{[]byte("q")}, EmbedOptions{}))
		if !errors.Is(err, ErrFailed) || errors.Is(err, ErrOverloaded) || backendCode(err) != codes.ResourceExhausted || errclass.Of(err) != errclass.Internal {
			t.Errorf("err = %v, want ErrFailed (a limit, not overload)", err)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		// A port nothing listens on.
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		c, err := New(Config{Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.ServerLive(testContext(t))
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), addr) || backendCode(err) != codes.Unavailable || errclass.Of(err) != errclass.Unavailable {
			t.Fatalf("err = %v, want ErrUnavailable naming %s", err, addr)
		}
	})
	t.Run("caller deadline", func(t *testing.T) {
		_, c := startSim(t, tritonsim.Config{Faults: tritonsim.Faults{ExtraLatency: 2 * time.Second}})
		ctx, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
		defer cancel()
		_, err := c.Infer(ctx, testCodec.Request(model.Query, [][]byte{[]byte("q")}, EmbedOptions{}))
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrFailed) || errors.Is(err, ErrUnavailable) {
			t.Fatalf("err = %v, want the caller's DeadlineExceeded, not a backend failure", err)
		}
	})
}

func TestNewRequiresAddress(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New accepted an empty address")
	}
}

// backendCode is the code the backend answered, kept in *Error for the log
// (Error has no GRPCStatus, so status.Code does not see it).
func backendCode(err error) codes.Code {
	var e *Error
	if !errors.As(err, &e) {
		return codes.OK
	}
	return e.Status.Code()
}
