package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/morphik-org/colpali-gateway/internal/errclass"
	"github.com/morphik-org/colpali-gateway/internal/testutil"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/store"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeStore records what an ingestion does to it; its func fields, when
// set, replace a method's answer.
type fakeStore struct {
	mu       sync.Mutex
	calls    []string
	pages    map[int]model.Embedding
	begin    func() (store.Document, bool, error)
	addPages func(first int) error
}

var _ Store = (*fakeStore)(nil)

func (f *fakeStore) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeStore) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeStore) BeginDocument(context.Context, store.NewDocument) (store.Document, bool, error) {
	f.record("begin")
	if f.begin != nil {
		return f.begin()
	}
	return store.Document{ID: "doc-1"}, false, nil
}

func (f *fakeStore) AddPages(_ context.Context, _, _ string, first int, pages []model.Embedding) error {
	f.record(fmt.Sprintf("add %d+%d", first, len(pages)))
	if f.addPages != nil {
		if err := f.addPages(first); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pages == nil {
		f.pages = map[int]model.Embedding{}
	}
	for i, p := range pages {
		f.pages[first+i] = p
	}
	return nil
}

func (f *fakeStore) CommitDocument(_ context.Context, _, id string) (store.Document, error) {
	f.record("commit")
	f.mu.Lock()
	defer f.mu.Unlock()
	return store.Document{ID: id, PageCount: len(f.pages)}, nil
}

func (f *fakeStore) AbortDocument(context.Context, string, string) error {
	f.record("abort")
	return nil
}

// fakeEmbedder embeds item "page N" as a one-value embedding N, counting
// calls in flight at once; fail, when set, fails a call first.
type fakeEmbedder struct {
	inFlight, maxInFlight, calls atomic.Int32
	fail                         func(ctx context.Context, items [][]byte) error
}

func (e *fakeEmbedder) Embed(ctx context.Context, _ model.Kind, items [][]byte, _ int) ([]model.Embedding, error) {
	e.calls.Add(1)
	n := e.inFlight.Add(1)
	defer e.inFlight.Add(-1)
	for {
		m := e.maxInFlight.Load()
		if n <= m || e.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if e.fail != nil {
		if err := e.fail(ctx, items); err != nil {
			return nil, err
		}
	}
	out := make([]model.Embedding, len(items))
	for i, item := range items {
		var n float32
		if _, err := fmt.Sscanf(string(item), "page %g", &n); err != nil {
			return nil, err
		}
		out[i] = model.Embedding{Rows: 1, Dim: 1, Values: []float32{n}}
	}
	return out, nil
}

// pagesUpTo returns a Next giving "page 1" ... "page n", then io.EOF.
func pagesUpTo(n int) func(context.Context) ([]byte, error) {
	i := 0
	return func(context.Context) ([]byte, error) {
		if i == n {
			return nil, io.EOF
		}
		i++
		return fmt.Appendf(nil, "page %d", i), nil
	}
}

func newService(t *testing.T, cfg Config, e Embedder, s Store) *Service {
	t.Helper()
	svc, err := New(cfg, e, s, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestIngestStoresEveryPageInOrder(t *testing.T) {
	fs, emb := &fakeStore{}, &fakeEmbedder{}
	svc := newService(t, Config{GroupSize: 3, InFlight: 2}, emb, fs)
	var progress []Progress
	doc, created, err := svc.Ingest(testutil.Context(t), Document{
		Tenant: "t", PageCount: 10, Next: pagesUpTo(10),
		Progress: func(p Progress) error { progress = append(progress, p); return nil },
	})
	if err != nil || !created || doc.PageCount != 10 {
		t.Fatalf("Ingest = %+v, %v, %v; want 10 pages created", doc, created, err)
	}
	for n := 1; n <= 10; n++ {
		if got := fs.pages[n].Values[0]; got != float32(n) {
			t.Errorf("page %d holds the embedding of page %v", n, got)
		}
	}
	if calls := emb.calls.Load(); calls != 4 {
		t.Errorf("%d Embed calls for 10 pages in groups of 3, want 4", calls)
	}
	if m := emb.maxInFlight.Load(); m > 2 {
		t.Errorf("%d Embed calls at once, want at most InFlight (2)", m)
	}
	want := []string{"begin", "add 1+3", "add 4+3", "add 7+3", "add 10+1", "commit"}
	if got := fs.Calls(); !slices.Equal(got, want) {
		t.Errorf("store calls %v, want %v", got, want)
	}
	// The id first, then every stored group but the last.
	stored := []int{0, 3, 6, 9}
	if len(progress) != len(stored) {
		t.Fatalf("progress %+v, want %d reports", progress, len(stored))
	}
	for i, p := range progress {
		if p.DocumentID != "doc-1" || p.PagesStored != stored[i] || p.PageCount != 10 || p.PagesReceived < p.PagesStored {
			t.Errorf("progress %d = %+v, want %d stored of 10", i, p, stored[i])
		}
	}
}

func TestIngestExistingReadsNoPage(t *testing.T) {
	fs := &fakeStore{begin: func() (store.Document, bool, error) { return store.Document{ID: "old", PageCount: 2}, true, nil }}
	emb := &fakeEmbedder{}
	svc := newService(t, Config{GroupSize: 3}, emb, fs)
	doc, created, err := svc.Ingest(testutil.Context(t), Document{Tenant: "t", PageCount: 2, Next: func(context.Context) ([]byte, error) {
		t.Error("a page was read for a document that exists")
		return nil, io.EOF
	}})
	if err != nil || created || doc.ID != "old" || emb.calls.Load() != 0 {
		t.Errorf("Ingest = %+v, %v, %v (%d Embed calls); want the existing document, nothing embedded", doc, created, err, emb.calls.Load())
	}
}

func TestIngestBeginFailsBeforeEmbedding(t *testing.T) {
	down := fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	fs := &fakeStore{begin: func() (store.Document, bool, error) { return store.Document{}, false, down }}
	emb := &fakeEmbedder{}
	svc := newService(t, Config{GroupSize: 3}, emb, fs)
	_, _, err := svc.Ingest(testutil.Context(t), Document{Tenant: "t", PageCount: 2, Next: pagesUpTo(2)})
	if !errors.Is(err, store.ErrUnavailable) || emb.calls.Load() != 0 {
		t.Errorf("err = %v after %d Embed calls; want ErrUnavailable before any", err, emb.calls.Load())
	}
}

func TestIngestFailuresAbort(t *testing.T) {
	overloaded := errclass.Errorf(errclass.Overloaded, "queue full")
	for _, tc := range []struct {
		name  string
		fs    *fakeStore
		emb   *fakeEmbedder
		next  func(context.Context) ([]byte, error)
		class error
		is    error
	}{
		{
			name: "embed fails", fs: &fakeStore{}, next: pagesUpTo(10), class: errclass.Overloaded, is: overloaded,
			emb: &fakeEmbedder{fail: func(_ context.Context, items [][]byte) error {
				if string(items[0]) == "page 4" {
					return overloaded
				}
				return nil
			}},
		},
		{
			name: "pending document swept", emb: &fakeEmbedder{}, next: pagesUpTo(10), class: errclass.Aborted, is: ErrDiscarded,
			fs: &fakeStore{addPages: func(first int) error {
				if first == 4 {
					return store.ErrNotFound
				}
				return nil
			}},
		},
		{name: "pages end early", fs: &fakeStore{}, emb: &fakeEmbedder{}, next: pagesUpTo(5), class: errclass.Invalid},
		{
			name: "reading fails", fs: &fakeStore{}, emb: &fakeEmbedder{}, class: errclass.Unavailable,
			next: func(context.Context) ([]byte, error) { return nil, errclass.Errorf(errclass.Unavailable, "gone") },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := newService(t, Config{GroupSize: 3}, tc.emb, tc.fs)
			_, _, err := svc.Ingest(testutil.Context(t), Document{Tenant: "t", PageCount: 10, Next: tc.next})
			if errclass.Of(err) != tc.class || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Errorf("err = %v (class %v), want class %v", err, errclass.Of(err), tc.class)
			}
			if calls := tc.fs.Calls(); calls[len(calls)-1] != "abort" || slices.Contains(calls, "commit") {
				t.Errorf("store calls %v, want an abort and no commit", calls)
			}
		})
	}
}

func TestIngestCallerCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(testutil.Context(t))
	emb := &fakeEmbedder{fail: func(ctx context.Context, _ [][]byte) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}}
	fs := &fakeStore{}
	svc := newService(t, Config{GroupSize: 3}, emb, fs)
	_, _, err := svc.Ingest(ctx, Document{Tenant: "t", PageCount: 10, Next: pagesUpTo(10)})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if calls := fs.Calls(); calls[len(calls)-1] != "abort" {
		t.Errorf("store calls %v, want an abort last (on a context of its own)", calls)
	}
}

