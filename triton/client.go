// Package triton is a client for one NVIDIA Triton Inference Server (or
// anything else that speaks its KServe v2 gRPC protocol, such as our
// simulator). It owns the connection and its limits, turns Triton's
// answers into the error classes the rest of the gateway reasons with
// (a dead backend, an overloaded one, a rejected request), and speaks the
// ColPali contract of package model on the wire: Client.Embed takes a
// batch of items and returns their embeddings, the Codec in between
// building the KServe v2 tensors and checking the answer's.
package triton

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/gen/inference"
	"github.com/morphik-org/colpali-gateway/internal/config"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/telemetry"
	"github.com/morphik-org/colpali-gateway/model"
)

// Error classes of a call to Triton; use errors.Is. Each is a member of an
// errclass class, which is all the gateway's edge looks at. An *Error keeps
// the gRPC status Triton (or the connection) answered with in its Status
// field, for the log and for tests; it is never sent to clients as such.
var (
	// ErrUnavailable: the backend could not be reached or is not serving.
	ErrUnavailable = errclass.Wrap(errclass.Unavailable, errors.New("triton backend unavailable"))
	// ErrOverloaded: the backend is alive but its queue is full. This is
	// back-pressure: retrying at once only makes it worse, so it suggests
	// a delay.
	ErrOverloaded = errclass.WithReason(errclass.RetryAfter(
		errclass.Wrap(errclass.Overloaded, errors.New("triton backend overloaded")), overloadedRetryDelay),
		"BACKEND_OVERLOADED", nil)
	// ErrTimedOut: the backend dropped the request because the "timeout"
	// parameter it carried passed while it was queued. The backend is
	// healthy; the request was too late.
	ErrTimedOut = errclass.Wrap(errclass.TimedOut, errors.New("triton backend timed the request out"))
	// ErrRejected: the backend refused the request itself (bad input).
	ErrRejected = errclass.Wrap(errclass.Invalid, errors.New("triton backend rejected the request"))
	// ErrFailed: any other failure reported by the backend. Its class is
	// Internal (the gateway and its backends disagree: an unknown model, a
	// size limit, a permission, a CUDA error), except when the backend
	// answered ABORTED, which stays retryable as Unavailable (see
	// Error.Is).
	ErrFailed = errclass.Wrap(errclass.Internal, errors.New("triton backend failed"))
)

// overloadedRetryDelay is the retry delay suggested to clients when a
// backend's queue is full: long enough for a batch or two to drain.
const overloadedRetryDelay = 200 * time.Millisecond

// Triton answers a full queue and a request whose timeout passed in the
// queue with UNAVAILABLE, the same code as a dead server, so only the text
// tells them apart. grpc-go answers a message over its size limit with
// RESOURCE_EXHAUSTED, the code of overload, so there too only the text tells.
const (
	queueFullMessage    = "Exceeds maximum queue size"
	queueTimeoutMessage = "Request timeout expired"
	sizeLimitMessage    = "larger than max"
)

// Defaults of Config.
const (
	DefaultMaxRecvMsgSize   = 256 << 20
	DefaultMaxSendMsgSize   = 256 << 20
	DefaultKeepaliveTime    = 5*time.Minute + 10*time.Second
	DefaultKeepaliveTimeout = 10 * time.Second
)

// Config describes one backend connection. In a Config built in Go a zero
// field takes its default (New calls WithDefaults); Validate refuses it
// (see package internal/config: one rule for zero).
type Config struct {
	// Addr is the backend's gRPC address, host:port. Required.
	Addr string
	// Models names the models and tensors Embed uses (defaulted by
	// model.Config.WithDefaults).
	Models model.Config
	// MaxRecvMsgSize bounds one response. Default 256 MiB: a batch of 16
	// pages of FP32 embeddings is 8.4 MB, over grpc-go's 4 MiB default.
	MaxRecvMsgSize int
	// MaxSendMsgSize bounds one request. Default 256 MiB (a batch of images).
	MaxSendMsgSize int
	// KeepaliveTime is the idle time before a keepalive ping. Default 5m10s:
	// Triton's gRPC server, by default, tolerates a ping only every 5 minutes
	// while it sends no data (and closes the connection after two early
	// pings), which a long-queued call would otherwise trip. Dead backends
	// are found sooner by failed calls and health checks.
	KeepaliveTime time.Duration
	// KeepaliveTimeout is how long a ping may go unanswered before the
	// connection is considered dead. Default 10s.
	KeepaliveTimeout time.Duration
	// TLS, when set, is the connection's TLS configuration (Triton's
	// --grpc-use-ssl, and --grpc-use-ssl-mutual with a client
	// certificate). Default nil: clear text.
	TLS *tls.Config
}

