package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
)

// syncBuffer is a log sink that tests read while the server writes.
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

// TestEveryClassAtTheEdge drives an error of every class from a handler
// through gRPC and REST, and checks the code, the HTTP status, the details,
// and that an internal error's text (a backend address, SQL) reaches the
// log under the request id but not the client.
func TestEveryClassAtTheEdge(t *testing.T) {
	const secret = `backend 10.0.0.7:8001: ERROR: syntax error at or near "SELECT" (SQLSTATE 42601)`
	for _, tc := range []struct {
		name     string
		err      error
		code     codes.Code
		httpCode int
		text     string // the client's message says this
		field    string // a BadRequest violation of this field
		retry    time.Duration
		reason   string
		internal bool // the client must not see secret; the log must
	}{
		{name: "invalid", err: errclass.Field("queries[0]", "is bad"), code: codes.InvalidArgument, httpCode: http.StatusBadRequest, text: "queries[0]: is bad", field: "queries[0]"},
		{name: "invalid without field", err: errclass.Errorf(errclass.Invalid, "rejected"), code: codes.InvalidArgument, httpCode: http.StatusBadRequest, text: "rejected"},
		{name: "not found", err: errclass.Errorf(errclass.NotFound, "no such thing"), code: codes.NotFound, httpCode: http.StatusNotFound, text: "no such thing"},
		{name: "conflict", err: errclass.Errorf(errclass.Conflict, "key reused"), code: codes.AlreadyExists, httpCode: http.StatusConflict, text: "key reused"},
		{name: "aborted", err: errclass.Errorf(errclass.Aborted, "lost a race"), code: codes.Aborted, httpCode: http.StatusConflict, text: "lost a race"},
		{
			name: "overloaded", code: codes.ResourceExhausted, httpCode: http.StatusTooManyRequests, text: "retry later with backoff",
			err:   errclass.WithReason(errclass.RetryAfter(errclass.Errorf(errclass.Overloaded, "queue full"), 150*time.Millisecond), "QUEUE_FULL", map[string]string{"model": "colpali_query"}),
			retry: 150 * time.Millisecond, reason: "QUEUE_FULL",
		},
		{name: "unavailable", err: fmt.Errorf("wrapped: %w", errclass.Errorf(errclass.Unavailable, "database down")), code: codes.Unavailable, httpCode: http.StatusServiceUnavailable, text: "database down"},
		{name: "timed out", err: errclass.Errorf(errclass.TimedOut, "waited 2s"), code: codes.DeadlineExceeded, httpCode: http.StatusGatewayTimeout, text: "waited 2s"},
		{name: "unimplemented", err: errclass.Errorf(errclass.Unimplemented, "not here"), code: codes.Unimplemented, httpCode: http.StatusNotImplemented, text: "not here"},
		{name: "unauthenticated", err: errclass.Errorf(errclass.Unauthenticated, "unknown API key"), code: codes.Unauthenticated, httpCode: http.StatusUnauthorized, text: "unknown API key"},
		{name: "permission denied", err: errclass.Errorf(errclass.PermissionDenied, "needs scope"), code: codes.PermissionDenied, httpCode: http.StatusForbidden, text: "needs scope"},
		{name: "internal", err: errclass.Errorf(errclass.Internal, "%s", secret), code: codes.Internal, httpCode: http.StatusInternalServerError, text: "internal error; request id", internal: true},
		{name: "unclassified", err: errors.New(secret), code: codes.Internal, httpCode: http.StatusInternalServerError, text: "internal error; request id", internal: true},
		{name: "a gRPC status passes", err: status.Error(codes.FailedPrecondition, "as it is"), code: codes.FailedPrecondition, httpCode: http.StatusBadRequest, text: "as it is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &syncBuffer{}
			fake := &fakeEmbedder{embed: func(context.Context, model.Kind, [][]byte) ([]model.Embedding, error) { return nil, tc.err }}
			g := startGateway(t, Config{}, Deps{Embedder: fake, Logger: slog.New(slog.NewJSONHandler(logs, nil))})

			_, err := g.client.EmbedQueries(testContext(t), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.text) {
				t.Errorf("gRPC: %v, want %v saying %q", err, tc.code, tc.text)
			}
			checkDetails(t, st, tc.field, tc.retry, tc.reason)

			code, body, _ := g.post(t, "/v1/queries:embed", `{"queries":["q"]}`)
			if code != tc.httpCode {
				t.Errorf("REST: HTTP %d %s, want %d", code, body, tc.httpCode)
			}
			if e := decodeRESTError(t, body); e.Code != int(tc.code) || !strings.Contains(e.Message, tc.text) {
				t.Errorf("REST error body %s, want code %d saying %q", body, tc.code, tc.text)
			}
			for _, typ := range wantDetailTypes(tc.field, tc.retry, tc.reason) {
				if !bytes.Contains(body, []byte(typ)) {
					t.Errorf("REST error body %s lacks a %s detail", body, typ)
				}
			}

			if !tc.internal {
				return
			}
			for _, said := range []string{st.Message(), string(body)} {
				if strings.Contains(said, "10.0.0.7") || strings.Contains(said, "SELECT") || strings.Contains(said, "goroutine") {
					t.Errorf("the client read internal detail: %s", said)
				}
			}
			// Both calls' ids are in the log with the real error.
			restID := requestIDIn(t, decodeRESTError(t, body).Message)
			for _, id := range []string{requestIDIn(t, st.Message()), restID} {
				if !logged(logs.String(), id, "10.0.0.7:8001") {
					t.Errorf("the log has no line with request id %s and the error; log:\n%s", id, logs.String())
				}
			}
		})
	}
}

