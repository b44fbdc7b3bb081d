package gpu

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/config"
)

// Defaults of ScraperConfig.
const (
	// DefaultScrapeInterval is about Triton's own metrics refresh: it
	// updates its GPU gauges every 2 s (--metrics-interval-ms=2000).
	DefaultScrapeInterval = 2 * time.Second
	DefaultScrapeTimeout  = time.Second
	// DefaultStaleIntervals is Stale in Intervals: three missed scrapes.
	DefaultStaleIntervals = 3
)

// DefaultMaxBytes bounds one metrics response. Triton's page is a few
// kilobytes per model and GPU; a far larger one is not a Triton page.
const DefaultMaxBytes = 16 << 20

// Errors of a scrape, recorded in TargetStatus.LastError; use errors.Is.
var (
	// ErrBadStatus is an HTTP status other than 200.
	ErrBadStatus = errors.New("gpu: metrics endpoint answered an error status")
	// ErrTooLarge is a response over ScraperConfig.MaxBytes.
	ErrTooLarge = errors.New("gpu: metrics response too large")
	// ErrNoTritonMetrics is a well-formed page without any of Triton's
	// nv_inference_* or nv_gpu_* metrics: probably not a Triton server.
	ErrNoTritonMetrics = errors.New("gpu: no Triton metrics in response")
)

// DefaultMetricsPort is Triton's default metrics port (--metrics-port).
const DefaultMetricsPort = 8002

// MetricsURL is the metrics URL of the Triton server at grpcAddr
// ("host:port") when its metrics port is port (0: DefaultMetricsPort), as
// Triton serves it: http://host:port/metrics.
func MetricsURL(grpcAddr string, port int) (string, error) {
	host, _, err := net.SplitHostPort(grpcAddr)
	if err != nil {
		return "", fmt.Errorf("gpu: backend address %q: %w", grpcAddr, err)
	}
	if port < 0 || port > 65535 {
		return "", fmt.Errorf("gpu: metrics port %d out of range", port)
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(cmp.Or(port, DefaultMetricsPort))), Path: "/metrics"}
	return u.String(), nil
}

// ErrAlreadyRunning is returned by Run when the same Scraper or NVML is
// already running.
var ErrAlreadyRunning = errors.New("gpu: already running")

// ScraperConfig configures a Scraper. In a Config built in Go a zero field
// takes its default (NewScraper calls WithDefaults); Validate refuses it,
// but for Stale (see package internal/config: one rule for zero).
type ScraperConfig struct {
	// Interval is the time between the starts of two scrapes of every
	// target. Default 2s.
	Interval time.Duration
	// Timeout bounds one scrape of one target, connection included; it
	// may not exceed Interval. Default 1s.
	Timeout time.Duration
	// Client makes the requests. Default: a client of the Scraper's own,
	// whose idle connections Run closes when it returns.
	Client *http.Client
	// Stale is the age beyond which a target's Stats are no longer
	// reported (Stats answers ok false) although its last scrape
	// succeeded. At least Interval. Default 3 x Interval.
	Stale time.Duration
	// MaxBytes bounds one metrics response; a larger one is an error.
	// Default 16 MiB.
	MaxBytes int64
}

// WithDefaults returns c with every zero field set to its default.
func (c ScraperConfig) WithDefaults() ScraperConfig {
	c.Interval = cmp.Or(c.Interval, DefaultScrapeInterval)
	c.Timeout = cmp.Or(c.Timeout, DefaultScrapeTimeout)
	c.Stale = cmp.Or(c.Stale, DefaultStaleIntervals*c.Interval)
	c.MaxBytes = cmp.Or(c.MaxBytes, DefaultMaxBytes)
	return c
}

// Validate names every bad field of c by its Go name. It takes c as it is:
// a zero Interval, Timeout or MaxBytes is refused, not defaulted (NewScraper
// calls WithDefaults); a zero Stale means 3 x Interval, derived.
func (c ScraperConfig) Validate() error {
	var errs config.Errors
	errs.Add(config.Positive("Interval", c.Interval))
	errs.Add(config.Positive("Timeout", c.Timeout))
	errs.Add(config.Positive("MaxBytes", c.MaxBytes))
	if c.Interval > 0 && c.Timeout > c.Interval {
		errs.Bad("Timeout", c.Timeout, "exceeds {Interval} %v", c.Interval)
	}
	if c.Stale < 0 || (c.Stale > 0 && c.Stale < c.Interval) {
		errs.Bad("Stale", c.Stale, "want at least {Interval} %v (or 0: 3 x Interval)", c.Interval)
	}
	return errs.Err()
}

