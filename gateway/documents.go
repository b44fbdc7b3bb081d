package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	colpaliv1 "github.com/morphik-org/colpali-gateway/gen/colpali/v1"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

// DocumentStore is what the DocumentService needs of the document store;
// *store.Store implements it. Every method takes the tenant the call acts
// for; errors wrap the store's sentinels (store.ErrNotFound,
// store.ErrUnavailable, ...), which errors.go maps to codes.
type DocumentStore interface {
	// BeginDocument writes an invisible pending document, or returns the
	// committed document that already has d.IdempotencyKey (existing true).
	BeginDocument(ctx context.Context, d store.NewDocument) (doc store.Document, existing bool, err error)
	// AddPages stores pages first, first+1, ... (1-based) of a pending
	// document.
	AddPages(ctx context.Context, tenant, id string, first int, pages []model.Embedding) error
	// CommitDocument makes a pending document visible, atomically.
	CommitDocument(ctx context.Context, tenant, id string) (store.Document, error)
	// AbortDocument deletes a pending document.
	AbortDocument(ctx context.Context, tenant, id string) error
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
	defaultTopK         = 10
	defaultListPageSize = 50
	maxListPageSize     = 500
)

// abortTimeout bounds the clean-up of a failed ingestion. The clean-up runs
// on a context detached from the call's, which is usually over by then
// (cancelled by the client, or past its deadline).
const abortTimeout = 10 * time.Second

// errDiscarded: a pending document vanished during its ingestion (a
// concurrent ingestion with the same idempotency key began afresh, or the
// store swept it as stale). Mapped to ABORTED: the client may retry.
var errDiscarded = errors.New("the pending document was discarded during ingestion (a concurrent ingestion with the same idempotency key?)")

// errNoStorage answers every DocumentService call of a gateway built
// without a DocumentStore: the service exists in the API but is not enabled
// here, which no retry will change.
var errNoStorage = status.Error(codes.Unimplemented, "document storage is not configured on this gateway")

// tenantOf is the tenant a call acts for. Until authentication arrives every
// call acts for the default tenant; authentication will derive the tenant
// from the caller's identity here, and only here.
func tenantOf(context.Context) string { return store.DefaultTenant }

// documentService implements colpali.v1.DocumentService over a
// DocumentStore, embedding pages and queries through the Embedder (the same
// path as the EmbeddingService).
type documentService struct {
	colpaliv1.UnimplementedDocumentServiceServer
	cfg      Config
	embedder Embedder
	store    DocumentStore // nil: no storage configured
	logger   *slog.Logger
}

var _ colpaliv1.DocumentServiceServer = (*documentService)(nil)

func (s *documentService) IngestDocument(ctx context.Context, req *colpaliv1.IngestDocumentRequest) (*colpaliv1.IngestDocumentResponse, error) {
	if s.store == nil {
		return nil, errNoStorage
	}
	if err := s.validateIngest(req); err != nil {
		return nil, err
	}
	tenant := tenantOf(ctx)
	// Begin before embedding: a retry of a stored document is answered
	// without spending GPU time on it, and an unreachable database fails
	// the call before any embedding is computed.
	doc, existing, err := s.store.BeginDocument(ctx, store.NewDocument{
		Tenant: tenant, IdempotencyKey: req.GetIdempotencyKey(), Metadata: req.GetMetadata(),
		RequestDigest: pagesDigest(req.GetPages()),
	})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	if existing {
		return &colpaliv1.IngestDocumentResponse{Document: documentProto(doc), Created: false}, nil
	}
	images := make([][]byte, len(req.GetPages()))
	for i, p := range req.GetPages() {
		images[i] = p.GetImage()
	}
	committed, err := s.ingestPages(ctx, tenant, doc.ID, images)
	if err != nil {
		s.abort(ctx, tenant, doc.ID, err)
		return nil, toStatus(ctx, err)
	}
	s.logIngested(ctx, committed)
	return &colpaliv1.IngestDocumentResponse{Document: documentProto(committed), Created: true}, nil
}

