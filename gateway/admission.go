package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/morphik-org/colpali-gateway/admission"
	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

// Estimates of the memory a call holds at its peak, for the admission
// controller's budget: each copy the call owns, counted once. What no one
// call owns (grpc-go's pooled buffers, calls being received or refused,
// the heap's garbage) is left to the budget's unreserved share
// (admission.Config.CallMemoryShare).
const (
	// requestCopies: a request is held as received and as decoded (protobuf
	// copies bytes fields). A REST call's JSON body, held by the HTTP side
	// before the call reaches the gRPC server, is not seen here.
	requestCopies = 2
	// imageCopies: an image call's images are held once, decoded (protobuf
	// copies bytes fields out of grpc-go's receive buffer, which goes back
	// to grpc-go's pool before the call is admitted), and sent to Triton
	// without another copy (triton.Client.Embed marshals the request around
	// them). Measured with 16-page calls of 22 MB at 3x the image
	// capacity: the decoded requests were three quarters of the live heap;
	// grpc-go's pooled receive buffers, a few calls' worth whatever the
	// load, most of the rest (they are the budget's unreserved share's).
	imageCopies = 1
	// checkBytes is what the image check holds per image: it reads the
	// data through without a bitmap (internal/imagecheck), so its working
	// set is a bounded buffer whatever the image's size.
	checkBytes = 1 << 20
	// pageVectors is a ColPali page's vector count (1030 patches).
	pageVectors = 1030
	// queryVectors bounds a query's vector count (its tokens).
	queryVectors = 64
	// outputBytesPerValue: each embedding value is held as the model's
	// float32 and again encoded in the response.
	outputBytesPerValue = 8
	// candidateBytes is one search candidate as the store's middle stage
	// reads it: a sign bit per value (about 16 KB a page); rerankBytes one
	// page of FP16 vectors (about 264 KB), read for the short list only.
	candidateBytes = pageVectors * store.VectorDim / 8
	rerankBytes    = pageVectors * store.VectorDim * 2
)

// defaultPrioritier is implemented by an Embedder with priority levels
// (the batcher): the level of a request that asks for none.
type defaultPrioritier interface {
	DefaultPriority(kind model.Kind) int
}

// admitter builds admission requests from calls and runs them through the
// controller.
type admitter struct {
	ctl      *admission.Controller
	cfg      Config
	embedder Embedder
	// candidates and rerank are how many pages a search reads the codes
	// of, and the full vectors of (store.Config).
	candidates, rerank int
}

func newAdmitter(ctl *admission.Controller, cfg Config, embedder Embedder) *admitter {
	return &admitter{ctl: ctl, cfg: cfg, embedder: embedder, candidates: store.Config{}.WithDefaults().Candidates, rerank: store.Config{}.WithDefaults().Rerank}
}

// admissionInterceptors are the server's admission interceptors: the
// admitter's, or ones that pass every call when Deps.Admission is nil.
func (s *Server) admissionInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	if s.deps.Admission == nil {
		return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				return handler(ctx, req)
			}, func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
				return handler(srv, ss)
			}
	}
	a := newAdmitter(s.deps.Admission, s.cfg, s.deps.Embedder)
	return a.unary(), a.stream()
}

// unary refuses a call at once when its class is at its
// concurrency limit or its memory does not fit the budget (errclass
// Overloaded, which the edge turns into RESOURCE_EXHAUSTED with RetryInfo
// and ErrorInfo), and otherwise times it for the limit. It runs inside the
// edge (statusInterceptor), which must see its errors. Calls that are not
// embeddings, searches or ingestions (health, ListBackends, document
// reads, reflection) pass untouched: they are cheap, and probes must never
// be shed.
func (a *admitter) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		r, ok := a.request(req)
		if !ok {
			return handler(ctx, req)
		}
		permit, err := a.ctl.Admit(r)
		if err != nil {
			return nil, err
		}
		finished := false
		defer func() {
			if !finished { // a panic: no latency sample, but the slot and bytes come back
				permit.Done(admission.Ignored)
			}
		}()
		resp, err = handler(ctx, req)
		finished = true
		permit.Done(outcome(ctx, err))
		return resp, err
	}
}

