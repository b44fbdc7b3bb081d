package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

// fakeStore is a DocumentStore kept in memory. Each method runs its function
// field when set (to inject faults or observe calls), else an in-memory
// behaviour that follows the store contract closely enough for the
// gateway's tests: pending documents invisible until committed, the
// idempotency rule, MaxSim search with filters.
type fakeStore struct {
	begin  func(ctx context.Context, d store.NewDocument) (store.Document, bool, error)
	add    func(ctx context.Context, tenant, id string, first int, pages []model.Embedding) error
	commit func(ctx context.Context, tenant, id string) (store.Document, error)
	abort  func(ctx context.Context, tenant, id string) error
	get    func(ctx context.Context, tenant, id string) (store.Document, error)
	list   func(ctx context.Context, tenant string, pageSize int, pageToken string) ([]store.Document, string, error)
	del    func(ctx context.Context, tenant, id string) error
	search func(ctx context.Context, tenant string, q model.Embedding, opts store.SearchOptions) ([]store.Hit, error)
	ping   func(ctx context.Context) error

	mu      sync.Mutex
	docs    map[string]*fakeDoc // by id, pending or committed
	order   []string            // ids in creation order
	calls   []string            // "begin", "add 1", "commit", "abort", ... in call order
	aborted chan string         // receives the id of each aborted document, if made
}

type fakeDoc struct {
	store.Document
	committed bool
	pages     []model.Embedding
}

var _ DocumentStore = (*fakeStore)(nil)

func newFakeStore() *fakeStore {
	return &fakeStore{docs: map[string]*fakeDoc{}, aborted: make(chan string, 16)}
}

func (f *fakeStore) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

