// Package ingest runs one document's ingestion: begin a pending document in
// the store, embed its pages in groups with bounded parallelism, add each
// group's embeddings in page order, and commit; or, on any failure, abort
// the pending document so that nothing of it is ever visible.
//
// The gateway's IngestDocument (all pages in one request) and
// IngestDocumentStream (pages as they arrive) are thin adapters over
// Service.Ingest: they give it the document's header and a function that
// returns the next page, and turn its progress reports into messages.
//
// # Order of work
//
// The pending document is begun before any page is read or embedded: a
// retry of a committed document (same idempotency key, same request) is
// answered at once without spending GPU time, and a database that cannot
// be reached fails the call before any embedding is computed. Then
// Document.Check runs (the tenant's storage quota), still before any page.
//
// # Concurrency and memory
//
// Pages are read on the caller's goroutine, group by group (Config.GroupSize
// pages, the EmbedImages limit, so the Embedder sees the same batches as
// from the EmbeddingService). Each group is embedded on a goroutine of its
// own and stored by a single storer goroutine in page order, so the GPUs
// and the database work at the same time. A group holds a slot from being
// embedded until it is stored, so at most InFlight groups are embedding or
// waiting for the storer, and one more is being read. The first failure
// anywhere cancels the rest and is the error returned.
//
// Errors are those of the Embedder and the store, plus ErrDiscarded and
// class errclass.Invalid for pages that end early; the gateway's edge maps
// their classes to codes.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

// ErrDiscarded: the pending document vanished during its ingestion (a
// concurrent ingestion with the same idempotency key began afresh, or the
// store swept it as stale). Class Aborted: the client may retry.
var ErrDiscarded = errclass.Wrap(errclass.Aborted,
	errors.New("the pending document was discarded during ingestion (a concurrent ingestion with the same idempotency key?); retry the ingestion"))

// Store is what an ingestion needs of the document store; *store.Store
// implements it.
type Store interface {
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
}

// Embedder embeds page images; the batcher implements it. Pages go at
// priority 0, the model's default level.
type Embedder interface {
	Embed(ctx context.Context, kind model.Kind, items [][]byte, priority int) ([]model.Embedding, error)
}

// Config configures a Service.
type Config struct {
	// GroupSize is the number of pages per Embed call. Required.
	GroupSize int
	// InFlight bounds the groups of one document that are embedding or
	// waiting to be stored, so that one large document cannot take every
	// backend slot at once. Default 4.
	InFlight int
	// AbortTimeout bounds the clean-up of a failed ingestion, which runs on
	// a context detached from the call's (usually over by then). Default
	// 10s.
	AbortTimeout time.Duration
}

// Defaults of Config.
const (
	DefaultInFlight     = 4
	DefaultAbortTimeout = 10 * time.Second
)

// Service runs ingestions.
type Service struct {
	cfg      Config
	embedder Embedder
	store    Store
	logger   *slog.Logger
}

// New returns a Service. logger is used when a Document brings none.
func New(cfg Config, embedder Embedder, st Store, logger *slog.Logger) (*Service, error) {
	if cfg.GroupSize <= 0 {
		return nil, fmt.Errorf("ingest: GroupSize is %d; want at least 1", cfg.GroupSize)
	}
	if cfg.InFlight < 0 || cfg.AbortTimeout < 0 {
		return nil, fmt.Errorf("ingest: InFlight %d and AbortTimeout %v must not be negative", cfg.InFlight, cfg.AbortTimeout)
	}
	if cfg.InFlight == 0 {
		cfg.InFlight = DefaultInFlight
	}
	if cfg.AbortTimeout == 0 {
		cfg.AbortTimeout = DefaultAbortTimeout
	}
	if embedder == nil || st == nil || logger == nil {
		return nil, errors.New("ingest: an Embedder, a Store and a logger are required")
	}
	return &Service{cfg: cfg, embedder: embedder, store: st, logger: logger}, nil
}