// TargetStatus is what a Scraper knows of one target, for an operator's
// view.
type TargetStatus struct {
	// Backend is the backend's gRPC address; URL its metrics URL.
	Backend, URL string
	// Stats are the figures of the last successful scrape; Stats.At is
	// zero before the first.
	Stats Stats
	// Fresh is whether Stats would be reported now (not stale).
	Fresh bool
	// LastError is the error of the last scrape, nil when it succeeded;
	// LastErrorAt is when it happened.
	LastError   error
	LastErrorAt time.Time
	// Failures counts the scrapes that failed in a row.
	Failures int
}

// Scraper is a Source that reads each backend's Triton metrics endpoint
// every Interval. Create it with NewScraper, give it targets with
// SetTargets (at any time) and call Run once. Its methods are safe for
// concurrent use; Stats, All and Status read a snapshot and never wait on
// I/O.
type Scraper struct {
	cfg       ScraperConfig
	logger    *slog.Logger
	client    *http.Client
	ownClient bool
	now       func() time.Time

	running atomic.Bool
	kick    chan struct{} // a token when targets changed: scrape new ones now

	mu      sync.Mutex        // guards targets and the publication of snap
	targets map[string]string // backend -> metrics URL
	snap    atomic.Pointer[map[string]TargetStatus]
}

var _ Source = (*Scraper)(nil)

// NewScraper returns a Scraper with no targets. Run reports a bad cfg. A
// nil logger discards.
func NewScraper(cfg ScraperConfig, logger *slog.Logger) *Scraper {
	cfg = cfg.WithDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Scraper{
		cfg:     cfg,
		logger:  logger,
		client:  cfg.Client,
		now:     time.Now,
		kick:    make(chan struct{}, 1),
		targets: map[string]string{},
	}
	if s.client == nil {
		s.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		s.ownClient = true
	}
	s.snap.Store(&map[string]TargetStatus{})
	return s
}

// SetTargets replaces the targets: backend gRPC address -> metrics URL,
// e.g. "http://triton-0:8002/metrics". A backend no longer listed, or
// listed with another URL, is forgotten at once (its history too: a new
// URL is another server); a new one is scraped without waiting for the
// next interval when Run is running.
func (s *Scraper) SetTargets(targets map[string]string) {
	s.mu.Lock()
	s.targets = maps.Clone(targets)
	old := *s.snap.Load()
	next := make(map[string]TargetStatus, len(s.targets))
	for backend, metricsURL := range s.targets {
		if st, ok := old[backend]; ok && st.URL == metricsURL {
			next[backend] = st
		} else {
			next[backend] = TargetStatus{Backend: backend, URL: metricsURL}
		}
	}
	s.snap.Store(&next)
	s.mu.Unlock()
	s.logger.Debug("metrics scrape targets set", "targets", len(targets))
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Stats returns backend's figures from its last successful scrape; ok is
// false when it is not a target, has not been scraped yet, or its last
// success is older than Stale.
func (s *Scraper) Stats(backend string) (Stats, bool) {
	st, ok := (*s.snap.Load())[backend]
	if !ok || !s.fresh(st.Stats) {
		return Stats{}, false
	}
	return st.Stats, true
}

// All returns the Stats of every target that Stats would report now.
func (s *Scraper) All() map[string]Stats {
	out := make(map[string]Stats)
	for backend, st := range *s.snap.Load() {
		if s.fresh(st.Stats) {
			out[backend] = st.Stats
		}
	}
	return out
}

// Status returns every target's status, stale or failing ones included,
// ordered by backend.
func (s *Scraper) Status() []TargetStatus {
	snap := *s.snap.Load()
	out := make([]TargetStatus, 0, len(snap))
	for _, st := range snap {
		st.Fresh = s.fresh(st.Stats)
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b TargetStatus) int { return cmp.Compare(a.Backend, b.Backend) })
	return out
}

func (s *Scraper) fresh(st Stats) bool {
	return !st.At.IsZero() && s.now().Sub(st.At) <= s.cfg.Stale
}