// maxEmbedsInFlight bounds the concurrent Embed calls of one ingestion, so
// that one large document cannot take every backend slot at once.
const maxEmbedsInFlight = 4

// ingestPages embeds all pages of a pending document, in concurrent calls of
// at most Config.MaxImages pages (the EmbedImages limit, so the Embedder
// sees the same batches from both services), stores them in page order and
// commits the document.
func (s *documentService) ingestPages(ctx context.Context, tenant, id string, images [][]byte) (store.Document, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	chunks := chunk(images, s.cfg.MaxImages)
	embs := make([][]model.Embedding, len(chunks))
	errs := make([]error, len(chunks))
	slots := make(chan struct{}, maxEmbedsInFlight)
	var wg sync.WaitGroup
	for i, c := range chunks {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			embs[i], errs[i] = s.embedPages(ctx, c)
			if errs[i] != nil {
				cancel() // the document fails as a whole: stop the other chunks
			}
		})
	}
	wg.Wait()
	// The first error in page order that is not a consequence of cancel.
	if err := firstError(errs); err != nil {
		return store.Document{}, err
	}
	first := 1
	for _, e := range embs {
		if err := s.addPages(ctx, tenant, id, first, e); err != nil {
			return store.Document{}, err
		}
		first += len(e)
	}
	return s.commit(ctx, tenant, id)
}

// firstError returns the first error that is not context.Canceled, else
// the first error.
func firstError(errs []error) error {
	var first error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func chunk[T any](items []T, size int) [][]T {
	var out [][]T
	for len(items) > size {
		out = append(out, items[:size:size])
		items = items[size:]
	}
	if len(items) > 0 {
		out = append(out, items)
	}
	return out
}

// embedPages embeds page images and checks that the Embedder kept its
// contract of one embedding per item.
func (s *documentService) embedPages(ctx context.Context, images [][]byte) ([]model.Embedding, error) {
	embs, err := s.embedder.Embed(ctx, model.Image, images, 0)
	if err != nil {
		return nil, err
	}
	if len(embs) != len(images) {
		return nil, fmt.Errorf("%w: %d embeddings for %d pages", model.ErrBadResponse, len(embs), len(images))
	}
	return embs, nil
}

func (s *documentService) addPages(ctx context.Context, tenant, id string, first int, embs []model.Embedding) error {
	err := s.store.AddPages(ctx, tenant, id, first, embs)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %w", errDiscarded, err)
	}
	return err
}

func (s *documentService) commit(ctx context.Context, tenant, id string) (store.Document, error) {
	doc, err := s.store.CommitDocument(ctx, tenant, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Document{}, fmt.Errorf("%w: %w", errDiscarded, err)
	}
	return doc, err
}

func (s *documentService) logIngested(ctx context.Context, doc store.Document) {
	Logger(ctx, s.logger).Info("document ingested", "document_id", doc.ID, "pages", doc.PageCount)
}

// abort deletes a pending document after a failed ingestion, on a context
// of its own: the call's own is often the reason for the failure. If the
// database cannot be reached either, the store's sweeper removes the
// pending document later; nothing of it was ever visible.
func (s *documentService) abort(ctx context.Context, tenant, id string, cause error) {
	abortCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	logger := Logger(ctx, s.logger).With("document_id", id, "cause", cause.Error())
	if err := s.store.AbortDocument(abortCtx, tenant, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		logger.Warn("could not abort a failed ingestion; the store will sweep it", "error", err.Error())
		return
	}
	logger.Info("ingestion aborted")
}

// ingestStream is the server side of IngestDocumentStream.
type ingestStream = grpc.BidiStreamingServer[colpaliv1.IngestDocumentStreamRequest, colpaliv1.IngestDocumentStreamResponse]