// checkDetails checks st's details: a BadRequest naming field, a RetryInfo
// of retry, an ErrorInfo of reason; none of them when zero.
func checkDetails(t *testing.T, st *status.Status, field string, retry time.Duration, reason string) {
	t.Helper()
	var gotField, gotReason string
	var gotRetry time.Duration
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			gotField = d.GetFieldViolations()[0].GetField()
		case *errdetails.RetryInfo:
			gotRetry = d.GetRetryDelay().AsDuration()
		case *errdetails.ErrorInfo:
			gotReason = d.GetReason()
			if d.GetDomain() != errorDomain {
				t.Errorf("ErrorInfo domain %q, want %q", d.GetDomain(), errorDomain)
			}
		}
	}
	if gotField != field || gotRetry != retry || gotReason != reason {
		t.Errorf("details: field %q, retry %v, reason %q; want %q, %v, %q", gotField, gotRetry, gotReason, field, retry, reason)
	}
}

// wantDetailTypes are the @type names of the details REST should carry.
func wantDetailTypes(field string, retry time.Duration, reason string) []string {
	var out []string
	if field != "" {
		out = append(out, "google.rpc.BadRequest")
	}
	if retry != 0 {
		out = append(out, "google.rpc.RetryInfo")
	}
	if reason != "" {
		out = append(out, "google.rpc.ErrorInfo")
	}
	return out
}

// requestIDIn is the id in "internal error; request id <id>".
func requestIDIn(t *testing.T, msg string) string {
	t.Helper()
	_, id, ok := strings.Cut(msg, "request id ")
	if !ok || id == "" {
		t.Fatalf("message %q names no request id", msg)
	}
	return id
}

// logged reports whether a line of logs has request id and says text.
func logged(logs, id, text string) bool {
	for line := range strings.Lines(logs) {
		if strings.Contains(line, `"request_id":"`+id+`"`) && strings.Contains(line, text) {
			return true
		}
	}
	return false
}

// TestCallEndMapsToItsCode: a handler's error after the call's own deadline
// (here the server's default, the client setting none) is
// DEADLINE_EXCEEDED, whatever its class.
func TestCallEndMapsToItsCode(t *testing.T) {
	fake := &fakeEmbedder{embed: func(ctx context.Context, _ model.Kind, _ [][]byte) ([]model.Embedding, error) {
		<-ctx.Done()
		return nil, errclass.Errorf(errclass.Internal, "gave up: %v", ctx.Err())
	}}
	g := startGateway(t, Config{DefaultTimeout: 50 * time.Millisecond}, Deps{Embedder: fake})
	_, err := g.client.EmbedQueries(context.WithoutCancel(testContext(t)), &colpaliv1.EmbedQueriesRequest{Queries: []string{"q"}})
	msg := status.Convert(err).Message()
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(msg, "deadline exceeded before the call completed") {
		t.Errorf("err = %v, want the server's DeadlineExceeded", err)
	}
	if strings.Contains(msg, "gave up") || !strings.Contains(msg, "request id") {
		t.Errorf("message %q: want the internal error's text replaced by the request id", msg)
	}
}