// stream is the unary interceptor for IngestDocumentStream; other streams
// pass untouched.
func (a *admitter) stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		if info.FullMethod != colpaliv1.DocumentService_IngestDocumentStream_FullMethodName {
			return handler(srv, ss)
		}
		permit, err := a.ctl.Admit(admission.Request{
			Class: admission.Ingest,
			Bytes: int64(imageCopies*a.cfg.MaxImageBytes + checkBytes + pageVectors*store.VectorDim*outputBytesPerValue),
		})
		if err != nil {
			return err
		}
		finished := false
		defer func() {
			if !finished {
				permit.Done(admission.Ignored)
			}
		}()
		err = handler(srv, ss)
		finished = true
		// A stream lasts as long as its client sends pages: its length
		// says nothing of the gateway's load, so it is never a sample.
		permit.Done(admission.Ignored)
		return err
	}
}

// outcome sorts a call's end for the limit: served (a latency sample),
// dropped downstream (timed out or refused as overloaded: a sample and a
// back-off), or the call's own failure (no sample).
func outcome(ctx context.Context, err error) admission.Outcome {
	switch {
	case err == nil:
		return admission.Success
	case errors.Is(ctx.Err(), context.Canceled):
		return admission.Ignored
	case errors.Is(err, errclass.Overloaded), errors.Is(err, errclass.TimedOut),
		errors.Is(err, context.DeadlineExceeded), errors.Is(ctx.Err(), context.DeadlineExceeded):
		return admission.Dropped
	}
	return admission.Ignored
}

// request is the admission request of a call, and false for calls that
// are not admitted (they pass untouched).
func (a *admitter) request(req any) (admission.Request, bool) {
	switch r := req.(type) {
	case *colpaliv1.EmbedQueriesRequest:
		var n int64
		for _, q := range r.GetQueries() {
			n += int64(len(q))
		}
		level, levels := a.level(model.Query, r.GetPriority())
		return admission.Request{
			Class: admission.Query, Level: level, Levels: levels,
			Bytes: requestCopies*n + int64(len(r.GetQueries()))*queryVectors*store.VectorDim*outputBytesPerValue,
		}, true
	case *colpaliv1.EmbedImagesRequest:
		level, levels := a.level(model.Image, r.GetPriority())
		return admission.Request{Class: admission.Image, Level: level, Levels: levels, Bytes: a.imagesBytes(r.GetImages())}, true
	case *colpaliv1.SearchRequest:
		level, levels := a.level(model.Query, 0)
		cands := max(a.candidates, int(r.GetTopK()))
		return admission.Request{
			Class: admission.Search, Level: level, Levels: levels,
			Bytes: requestCopies*int64(len(r.GetQuery())) + int64(cands)*candidateBytes + int64(max(a.rerank, int(r.GetTopK())))*rerankBytes +
				queryVectors*store.VectorDim*outputBytesPerValue,
		}, true
	case *colpaliv1.IngestDocumentRequest:
		images := make([][]byte, len(r.GetPages()))
		for i, p := range r.GetPages() {
			images[i] = p.GetImage()
		}
		// Latency per group of up to MaxImages pages, the size of the image
		// calls ImageLatencyTarget is meant for.
		groups := (len(images) + a.cfg.MaxImages - 1) / a.cfg.MaxImages
		return admission.Request{Class: admission.Ingest, Bytes: a.imagesBytes(images), Weight: groups}, true
	}
	return admission.Request{}, false
}

// imagesBytes estimates the memory an image call holds at its peak: its
// images (imageCopies of them), the image check's buffer, and the
// embeddings.
func (a *admitter) imagesBytes(images [][]byte) int64 {
	var n int64
	for _, img := range images {
		n += int64(len(img))
	}
	return imageCopies*n + checkBytes + int64(len(images))*pageVectors*store.VectorDim*outputBytesPerValue
}