// WithDefaults returns c with every zero field but Addr set to its default.
func (c Config) WithDefaults() Config {
	c.MaxRecvMsgSize = cmp.Or(c.MaxRecvMsgSize, DefaultMaxRecvMsgSize)
	c.MaxSendMsgSize = cmp.Or(c.MaxSendMsgSize, DefaultMaxSendMsgSize)
	c.KeepaliveTime = cmp.Or(c.KeepaliveTime, DefaultKeepaliveTime)
	c.KeepaliveTimeout = cmp.Or(c.KeepaliveTimeout, DefaultKeepaliveTimeout)
	return c
}

// Validate names every bad field of c but Addr by its Go name (Addr is
// checked by New: a Config may be a template for many backends). It takes
// c as it is: a zero field is refused, not defaulted.
func (c Config) Validate() error {
	var errs config.Errors
	errs.Add(config.Positive("MaxRecvMsgSize", c.MaxRecvMsgSize))
	errs.Add(config.Positive("MaxSendMsgSize", c.MaxSendMsgSize))
	errs.Add(config.Positive("KeepaliveTime", c.KeepaliveTime))
	errs.Add(config.Positive("KeepaliveTimeout", c.KeepaliveTimeout))
	return errs.Err()
}

// Client calls one Triton backend. It is safe for concurrent use.
type Client struct {
	addr  string
	conn  *grpc.ClientConn
	api   inference.GRPCInferenceServiceClient
	codec Codec
	// embedOpts are Embed's call options: its requests marshalled by
	// wireCodec (built once, not per call).
	embedOpts []grpc.CallOption
}

// New creates a client for cfg.Addr. It does not wait for the connection:
// calls fail with ErrUnavailable while the backend cannot be reached.
func New(cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	if cfg.Addr == "" {
		return nil, errors.New("triton: backend address is empty")
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	conn, err := grpc.NewClient(cfg.Addr,
		grpc.WithTransportCredentials(creds),
		grpc.WithStatsHandler(telemetry.GRPCClientHandler()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                cfg.KeepaliveTime,
			Timeout:             cfg.KeepaliveTimeout,
			PermitWithoutStream: false,
		}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(cfg.MaxRecvMsgSize),
			grpc.MaxCallSendMsgSize(cfg.MaxSendMsgSize),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("triton: backend %s: %w", cfg.Addr, err)
	}
	return &Client{addr: cfg.Addr, conn: conn, api: inference.NewGRPCInferenceServiceClient(conn), codec: NewCodec(cfg.Models),
		embedOpts: []grpc.CallOption{grpc.ForceCodecV2(newWireCodec())}}, nil
}

// Addr is the backend's address, as configured.
func (c *Client) Addr() string { return c.addr }

// Close closes the connection; calls in flight fail.
func (c *Client) Close() error { return c.conn.Close() }

// ResetConnectBackoff makes a connection that failed try again now rather
// than after its reconnect backoff (which grows to two minutes while a
// backend stays down); a no-op on a working connection.
func (c *Client) ResetConnectBackoff() { c.conn.ResetConnectBackoff() }

// Infer runs one ModelInfer call. The caller's deadline travels to Triton
// with the call (gRPC's grpc-timeout header).
func (c *Client) Infer(ctx context.Context, req *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
	resp, err := c.api.ModelInfer(ctx, req)
	if err != nil {
		return nil, c.classify(ctx, "ModelInfer "+req.GetModelName(), err)
	}
	return resp, nil
}

// ServerLive reports whether the server answers and says it is live.
func (c *Client) ServerLive(ctx context.Context) (bool, error) {
	resp, err := c.api.ServerLive(ctx, &inference.ServerLiveRequest{})
	if err != nil {
		return false, c.classify(ctx, "ServerLive", err)
	}
	return resp.GetLive(), nil
}

// ServerReady reports whether the server says it is ready.
func (c *Client) ServerReady(ctx context.Context) (bool, error) {
	resp, err := c.api.ServerReady(ctx, &inference.ServerReadyRequest{})
	if err != nil {
		return false, c.classify(ctx, "ServerReady", err)
	}
	return resp.GetReady(), nil
}

// ModelReady reports whether model (at version, or the server's choice when
// version is empty) is ready for inference.
func (c *Client) ModelReady(ctx context.Context, model, version string) (bool, error) {
	resp, err := c.api.ModelReady(ctx, &inference.ModelReadyRequest{Name: model, Version: version})
	if err != nil {
		return false, c.classify(ctx, "ModelReady "+model, err)
	}
	return resp.GetReady(), nil
}

// ModelMetadata describes model's tensors.
func (c *Client) ModelMetadata(ctx context.Context, model, version string) (*inference.ModelMetadataResponse, error) {
	resp, err := c.api.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: model, Version: version})
	if err != nil {
		return nil, c.classify(ctx, "ModelMetadata "+model, err)
	}
	return resp, nil
}

