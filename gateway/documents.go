package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/ingest"
	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/quota"
	"github.com/morphik-org/colpali-gateway/store"
)

// DocumentStore is what the DocumentService needs of the document store;
// *store.Store implements it. Every method takes the tenant the call acts
// for; errors wrap the store's sentinels (store.ErrNotFound,
// store.ErrUnavailable, ...), whose classes the edge (status.go) maps to
// codes.
type DocumentStore interface {
	// The ingestion's part: begin, add pages, commit or abort.
	ingest.Store
	GetDocument(ctx context.Context, tenant, id string) (store.Document, error)
	ListDocuments(ctx context.Context, tenant string, pageSize int, pageToken string) ([]store.Document, string, error)
	DeleteDocument(ctx context.Context, tenant, id string) error
	Search(ctx context.Context, tenant string, query model.Embedding, opts store.SearchOptions) ([]store.Hit, error)
	// Ping reports whether the database answers.
	Ping(ctx context.Context) error
}

// Defaults of the DocumentService that are part of its API, not
// configuration (the proto documents them).
const (
	defaultListPageSize = 50
	maxListPageSize     = 500
)

// errNoStorage answers every DocumentService call of a gateway built
// without a DocumentStore: the service exists in the API but is not enabled
// here, which no retry will change.
var errNoStorage = errclass.Wrap(errclass.Unimplemented, errors.New("document storage is not configured on this gateway"))

// documentService implements colpali.v1.DocumentService over a
// DocumentStore, embedding queries through the Embedder and ingesting
// documents through the ingest package (whose Embedder is the same, the
// path of the EmbeddingService). A gateway without a DocumentStore
// registers unimplementedService instead.
type documentService struct {
	colpaliv1.UnimplementedDocumentServiceServer
	cfg      Config
	embedder Embedder
	images   *imageChecker
	store    DocumentStore
	ingest   *ingest.Service
	logger   *slog.Logger
	// quotas, when set, limit the pages and the storage of each tenant.
	quotas *quota.Quotas
}

// documentRegistration decides once whether this gateway stores
// documents: with a DocumentStore, register returns the documentService;
// without one, a service whose every method answers errNoStorage
// (UNIMPLEMENTED), so that the API still names the service.
func documentRegistration(cfg Config, deps Deps, images *imageChecker) (register func(grpc.ServiceRegistrar), err error) {
	if deps.Documents == nil {
		return func(r grpc.ServiceRegistrar) {
			r.RegisterService(unimplementedService(&colpaliv1.DocumentService_ServiceDesc, errNoStorage), struct{}{})
		}, nil
	}
	ing, err := ingest.New(ingest.Config{GroupSize: cfg.MaxImages}, deps.Embedder, deps.Documents, deps.Logger)
	if err != nil {
		return nil, err
	}
	svc := &documentService{cfg: cfg, embedder: deps.Embedder, store: deps.Documents, ingest: ing, logger: deps.Logger, quotas: deps.Quotas, images: images}
	return func(r grpc.ServiceRegistrar) { colpaliv1.RegisterDocumentServiceServer(r, svc) }, nil
}

// unimplementedService is desc with every method answering err, through
// the server's interceptors like any other call.
func unimplementedService(desc *grpc.ServiceDesc, err error) *grpc.ServiceDesc {
	out := &grpc.ServiceDesc{ServiceName: desc.ServiceName, HandlerType: (*any)(nil), Metadata: desc.Metadata}
	for _, m := range desc.Methods {
		method := "/" + desc.ServiceName + "/" + m.MethodName
		out.Methods = append(out.Methods, grpc.MethodDesc{
			MethodName: m.MethodName,
			Handler: func(_ any, ctx context.Context, _ func(any) error, intercept grpc.UnaryServerInterceptor) (any, error) {
				fail := func(context.Context, any) (any, error) { return nil, err }
				if intercept == nil {
					return fail(ctx, nil)
				}
				return intercept(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, fail)
			},
		})
	}
	for _, st := range desc.Streams {
		st.Handler = func(any, grpc.ServerStream) error { return err }
		out.Streams = append(out.Streams, st)
	}
	return out
}

var _ colpaliv1.DocumentServiceServer = (*documentService)(nil)