// IngestDocumentStream: see the proto. The handler embeds and stores pages
// in groups of Config.MaxImages as they arrive, and reports each stored
// group as progress.
func (s *documentService) IngestDocumentStream(stream ingestStream) error {
	if s.store == nil {
		return errNoStorage
	}
	ctx := stream.Context()
	recv, stop := receive(stream)
	defer stop()
	first, err := recv(ctx)
	if err != nil {
		return recvStatus(ctx, err, "header")
	}
	header := first.GetHeader()
	if err := s.validateHeader(first); err != nil {
		return err
	}
	tenant := tenantOf(ctx)
	// The pages come later, so a stream's digest is its announced length.
	doc, existing, err := s.store.BeginDocument(ctx, store.NewDocument{
		Tenant: tenant, IdempotencyKey: header.GetIdempotencyKey(), Metadata: header.GetMetadata(),
		RequestDigest: fmt.Appendf(nil, "stream of %d pages", header.GetPageCount()),
	})
	if err != nil {
		return toStatus(ctx, err)
	}
	progress := &colpaliv1.IngestProgress{DocumentId: doc.ID, PageCount: header.GetPageCount()}
	if existing {
		progress.PagesReceived, progress.PagesStored = int32(doc.PageCount), int32(doc.PageCount)
		progress.PageCount = int32(doc.PageCount)
		return stream.Send(&colpaliv1.IngestDocumentStreamResponse{Progress: progress, Document: documentProto(doc)})
	}
	committed, err := s.receivePages(stream, recv, tenant, progress)
	if err != nil {
		s.abort(ctx, tenant, doc.ID, err)
		return err
	}
	s.logIngested(ctx, committed)
	return stream.Send(&colpaliv1.IngestDocumentStreamResponse{Progress: progress, Document: documentProto(committed), Created: true})
}

// receivePages runs a streaming ingestion after its header: it sends the
// first progress (which carries the document id), then receives pages and
// embeds them group by group, while a second goroutine stores the embedded
// groups in order and reports each as progress, so that the GPUs and the
// database work at the same time. Once all announced pages are stored it
// commits the document. Its errors are statuses for the client.
//
// At most one embedded group waits for the storer, so a stream holds at
// most three groups: one being received, one embedded, one being stored.
// The first failure on either side cancels the other and is the one
// reported.
func (s *documentService) receivePages(stream ingestStream, recv receiveFunc, tenant string, progress *colpaliv1.IngestProgress) (store.Document, error) {
	callCtx := stream.Context()
	id, want := progress.GetDocumentId(), int(progress.GetPageCount())
	if err := stream.Send(&colpaliv1.IngestDocumentStreamResponse{Progress: progress}); err != nil {
		return store.Document{}, err
	}
	ctx, cancel := context.WithCancelCause(callCtx)
	defer cancel(nil)
	var received atomic.Int32
	embedded := make(chan []model.Embedding)
	var storer sync.WaitGroup
	storer.Go(func() {
		if err := s.storeGroups(ctx, stream, tenant, id, want, &received, embedded); err != nil {
			cancel(err)
		}
	})
	if err := s.embedGroups(ctx, recv, want, &received, embedded); err != nil {
		cancel(err)
	}
	close(embedded)
	storer.Wait()
	if ctx.Err() != nil {
		// Our own failures are statuses; the call's end (client cancel,
		// deadline) is the parent's context error.
		err := context.Cause(ctx)
		if _, ok := status.FromError(err); !ok || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			err = toStatus(callCtx, err)
		}
		return store.Document{}, err
	}
	progress.PagesReceived, progress.PagesStored = int32(want), int32(want)
	doc, err := s.commit(callCtx, tenant, id)
	if err != nil {
		return store.Document{}, toStatus(callCtx, err)
	}
	return doc, nil
}