// level is a call's priority level and the model's level count: the
// request's level, or the model's default for 0.
func (a *admitter) level(kind model.Kind, asked uint32) (level, levels int) {
	levels = 1
	if p, ok := a.embedder.(priorityLeveler); ok {
		levels = p.PriorityLevels(kind)
	}
	level = int(asked)
	if level == 0 {
		level = 1
		if d, ok := a.embedder.(defaultPrioritier); ok {
			level = d.DefaultPriority(kind)
		}
	}
	return level, levels
}

// restRoute is what the REST side's early admission test knows of a route.
type restRoute struct {
	class admission.Class
	// kind is the model whose priority levels apply; levels is false for
	// a class whose calls all have the whole limit (ingestion).
	kind   model.Kind
	levels bool
	// priority: the request body may carry a "priority" field.
	priority bool
}

// admittedRoutes are the REST routes that Admit covers, by method and path.
var admittedRoutes = map[string]restRoute{
	"POST /v1/queries:embed":    {class: admission.Query, kind: model.Query, levels: true, priority: true},
	"POST /v1/images:embed":     {class: admission.Image, kind: model.Image, levels: true, priority: true},
	"POST /v1/documents:search": {class: admission.Search, kind: model.Query, levels: true},
	"POST /v1/documents":        {class: admission.Ingest},
}

// peekLimit is the largest REST body the early admission test reads to
// find out whether the call asks for a priority level: a query call's
// body, not a page image's.
const peekLimit = 64 << 10

// restAdmission refuses a REST call whose class is at its limit for the
// call's priority level before grpc-gateway decodes its body and runs it
// through the interceptors: under overload those are most of a refused
// REST call's cost, spent by the CPU that the admitted calls need. The
// answer is the edge's own (toStatus), in grpc-gateway's JSON error shape.
// Calls that pass are admitted, or not, by the gRPC interceptor as usual.
//
// The level is the one the gRPC side will give the call: the model's
// default when the body carries no "priority" field, which a small body is
// searched for (a large one, or one that asks for a level, is tested at the
// most urgent level: the test never refuses a call that Admit would take;
// a key spelt with JSON escapes is taken as no priority).
func (s *Server) restAdmission() runtime.Middleware {
	return func(next runtime.HandlerFunc) runtime.HandlerFunc {
		if s.deps.Admission == nil {
			return next
		}
		a := newAdmitter(s.deps.Admission, s.cfg, s.deps.Embedder)
		return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
			route, ok := admittedRoutes[r.Method+" "+r.URL.Path]
			if !ok {
				next(w, r, params)
				return
			}
			level, levels := 1, 1
			if route.levels {
				level, levels = a.level(route.kind, 0)
				if route.priority && level > 1 && !defaultPriority(r) {
					level = 1
				}
			}
			err := s.deps.Admission.Check(route.class, level, levels)
			if err == nil {
				next(w, r, params)
				return
			}
			st := status.Convert(toStatus(r.Context(), s.deps.Logger, err))
			s.refusals.note(r.Context(), r.Method+" "+r.URL.Path, st.Err())
			body, merr := appendStatusJSON(nil, st.Proto())
			if merr != nil { // the details are the edge's own; keep the code regardless
				body = []byte(`{"code":8,"message":"overloaded"}`)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
			_, _ = w.Write(body)
		}
	}
}

// defaultPriority reports whether r's JSON body surely asks for no
// priority level: it is at most peekLimit bytes, and holds no "priority"
// key. It reads the body and puts back a reader of what it read.
func defaultPriority(r *http.Request) bool {
	if r.ContentLength <= 0 || r.ContentLength > peekLimit {
		return false
	}
	body := make([]byte, r.ContentLength)
	n, err := io.ReadFull(r.Body, body)
	r.Body = readCloser{io.MultiReader(bytes.NewReader(body[:n]), r.Body), r.Body}
	return err == nil && !bytes.Contains(body, []byte(`"priority"`))
}

// readCloser reads from Reader and closes Closer.
type readCloser struct {
	io.Reader
	io.Closer
}