// Calls returns the calls made so far.
func (f *fakeStore) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (f *fakeStore) BeginDocument(ctx context.Context, d store.NewDocument) (store.Document, bool, error) {
	f.record("begin")
	if f.begin != nil {
		return f.begin(ctx, d)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if d.IdempotencyKey != "" {
		for _, id := range f.order {
			doc := f.docs[id]
			if doc == nil { // aborted or deleted
				continue
			}
			if doc.Tenant == d.Tenant && doc.IdempotencyKey == d.IdempotencyKey {
				if doc.committed {
					return doc.Document, true, nil
				}
				delete(f.docs, id) // a pending one is begun afresh
			}
		}
	}
	doc := &fakeDoc{Document: store.Document{
		ID: newUUID(), Tenant: d.Tenant, IdempotencyKey: d.IdempotencyKey,
		Metadata: maps.Clone(d.Metadata), CreatedAt: time.Now(),
	}}
	f.docs[doc.ID] = doc
	f.order = append(f.order, doc.ID)
	return doc.Document, false, nil
}

func (f *fakeStore) AddPages(ctx context.Context, tenant, id string, first int, pages []model.Embedding) error {
	f.record(fmt.Sprintf("add %d+%d", first, len(pages)))
	if f.add != nil {
		return f.add(ctx, tenant, id, first, pages)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	doc, ok := f.docs[id]
	if !ok || doc.Tenant != tenant || doc.committed {
		return fmt.Errorf("pending document %s: %w", id, store.ErrNotFound)
	}
	if first != len(doc.pages)+1 {
		return fmt.Errorf("pages must be added in order: got first %d after %d pages", first, len(doc.pages))
	}
	doc.pages = append(doc.pages, pages...)
	return nil
}

func (f *fakeStore) CommitDocument(ctx context.Context, tenant, id string) (store.Document, error) {
	f.record("commit")
	if f.commit != nil {
		return f.commit(ctx, tenant, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	doc, ok := f.docs[id]
	if !ok || doc.Tenant != tenant {
		return store.Document{}, fmt.Errorf("pending document %s: %w", id, store.ErrNotFound)
	}
	doc.committed = true
	doc.PageCount = len(doc.pages)
	return doc.Document, nil
}

func (f *fakeStore) AbortDocument(ctx context.Context, tenant, id string) error {
	f.record("abort")
	defer func() {
		select {
		case f.aborted <- id:
		default:
		}
	}()
	if f.abort != nil {
		return f.abort(ctx, tenant, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if doc, ok := f.docs[id]; ok && doc.Tenant == tenant && !doc.committed {
		delete(f.docs, id)
	}
	return nil
}

// committed returns the visible document id, if any.
func (f *fakeStore) committed(tenant, id string) (*fakeDoc, bool) {
	doc, ok := f.docs[id]
	return doc, ok && doc.committed && doc.Tenant == tenant
}

func (f *fakeStore) GetDocument(ctx context.Context, tenant, id string) (store.Document, error) {
	f.record("get")
	if f.get != nil {
		return f.get(ctx, tenant, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if doc, ok := f.committed(tenant, id); ok {
		return doc.Document, nil
	}
	return store.Document{}, fmt.Errorf("document %s: %w", id, store.ErrNotFound)
}

func (f *fakeStore) ListDocuments(ctx context.Context, tenant string, pageSize int, pageToken string) ([]store.Document, string, error) {
	f.record(fmt.Sprintf("list %d", pageSize))
	if f.list != nil {
		return f.list(ctx, tenant, pageSize, pageToken)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []store.Document
	for _, id := range f.order {
		if doc, ok := f.committed(tenant, id); ok {
			all = append(all, doc.Document)
		}
	}
	start := 0
	if pageToken != "" {
		i := slices.IndexFunc(all, func(d store.Document) bool { return d.ID == pageToken })
		if i < 0 {
			return nil, "", fmt.Errorf("%w: unknown token", store.ErrInvalidPageToken)
		}
		start = i
	}
	end := min(start+pageSize, len(all))
	next := ""
	if end < len(all) {
		next = all[end].ID
	}
	return all[start:end], next, nil
}

func (f *fakeStore) DeleteDocument(ctx context.Context, tenant, id string) error {
	f.record("delete")
	if f.del != nil {
		return f.del(ctx, tenant, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.committed(tenant, id); !ok {
		return fmt.Errorf("document %s: %w", id, store.ErrNotFound)
	}
	delete(f.docs, id)
	return nil
}

func (f *fakeStore) Search(ctx context.Context, tenant string, q model.Embedding, opts store.SearchOptions) ([]store.Hit, error) {
	f.record("search")
	if f.search != nil {
		return f.search(ctx, tenant, q, opts)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var hits []store.Hit
	for _, id := range f.order {
		doc, ok := f.committed(tenant, id)
		if !ok || !matches(doc.Document, opts.Filters) {
			continue
		}
		for p, page := range doc.pages {
			hits = append(hits, store.Hit{Document: doc.Document, Page: p + 1, Score: maxSim(q, page)})
		}
	}
	slices.SortStableFunc(hits, func(a, b store.Hit) int { return cmp.Compare(b.Score, a.Score) })
	return hits[:min(len(hits), opts.TopK)], nil
}

func matches(d store.Document, filters []store.Filter) bool {
	for _, f := range filters {
		var v string
		switch {
		case f.Field == "document_id":
			v = d.ID
		case strings.HasPrefix(f.Field, "metadata."):
			v = d.Metadata[strings.TrimPrefix(f.Field, "metadata.")]
		}
		if !slices.Contains(f.Values, v) {
			return false
		}
	}
	return true
}

// maxSim is late interaction: for each query vector its best dot product
// over the page's vectors, summed.
func maxSim(q, page model.Embedding) float32 {
	var sum float32
	for i := range q.Rows {
		best := float32(-1e30)
		for j := range page.Rows {
			var dot float32
			for k, x := range q.Vector(i) {
				dot += x * page.Vector(j)[k]
			}
			best = max(best, dot)
		}
		sum += best
	}
	return sum
}

func (f *fakeStore) Ping(ctx context.Context) error {
	if f.ping != nil {
		return f.ping(ctx)
	}
	return nil
}