// Document is one ingestion: the header, the pages and where progress goes.
type Document struct {
	Tenant         string
	IdempotencyKey string
	Metadata       map[string]string
	// RequestDigest identifies the request, so that an idempotency key
	// reused for other content is told from a retry.
	RequestDigest []byte
	// PageCount is the number of pages Next will be asked for (at least 1).
	PageCount int
	// Next returns the next page's encoded image. It is called PageCount
	// times, on the goroutine that called Ingest; io.EOF before that is a
	// document shorter than announced (class Invalid).
	Next func(ctx context.Context) ([]byte, error)
	// Check, if set, runs once the pending document is begun and before
	// any page is read or embedded (a retry answered from the store never
	// runs it): the gateway checks the tenant's storage quota here, so
	// that a refused ingestion spends no GPU time and an idempotent retry
	// of a stored document is still answered. An error fails the
	// ingestion.
	Check func(ctx context.Context) error
	// Progress, if set, is told of the new document's id once it is begun
	// (nothing stored yet) and after every stored group but the last; the
	// committed document reports the end. Calls do not overlap. An error
	// fails the ingestion.
	Progress func(Progress) error
	// InFlight overrides Config.InFlight for this document when positive;
	// a stream, whose pages arrive one by one, needs fewer groups in
	// memory than a request that holds them all already.
	InFlight int
	// Logger is the call's logger; the Service's when nil.
	Logger *slog.Logger
}

// Progress is where an ingestion stands.
type Progress struct {
	DocumentID    string
	PagesReceived int
	PagesStored   int
	PageCount     int
}

// Ingest runs the ingestion of d. It returns the committed document and
// created true, or the document committed earlier under d.IdempotencyKey
// and created false (without reading any page), or an error after aborting
// the pending document.
func (s *Service) Ingest(ctx context.Context, d Document) (doc store.Document, created bool, err error) {
	if d.PageCount <= 0 {
		return store.Document{}, false, errclass.Field("page_count", "is %d; want at least 1", d.PageCount)
	}
	logger := d.Logger
	if logger == nil {
		logger = s.logger
	}
	pending, existing, err := s.store.BeginDocument(ctx, store.NewDocument{
		Tenant: d.Tenant, IdempotencyKey: d.IdempotencyKey, Metadata: d.Metadata, RequestDigest: d.RequestDigest,
	})
	if err != nil {
		return store.Document{}, false, err
	}
	if existing {
		return pending, false, nil
	}
	if d.Check != nil {
		if err := d.Check(ctx); err != nil {
			s.abort(ctx, logger, d.Tenant, pending.ID, err)
			return store.Document{}, false, err
		}
	}
	committed, err := s.run(ctx, d, pending.ID)
	if err != nil {
		s.abort(ctx, logger, d.Tenant, pending.ID, err)
		return store.Document{}, false, err
	}
	logger.Info("document ingested", "document_id", committed.ID, "pages", committed.PageCount)
	return committed, true, nil
}

// group is one Embed call's pages, from first (1-based).
type group struct {
	first  int
	images [][]byte
	done   chan struct{} // closed when embs and err are set
	embs   []model.Embedding
	err    error
}

