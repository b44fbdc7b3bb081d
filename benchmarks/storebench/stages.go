package main

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// stageNames are the durations store.Search logs at debug level, in
// order ("search stages").
var stageNames = []string{"encode", "first_stage", "codes", "fetch_rerank"}

// stages is a slog.Handler that adds up the stage times of the searches
// logged through it and passes every other record at Info and above on.
type stages struct {
	next slog.Handler
	mu   *sync.Mutex
	sum  map[string]time.Duration
	n    *int
}

func newStages(next slog.Handler) *stages {
	return &stages{next: next, mu: &sync.Mutex{}, sum: map[string]time.Duration{}, n: new(int)}
}

func (s *stages) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelDebug }

func (s *stages) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "search stages" {
		if r.Level < slog.LevelInfo {
			return nil
		}
		return s.next.Handle(ctx, r)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r.Attrs(func(a slog.Attr) bool {
		if a.Value.Kind() == slog.KindDuration {
			s.sum[a.Key] += a.Value.Duration()
		}
		return true
	})
	*s.n++
	return nil
}

func (s *stages) WithAttrs(as []slog.Attr) slog.Handler {
	c := *s
	c.next = s.next.WithAttrs(as)
	return &c
}

func (s *stages) WithGroup(name string) slog.Handler {
	c := *s
	c.next = s.next.WithGroup(name)
	return &c
}

// take returns the mean of each stage since the last take, and resets.
func (s *stages) take() map[string]time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]time.Duration{}
	for k, v := range s.sum {
		out[k] = v / time.Duration(max(*s.n, 1))
	}
	clear(s.sum)
	*s.n = 0
	return out
}