// embedGroups receives want pages, validates each, and hands every group of
// Config.MaxImages pages (and the last, smaller one) embedded to the
// storer.
func (s *documentService) embedGroups(ctx context.Context, recv receiveFunc, want int, received *atomic.Int32, embedded chan<- []model.Embedding) error {
	group := make([][]byte, 0, min(s.cfg.MaxImages, want))
	for n := 1; n <= want; n++ {
		msg, err := recv(ctx)
		if errors.Is(err, io.EOF) {
			var v violations
			v.add("header.page_count", "announced %d pages, but the stream ended after %d; nothing was kept", want, n-1)
			return v.err()
		}
		if err != nil {
			return recvStatus(ctx, err, fmt.Sprintf("page %d", n))
		}
		if err := s.validatePageMessage(msg, n); err != nil {
			return err
		}
		received.Store(int32(n))
		group = append(group, msg.GetPage().GetImage())
		if len(group) < s.cfg.MaxImages && n < want {
			continue
		}
		embs, err := s.embedPages(ctx, group)
		if err != nil {
			return toStatus(ctx, err)
		}
		select {
		case embedded <- embs:
		case <-ctx.Done():
			return toStatus(ctx, ctx.Err())
		}
		group = group[:0] // Embed has returned: nothing holds the images any more
	}
	return nil
}

// storeGroups stores the embedded groups in page order and sends a progress
// message after each, but the last (the caller's final message reports it).
func (s *documentService) storeGroups(ctx context.Context, stream ingestStream, tenant, id string, want int, received *atomic.Int32, embedded <-chan []model.Embedding) error {
	stored := 0
	for embs := range embedded {
		if err := s.addPages(ctx, tenant, id, stored+1, embs); err != nil {
			return toStatus(ctx, err)
		}
		stored += len(embs)
		if stored == want {
			continue
		}
		p := &colpaliv1.IngestProgress{DocumentId: id, PagesReceived: received.Load(), PagesStored: int32(stored), PageCount: int32(want)}
		if err := stream.Send(&colpaliv1.IngestDocumentStreamResponse{Progress: p}); err != nil {
			return toStatus(ctx, err)
		}
	}
	return nil
}

// receiveFunc returns the stream's next message, or ctx's error once ctx
// ends.
type receiveFunc func(ctx context.Context) (*colpaliv1.IngestDocumentStreamRequest, error)

