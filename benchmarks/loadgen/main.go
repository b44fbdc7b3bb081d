// Command loadgen offers the gateway an open-loop load: calls arrive as a
// Poisson process of a given rate, whether or not earlier calls have been
// answered, which is how independent clients behave and what ghz's --rps
// (evenly spaced calls) is not. It speaks the gateway's gRPC API or its REST
// mapping, mixes query calls and page-image calls in given shares, and
// writes one JSON report: the achieved arrival rate, p50/p95/p99 latency and
// throughput per call kind, and errors by code.
//
// It sends only to loopback addresses and stops by itself after -duration
// (plus at most -drain for the calls still in flight). The arrivals and
// payloads depend only on -seed, so runs with one seed offer the same load.
//
// Usage:
//
//	loadgen -protocol grpc -target 127.0.0.1:9090 -rate 200 -duration 30s \
//	  -mix query=90,image=10 -pages-per-call 4 -seed 1 -out result.json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits that keep a mistyped flag from asking for absurd loads.
const (
	maxRate     = 100_000
	maxDuration = time.Hour
	maxItems    = 1024
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type options struct {
	protocol, target, out string
	label                 string
	rate                  float64
	duration, timeout     time.Duration
	drain                 time.Duration
	mix                   mix
	queriesPerCall        int
	pagesPerCall          int
	pageW, pageH          int
	seed                  uint64
	mixBlock              int
	maxOutstanding        int
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var mixText string
	fs.StringVar(&o.protocol, "protocol", "grpc", "`protocol`: grpc (the gateway's gRPC API) or rest (its REST mapping)")
	fs.StringVar(&o.target, "target", "", "gateway `address`: host:port for grpc (e.g. 127.0.0.1:9090), a base URL for rest (e.g. http://127.0.0.1:8080); loopback only")
	fs.Float64Var(&o.rate, "rate", 0, "mean arrival `rate`, calls per second (Poisson)")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "`duration` of the arrivals")
	fs.StringVar(&mixText, "mix", "query=1", "call `shares` as kind=weight pairs, kinds query and image, e.g. query=90,image=10")
	fs.IntVar(&o.queriesPerCall, "queries-per-call", 1, "`number` of queries in each query call")
	fs.IntVar(&o.pagesPerCall, "pages-per-call", 4, "`number` of page images in each image call")
	pageSize := fs.String("page-size", "32x32", "`WxH` pixels of each page image (large pages are noise, drawn from 8 distinct pages)")
	fs.Uint64Var(&o.seed, "seed", 1, "`seed` of the arrival times, call kinds and payloads")
	fs.IntVar(&o.mixBlock, "mix-block", 0, "deal call kinds in blocks of this many calls, each holding the mix's shares exactly (rounded), so that a short run offers the mix asked for; 0 draws each call's kind on its own")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "`deadline` of each call")
	fs.DurationVar(&o.drain, "drain", 30*time.Second, "how long to wait, after the last arrival, for calls in flight before canceling them")
	fs.IntVar(&o.maxOutstanding, "max-outstanding", 4096, "calls in flight beyond which an arrival is dropped (counted, not sent) rather than let the generator itself run out of memory")
	fs.StringVar(&o.label, "label", "", "free `text` copied into the report, e.g. the policy and round under test")
	fs.StringVar(&o.out, "out", "-", "`file` for the JSON report; - is standard output")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if fs.NArg() > 0 {
		bad("unexpected arguments %q: loadgen takes only flags", fs.Args())
	}
	if o.protocol != "grpc" && o.protocol != "rest" {
		bad("-protocol %q: want grpc or rest", o.protocol)
	}
	if o.target == "" {
		bad("-target: required")
	}
	if !(o.rate > 0 && o.rate <= maxRate) {
		bad("-rate %v: want above 0 and at most %d calls per second", o.rate, maxRate)
	}
	if o.duration <= 0 || o.duration > maxDuration {
		bad("-duration %v: want above 0 and at most %v", o.duration, maxDuration)
	}
	if _, err := fmt.Sscanf(*pageSize, "%dx%d", &o.pageW, &o.pageH); err != nil || o.pageW < 1 || o.pageH < 1 || o.pageW*o.pageH > 40_000_000 {
		bad("-page-size %q: want WxH, at least 1x1 and at most 40,000,000 pixels", *pageSize)
	}
	m, err := parseMix(mixText)
	if err != nil {
		bad("-mix: %v", err)
	}
	o.mix = m
	for name, n := range map[string]int{"-queries-per-call": o.queriesPerCall, "-pages-per-call": o.pagesPerCall} {
		if n < 1 || n > maxItems {
			bad("%s %d: want 1 to %d", name, n, maxItems)
		}
	}
	if o.timeout <= 0 || o.drain < 0 {
		bad("-timeout %v and -drain %v: want a positive timeout and a non-negative drain", o.timeout, o.drain)
	}
	if o.mixBlock < 0 || o.mixBlock > maxItems {
		bad("-mix-block %d: want 0 to %d", o.mixBlock, maxItems)
	}
	if o.maxOutstanding < 1 {
		bad("-max-outstanding %d: want at least 1", o.maxOutstanding)
	}
	return o, errors.Join(errs...)
}