// ModelStatistics returns Triton's cumulative statistics for model ("" for
// every model).
func (c *Client) ModelStatistics(ctx context.Context, model, version string) (*inference.ModelStatisticsResponse, error) {
	resp, err := c.api.ModelStatistics(ctx, &inference.ModelStatisticsRequest{Name: model, Version: version})
	if err != nil {
		return nil, c.classify(ctx, "ModelStatistics "+model, err)
	}
	return resp, nil
}

// classify wraps err from a call under its error class, naming the backend.
// A call that ended because the caller gave up or ran out of time keeps that
// code (Canceled or DeadlineExceeded) and no backend class: the backend is
// not at fault.
func (c *Client) classify(ctx context.Context, call string, err error) error {
	st := status.Convert(err)
	var class error
	switch st.Code() {
	case codes.DeadlineExceeded:
		// The caller's deadline travels to Triton, whose side may expire a
		// moment before ours: with a deadline set, this is the caller's.
		// It is wrapped as context.DeadlineExceeded, not as the backend's
		// status, so that no backend code reaches the client.
		if _, ok := ctx.Deadline(); ok {
			return errclass.Wrap(errclass.TimedOut, fmt.Errorf("triton %s: %s: %w", c.addr, call, context.DeadlineExceeded))
		}
		class = ErrFailed
	case codes.Canceled:
		if ctx.Err() != nil {
			return fmt.Errorf("triton %s: %s: %w", c.addr, call, ctx.Err())
		}
		class = ErrFailed
	case codes.Unavailable:
		switch {
		case strings.Contains(st.Message(), queueFullMessage):
			class = ErrOverloaded
		case strings.Contains(st.Message(), queueTimeoutMessage):
			class = ErrTimedOut
		default:
			class = ErrUnavailable
		}
	case codes.ResourceExhausted:
		class = ErrOverloaded
		if strings.Contains(st.Message(), sizeLimitMessage) {
			// A request or response over a message size limit will never
			// pass: a configuration mismatch, not overload.
			class = ErrFailed
		}
	case codes.InvalidArgument, codes.OutOfRange:
		class = ErrRejected
	default:
		class = ErrFailed
	}
	return &Error{Class: class, Backend: c.addr, Call: call, Status: st}
}

// Error is a failed call to one backend. It matches its class, and the
// class's errclass class: errors.Is(err, ErrOverloaded) and
// errors.Is(err, errclass.Overloaded) both hold, however deeply it is
// wrapped. Status is the backend's own answer, kept for the log; Error does
// not implement GRPCStatus, so that it never reaches a client as a code of
// the backend's choosing.
type Error struct {
	Class   error
	Backend string
	Call    string
	Status  *status.Status
}

func (e *Error) Error() string {
	return fmt.Sprintf("%v: backend %s: %s: %s: %s", e.Class, e.Backend, e.Call, e.Status.Code(), e.Status.Message())
}

// Is reports whether target is e's class or one the class belongs to. A
// backend failure outside the named classes is Internal, but one answered
// ABORTED is Unavailable: the backend says a retry may pass.
func (e *Error) Is(target error) bool {
	if target == e.Class {
		return true
	}
	if e.Class == ErrFailed && e.Status.Code() == codes.Aborted {
		return target == errclass.Unavailable
	}
	return errors.Is(e.Class, target)
}

// As finds what the class carries (an *errclass.Retry, an *errclass.Reason).
func (e *Error) As(target any) bool { return errors.As(e.Class, target) }