func (s *documentService) GetDocument(ctx context.Context, req *colpaliv1.GetDocumentRequest) (*colpaliv1.GetDocumentResponse, error) {
	var v violations
	checkDocumentID(&v, "document_id", req.GetDocumentId())
	if err := v.err(); err != nil {
		return nil, err
	}
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	doc, err := s.store.GetDocument(ctx, tenant, req.GetDocumentId())
	if err != nil {
		return nil, err
	}
	return &colpaliv1.GetDocumentResponse{Document: documentProto(doc)}, nil
}

func (s *documentService) ListDocuments(ctx context.Context, req *colpaliv1.ListDocumentsRequest) (*colpaliv1.ListDocumentsResponse, error) {
	var v violations
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		v.add("page_size", "is %d; want 0 (the default, %d) to %d", size, defaultListPageSize, maxListPageSize)
	case size == 0:
		size = defaultListPageSize
	case size > maxListPageSize:
		size = maxListPageSize // AIP-158: a larger page size is coerced
	}
	if len(req.GetPageToken()) > 1024 {
		v.add("page_token", "is %d bytes; it is not a token this service issued", len(req.GetPageToken()))
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	docs, next, err := s.store.ListDocuments(ctx, tenant, size, req.GetPageToken())
	if err != nil {
		return nil, fieldOf(err)
	}
	resp := &colpaliv1.ListDocumentsResponse{Documents: make([]*colpaliv1.Document, len(docs)), NextPageToken: next}
	for i, d := range docs {
		resp.Documents[i] = documentProto(d)
	}
	return resp, nil
}

func (s *documentService) DeleteDocument(ctx context.Context, req *colpaliv1.DeleteDocumentRequest) (*colpaliv1.DeleteDocumentResponse, error) {
	var v violations
	checkDocumentID(&v, "document_id", req.GetDocumentId())
	if err := v.err(); err != nil {
		return nil, err
	}
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.store.DeleteDocument(ctx, tenant, req.GetDocumentId()); err != nil {
		return nil, err
	}
	return &colpaliv1.DeleteDocumentResponse{}, nil
}

func (s *documentService) Search(ctx context.Context, req *colpaliv1.SearchRequest) (*colpaliv1.SearchResponse, error) {
	if err := s.validateSearch(req); err != nil {
		return nil, err
	}
	tenant, err := tenantOf(ctx)
	if err != nil {
		return nil, err
	}
	embs, err := s.embedder.Embed(ctx, model.Query, [][]byte{[]byte(req.GetQuery())}, 0)
	if err != nil {
		return nil, err
	}
	if len(embs) != 1 {
		return nil, fmt.Errorf("%w: %d embeddings for 1 query", model.ErrBadResponse, len(embs))
	}
	opts := store.SearchOptions{TopK: cmp.Or(int(req.GetTopK()), store.DefaultTopK)}
	for _, f := range req.GetFilters() {
		opts.Filters = append(opts.Filters, store.Filter{Field: f.GetField(), Values: f.GetValues()})
	}
	hits, err := s.store.Search(ctx, tenant, embs[0], opts)
	if err != nil {
		return nil, fieldOf(err)
	}
	resp := &colpaliv1.SearchResponse{Results: make([]*colpaliv1.SearchResult, len(hits)), Model: s.embedder.ModelName(model.Query)}
	for i, h := range hits {
		resp.Results[i] = &colpaliv1.SearchResult{Document: documentProto(h.Document), PageNumber: int32(h.Page), Score: h.Score} // #nosec G115 -- page numbers are bounded by MaxStreamPages, far below 2^31
	}
	return resp, nil
}

// fieldOf names the request field of bad input that only the store can
// recognise (a page token it did not issue; a filter it cannot run, though
// validateSearch checks filters by the store's own rules), so that the
// client gets a BadRequest naming it.
func fieldOf(err error) error {
	switch {
	case errors.Is(err, store.ErrInvalidPageToken):
		return errclass.Field("page_token", "%v", err)
	case errors.Is(err, store.ErrInvalidFilter):
		return errclass.Field("filters", "%v", err)
	}
	return err
}

func documentProto(d store.Document) *colpaliv1.Document {
	out := &colpaliv1.Document{
		DocumentId:     d.ID,
		Metadata:       d.Metadata,
		PageCount:      int32(d.PageCount), // #nosec G115 -- page counts are bounded by MaxStreamPages, far below 2^31
		IdempotencyKey: d.IdempotencyKey,
	}
	if !d.CreatedAt.IsZero() {
		out.CreateTime = timestamppb.New(d.CreatedAt)
	}
	return out
}