// targetHost is the host part of the target, for the loopback check.
func targetHost(o options) (string, error) {
	addr := o.target
	if o.protocol == "rest" {
		u, err := url.Parse(o.target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", fmt.Errorf("-target %q: want a base URL such as http://127.0.0.1:8080", o.target)
		}
		addr = u.Host
		if u.Port() == "" {
			return u.Hostname(), nil
		}
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("-target %q: %w", o.target, err)
	}
	return host, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	host, err := targetHost(o)
	if err != nil {
		return err
	}
	if err := checkLoopback(ctx, host); err != nil {
		return err
	}
	queries := queryTexts(o.queriesPerCall)
	images, err := pageImages(o.pagesPerCall, o.pageW, o.pageH)
	if err != nil {
		return err
	}
	var s sender
	if o.protocol == "grpc" {
		s, err = newGRPCSender(o.target, queries, images)
	} else {
		s, err = newRESTSender(o.target, queries, images)
	}
	if err != nil {
		return err
	}
	defer s.close()

	arrivals := plan(o.rate, o.duration, o.mix, map[string]int{kindQuery: len(queries), kindImage: len(images)}, o.seed, o.mixBlock)
	rep := Report{
		Label: o.label, Protocol: o.protocol, Target: o.target, OfferedRate: o.rate, Duration: o.duration.String(),
		Mix: o.mix.String(), Seed: o.seed, Planned: len(arrivals), LoadAverageStart: loadAverage(),
	}
	rec := newRecorder()
	cpu0 := cpuSeconds()
	start, dropped, interrupted := offer(ctx, o, s, arrivals, rec)
	rep.ElapsedSeconds = time.Since(start).Seconds()
	rep.CPUSeconds = cpuSeconds() - cpu0
	rep.Dropped, rep.Interrupted = dropped, interrupted
	rep.LoadAverageEnd = loadAverage()
	items := map[string]int{}
	for kind := range o.mix {
		items[kind] = map[string]int{kindQuery: o.queriesPerCall, kindImage: o.pagesPerCall}[kind]
	}
	rec.fill(&rep, o.duration, items)
	for _, k := range rep.Kinds {
		rep.Sent += k.Sent
	}
	rep.AchievedRate = float64(rep.Sent) / o.duration.Seconds()
	return writeReport(rep, o.out, stdout)
}

// offer sends the arrivals on time, each call on its own goroutine, and
// waits for the answers (at most o.drain after the last arrival). It
// returns when it started, how many arrivals it dropped, and whether ctx
// ended it early.
func offer(ctx context.Context, o options, s sender, arrivals []arrival, rec *recorder) (time.Time, int, bool) {
	callCtx, cancelCalls := context.WithCancel(context.Background())
	defer cancelCalls()
	var wg sync.WaitGroup
	var mu sync.Mutex
	outstanding, dropped := 0, 0
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	interrupted := false
	for _, a := range arrivals {
		due := start.Add(a.at)
		if wait := time.Until(due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				interrupted = true
			}
		}
		if interrupted {
			break
		}
		mu.Lock()
		full := outstanding >= o.maxOutstanding
		if !full {
			outstanding++
		} else {
			dropped++
		}
		mu.Unlock()
		if full {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent := time.Now()
			c, cancel := context.WithTimeout(callCtx, o.timeout)
			code := s.send(c, a.kind, a.payload)
			cancel()
			rec.record(a.kind, code, time.Since(due), sent.Sub(due))
			mu.Lock()
			outstanding--
			mu.Unlock()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer.Reset(o.drain)
	select {
	case <-done:
	case <-timer.C:
		cancelCalls() // counted as Canceled
		<-done
	case <-ctx.Done():
		interrupted = true
		cancelCalls()
		<-done
	}
	return start, dropped, interrupted
}

func writeReport(rep Report, path string, stdout io.Writer) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// loadAverage is the 1-minute load average, or -1 where /proc/loadavg is
// not available.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return -1
	}
	f, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return -1
	}
	return f
}

// cpuSeconds is the process's CPU time so far, user and system; 0 where
// getrusage fails.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