func TestNewNamesBadConfig(t *testing.T) {
	if _, err := New(Config{}, &fakeEmbedder{}, &fakeStore{}, testutil.Logger(t)); err == nil {
		t.Error("New accepted GroupSize 0")
	}
}

// TestIngestCheckRunsBeforeAnyPage: Document.Check runs once the pending
// document is begun; its refusal aborts that document before a page is
// read or embedded, and a retry answered from the store does not run it.
func TestIngestCheckRunsBeforeAnyPage(t *testing.T) {
	fs, emb := &fakeStore{}, &fakeEmbedder{}
	svc := newService(t, Config{GroupSize: 3}, emb, fs)
	full := errclass.Errorf(errclass.Overloaded, "storage quota")
	checks := 0
	_, _, err := svc.Ingest(testutil.Context(t), Document{
		Tenant: "t", PageCount: 2,
		Check: func(context.Context) error { checks++; return full },
		Next: func(context.Context) ([]byte, error) {
			t.Error("a page was read after the check refused")
			return nil, io.EOF
		},
	})
	if !errors.Is(err, full) || checks != 1 || emb.calls.Load() != 0 {
		t.Errorf("err = %v after %d checks and %d Embed calls; want the check's refusal before any", err, checks, emb.calls.Load())
	}
	if got, want := fs.Calls(), []string{"begin", "abort"}; !slices.Equal(got, want) {
		t.Errorf("store calls %v, want %v", got, want)
	}

	fs.begin = func() (store.Document, bool, error) { return store.Document{ID: "old", PageCount: 2}, true, nil }
	doc, created, err := svc.Ingest(testutil.Context(t), Document{
		Tenant: "t", PageCount: 2, Next: pagesUpTo(2),
		Check: func(context.Context) error { checks++; return full },
	})
	if err != nil || created || doc.ID != "old" || checks != 1 {
		t.Errorf("retry of a stored document = %+v, %v, %v after %d checks; want it answered without a check", doc, created, err, checks)
	}
}