// run reads, embeds, stores and commits the pages of pending document id.
func (s *Service) run(callCtx context.Context, d Document, id string) (store.Document, error) {
	report := func(p Progress) error {
		if d.Progress == nil {
			return nil
		}
		return d.Progress(p)
	}
	if err := report(Progress{DocumentID: id, PageCount: d.PageCount}); err != nil {
		return store.Document{}, err
	}
	inFlight := s.cfg.InFlight
	if d.InFlight > 0 {
		inFlight = d.InFlight
	}
	ctx, cancel := context.WithCancelCause(callCtx)
	defer cancel(nil)

	// A slot is taken before a group is embedded and given back once the
	// storer is done with it; results holds the groups in page order and
	// never holds more than the slots, so sending to it never blocks.
	slots := make(chan struct{}, inFlight)
	results := make(chan *group, inFlight)
	var received atomic.Int64
	var storer, embedders sync.WaitGroup
	storer.Go(func() {
		stored := 0
		for g := range results {
			<-g.done
			if g.err == nil && ctx.Err() == nil {
				if err := s.addPages(ctx, d.Tenant, id, g.first, g.embs); err != nil {
					cancel(err)
				} else if stored += len(g.embs); stored < d.PageCount {
					p := Progress{DocumentID: id, PagesReceived: int(received.Load()), PagesStored: stored, PageCount: d.PageCount}
					if err := report(p); err != nil {
						cancel(err)
					}
				}
			}
			g.embs = nil
			<-slots
		}
	})

	s.readGroups(ctx, cancel, d, &received, func(g *group) bool {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		results <- g
		embedders.Go(func() {
			defer close(g.done)
			g.embs, g.err = s.embed(ctx, g.images)
			g.images = nil // Embed has returned: nothing holds the images any more
			if g.err != nil {
				cancel(g.err) // the document fails as a whole: stop the other groups
			}
		})
		return true
	})
	close(results)
	embedders.Wait()
	storer.Wait()
	if ctx.Err() != nil {
		// Our own failure, or the call's end (client cancel, deadline).
		return store.Document{}, context.Cause(ctx)
	}
	return s.commit(callCtx, d.Tenant, id)
}

// readGroups reads d's pages and hands every group of GroupSize pages (and
// the last, smaller one) to start, until start returns false or a read
// fails (which cancels ctx).
func (s *Service) readGroups(ctx context.Context, cancel context.CancelCauseFunc, d Document, received *atomic.Int64, start func(*group) bool) {
	for n := 1; n <= d.PageCount; {
		g := &group{first: n, images: make([][]byte, 0, min(s.cfg.GroupSize, d.PageCount-n+1)), done: make(chan struct{})}
		for ; len(g.images) < s.cfg.GroupSize && n <= d.PageCount; n++ {
			img, err := d.Next(ctx)
			if errors.Is(err, io.EOF) {
				err = errclass.Field("page_count", "announced %d pages, but the pages ended after %d; nothing was kept", d.PageCount, n-1)
			}
			if err != nil {
				cancel(err)
				return
			}
			received.Store(int64(n))
			g.images = append(g.images, img)
		}
		if !start(g) {
			return
		}
	}
}

// embed embeds page images and checks that the Embedder kept its contract
// of one embedding per item.
func (s *Service) embed(ctx context.Context, images [][]byte) ([]model.Embedding, error) {
	embs, err := s.embedder.Embed(ctx, model.Image, images, 0)
	if err != nil {
		return nil, err
	}
	if len(embs) != len(images) {
		return nil, fmt.Errorf("%w: %d embeddings for %d pages", model.ErrBadResponse, len(embs), len(images))
	}
	return embs, nil
}

// addPages and commit report a pending document that vanished as
// ErrDiscarded: not NotFound, which would tell the client its request
// named a missing document.
func (s *Service) addPages(ctx context.Context, tenant, id string, first int, embs []model.Embedding) error {
	return discarded(s.store.AddPages(ctx, tenant, id, first, embs))
}

func (s *Service) commit(ctx context.Context, tenant, id string) (store.Document, error) {
	doc, err := s.store.CommitDocument(ctx, tenant, id)
	return doc, discarded(err)
}

func discarded(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w (%v)", ErrDiscarded, err)
	}
	return err
}

// abort deletes a pending document after a failed ingestion, on a context
// of its own: the call's own is often the reason for the failure. If the
// database cannot be reached either, the store's sweeper removes the
// pending document later; nothing of it was ever visible.
func (s *Service) abort(ctx context.Context, logger *slog.Logger, tenant, id string, cause error) {
	abortCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.AbortTimeout)
	defer cancel()
	logger = logger.With("document_id", id, "cause", cause.Error())
	if err := s.store.AbortDocument(abortCtx, tenant, id); err != nil && !errors.Is(err, store.ErrNotFound) {
		logger.Warn("could not abort a failed ingestion; the store will sweep it", "error", err.Error())
		return
	}
	logger.Info("ingestion aborted")
}