// receive reads the stream's messages in a goroutine of its own, so that
// the handler can give up waiting when ctx ends: stream.Recv follows the
// transport, not ctx, and a stalled client would otherwise hold the handler
// past the deadline the interceptor set. The goroutine ends at the first
// error; stop lets it go without delivering its last message, and grpc-go
// ends its pending Recv once the handler has returned. One message at a time
// is in flight, so memory stays bounded.
func receive(stream ingestStream) (recv receiveFunc, stop func()) {
	type result struct {
		msg *colpaliv1.IngestDocumentStreamRequest
		err error
	}
	results := make(chan result)
	done := make(chan struct{})
	go func() {
		for {
			msg, err := stream.Recv()
			select {
			case results <- result{msg, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	recv = func(ctx context.Context) (*colpaliv1.IngestDocumentStreamRequest, error) {
		select {
		case r := <-results:
			return r.msg, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return recv, func() { close(done) }
}

// recvStatus is the status of a failed Recv: the call's own end (client
// cancel, deadline) or a transport error that grpc-go reports as a status
// (a message over the size limit).
func recvStatus(ctx context.Context, err error, what string) error {
	if errors.Is(err, io.EOF) {
		var v violations
		v.add("header", "the stream ended before its header")
		return v.err()
	}
	if ctx.Err() != nil {
		return toStatus(ctx, err)
	}
	if st, ok := status.FromError(err); ok {
		return status.Errorf(st.Code(), "receiving %s: %s", what, st.Message())
	}
	return status.Errorf(codes.Internal, "receiving %s: %v", what, err)
}

func (s *documentService) GetDocument(ctx context.Context, req *colpaliv1.GetDocumentRequest) (*colpaliv1.GetDocumentResponse, error) {
	if s.store == nil {
		return nil, errNoStorage
	}
	var v violations
	checkDocumentID(&v, "document_id", req.GetDocumentId())
	if err := v.err(); err != nil {
		return nil, err
	}
	doc, err := s.store.GetDocument(ctx, tenantOf(ctx), req.GetDocumentId())
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	return &colpaliv1.GetDocumentResponse{Document: documentProto(doc)}, nil
}

func (s *documentService) ListDocuments(ctx context.Context, req *colpaliv1.ListDocumentsRequest) (*colpaliv1.ListDocumentsResponse, error) {
	if s.store == nil {
		return nil, errNoStorage
	}
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
	docs, next, err := s.store.ListDocuments(ctx, tenantOf(ctx), size, req.GetPageToken())
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	resp := &colpaliv1.ListDocumentsResponse{Documents: make([]*colpaliv1.Document, len(docs)), NextPageToken: next}
	for i, d := range docs {
		resp.Documents[i] = documentProto(d)
	}
	return resp, nil
}

func (s *documentService) DeleteDocument(ctx context.Context, req *colpaliv1.DeleteDocumentRequest) (*colpaliv1.DeleteDocumentResponse, error) {
	if s.store == nil {
		return nil, errNoStorage
	}
	var v violations
	checkDocumentID(&v, "document_id", req.GetDocumentId())
	if err := v.err(); err != nil {
		return nil, err
	}
	if err := s.store.DeleteDocument(ctx, tenantOf(ctx), req.GetDocumentId()); err != nil {
		return nil, toStatus(ctx, err)
	}
	return &colpaliv1.DeleteDocumentResponse{}, nil
}

func (s *documentService) Search(ctx context.Context, req *colpaliv1.SearchRequest) (*colpaliv1.SearchResponse, error) {
	if s.store == nil {
		return nil, errNoStorage
	}
	if err := s.validateSearch(req); err != nil {
		return nil, err
	}
	embs, err := s.embedder.Embed(ctx, model.Query, [][]byte{[]byte(req.GetQuery())}, 0)
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	if len(embs) != 1 {
		return nil, toStatus(ctx, fmt.Errorf("%w: %d embeddings for 1 query", model.ErrBadResponse, len(embs)))
	}
	opts := store.SearchOptions{TopK: int(req.GetTopK())}
	if opts.TopK == 0 {
		opts.TopK = defaultTopK
	}
	for _, f := range req.GetFilters() {
		opts.Filters = append(opts.Filters, store.Filter{Field: f.GetField(), Values: f.GetValues()})
	}
	hits, err := s.store.Search(ctx, tenantOf(ctx), embs[0], opts)
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	resp := &colpaliv1.SearchResponse{Results: make([]*colpaliv1.SearchResult, len(hits)), Model: s.embedder.ModelName(model.Query)}
	for i, h := range hits {
		resp.Results[i] = &colpaliv1.SearchResult{Document: documentProto(h.Document), PageNumber: int32(h.Page), Score: h.Score}
	}
	return resp, nil
}

func documentProto(d store.Document) *colpaliv1.Document {
	out := &colpaliv1.Document{
		DocumentId:     d.ID,
		Metadata:       d.Metadata,
		PageCount:      int32(d.PageCount),
		IdempotencyKey: d.IdempotencyKey,
	}
	if !d.CreatedAt.IsZero() {
		out.CreateTime = timestamppb.New(d.CreatedAt)
	}
	return out
}

// pagesDigest identifies a unary ingestion's pages (SHA-256 over each
// image, length-prefixed), so that an idempotency key reused with other
// pages is told from a retry of the same request.
func pagesDigest(pages []*colpaliv1.Page) []byte {
	h := sha256.New()
	for _, p := range pages {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(p.GetImage())))
		h.Write(n[:])
		h.Write(p.GetImage())
	}
	return h.Sum(nil)
}