// Run scrapes every target every Interval, all targets concurrently, until
// ctx ends; then it returns nil once every scrape it started has finished.
// It returns an error at once if the config is invalid or Run is already
// running.
func (s *Scraper) Run(ctx context.Context) error {
	if err := s.cfg.Validate(); err != nil {
		return fmt.Errorf("gpu: %w", config.Rename(err, func(f string) string { return "ScraperConfig." + f }))
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer s.running.Store(false)
	if s.ownClient {
		defer s.client.CloseIdleConnections()
	}
	states := make(map[string]*scrapeState)
	ticker := time.NewTicker(s.cfg.Interval)
	defer ticker.Stop()
	s.round(ctx, states, false)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			s.round(ctx, states, false)
		case <-s.kick:
			s.round(ctx, states, true)
		}
	}
}

// scrapeState is one target's history. Run's goroutine owns the map of
// them; during a round each one is touched by its own scrape only.
type scrapeState struct {
	backend, url string
	tried        bool
	prev, last   *tritonSample
	status       TargetStatus
}

// round scrapes the targets (only those never tried when onlyNew) and
// publishes the outcome.
func (s *Scraper) round(ctx context.Context, states map[string]*scrapeState, onlyNew bool) {
	s.mu.Lock()
	targets := s.targets
	s.mu.Unlock()
	for backend, st := range states {
		if targets[backend] != st.url {
			delete(states, backend)
		}
	}
	for backend, metricsURL := range targets {
		if _, ok := states[backend]; !ok {
			states[backend] = &scrapeState{backend: backend, url: metricsURL,
				status: TargetStatus{Backend: backend, URL: metricsURL}}
		}
	}
	var wg sync.WaitGroup
	for _, st := range states {
		if onlyNew && st.tried {
			continue
		}
		wg.Go(func() { s.scrapeTarget(ctx, st) })
	}
	wg.Wait()
	s.publish(states)
}

// publish stores the statuses of states that are still targets, with the
// URL they were scraped at; a target set meanwhile keeps the entry
// SetTargets gave it.
func (s *Scraper) publish(states map[string]*scrapeState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.snap.Load()
	next := make(map[string]TargetStatus, len(s.targets))
	for backend, metricsURL := range s.targets {
		if st, ok := states[backend]; ok && st.url == metricsURL {
			next[backend] = st.status
		} else if st, ok := old[backend]; ok {
			next[backend] = st // set by SetTargets during the round
		} else {
			next[backend] = TargetStatus{Backend: backend, URL: metricsURL}
		}
	}
	s.snap.Store(&next)
}

func (s *Scraper) scrapeTarget(ctx context.Context, st *scrapeState) {
	st.tried = true
	reqCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	sample, err := s.fetch(reqCtx, st.url)
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down: not the target's fault
		}
		if st.status.Failures == 0 {
			s.logger.Warn("Triton metrics scrape failed", "backend", st.backend, "url", st.url, "error", err)
		} else {
			s.logger.Debug("Triton metrics scrape failed again", "backend", st.backend, "url", st.url,
				"failures", st.status.Failures+1, "error", err)
		}
		st.status.LastError, st.status.LastErrorAt = err, s.now()
		st.status.Failures++
		return
	}
	if st.status.Failures > 0 {
		s.logger.Info("Triton metrics scrape recovered", "backend", st.backend, "url", st.url,
			"failures", st.status.Failures)
	}
	st.prev, st.last = st.last, sample
	st.status.Stats = tritonStats(st.prev, st.last)
	st.status.LastError, st.status.Failures = nil, 0
}

// fetch GETs and parses one metrics page.
func (s *Scraper) fetch(ctx context.Context, endpoint string) (*tritonSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("gpu: scrape %s: %w", endpoint, err)
	}
	// The text format, which Triton always serves; a Prometheus client
	// library server would otherwise be free to pick another.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gpu: scrape %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // let the connection be reused
		return nil, fmt.Errorf("%w: %s: %s", ErrBadStatus, endpoint, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("gpu: scrape %s: %w", endpoint, err)
	}
	if int64(len(body)) > s.cfg.MaxBytes {
		return nil, fmt.Errorf("%w: %s: over %d bytes", ErrTooLarge, endpoint, s.cfg.MaxBytes)
	}
	sample, err := parseTritonMetrics(bytes.NewReader(body), s.now())
	if err != nil {
		return nil, fmt.Errorf("gpu: scrape %s: %w", endpoint, err)
	}
	if !sample.hasPending && len(sample.counters) == 0 && len(sample.devices) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoTritonMetrics, endpoint)
	}
	return sample, nil
}
