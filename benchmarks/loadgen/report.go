package main

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Report is what a run measured; it is written as JSON.
type Report struct {
	Label    string `json:"label,omitempty"`
	Protocol string `json:"protocol"`
	Target   string `json:"target"`
	// OfferedRate is the Poisson rate asked for, calls per second.
	OfferedRate float64 `json:"offered_rate"`
	Duration    string  `json:"duration"`
	Mix         string  `json:"mix"`
	Seed        uint64  `json:"seed"`
	// Planned calls, and those sent: a call is not sent when
	// -max-outstanding calls are already in flight (Dropped), so an
	// overloaded target shows up as such rather than slowing the arrivals.
	Planned int `json:"planned"`
	Sent    int `json:"sent"`
	Dropped int `json:"dropped"`
	// AchievedRate is Sent over the planned duration: the arrival rate
	// actually offered.
	AchievedRate float64 `json:"achieved_rate"`
	// ElapsedSeconds runs from the first planned arrival to the last
	// answer (or the end of the drain).
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// SendLagP99Ms is how late the generator sent calls, 99th percentile:
	// if it is large, the machine running the generator was the limit.
	SendLagP99Ms float64 `json:"send_lag_p99_ms"`
	// LoadAverage is the machine's 1-minute load average at the start and
	// at the end (Linux), so that a run on a busy machine can be spotted.
	LoadAverageStart float64 `json:"load_average_start"`
	LoadAverageEnd   float64 `json:"load_average_end"`
	// CPUSeconds is the generator's own CPU time (user and system, from
	// getrusage) over the run: on a machine it shares with the server, the
	// share of the CPU the server did not get.
	CPUSeconds  float64 `json:"cpu_seconds"`
	Interrupted bool    `json:"interrupted,omitempty"`
	// Kinds has the figures of each call kind; Errors counts every failed
	// call by code over all kinds.
	Kinds  map[string]*KindReport `json:"kinds"`
	Errors map[string]int         `json:"errors"`
	// ErrorLatency is the latency of failed calls by code, over all
	// kinds, from the call's send (not its planned arrival): how fast a
	// refusal comes back.
	ErrorLatency map[string]Latency `json:"error_latency_ms,omitempty"`
}

// Latency summarises latencies, in milliseconds.
type Latency struct {
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// KindReport is one call kind's figures. Latencies are of successful calls,
// measured from the call's planned arrival time (so that a generator that
// fell behind does not hide the wait), in milliseconds.
type KindReport struct {
	ItemsPerCall int            `json:"items_per_call"`
	Sent         int            `json:"sent"`
	OK           int            `json:"ok"`
	Throughput   float64        `json:"throughput_ok_per_s"`
	P50Ms        float64        `json:"p50_ms"`
	P95Ms        float64        `json:"p95_ms"`
	P99Ms        float64        `json:"p99_ms"`
	MaxMs        float64        `json:"max_ms"`
	MeanMs       float64        `json:"mean_ms"`
	Errors       map[string]int `json:"errors"`
}

// recorder gathers outcomes from the calls' goroutines.
type recorder struct {
	mu        sync.Mutex
	latencies map[string][]time.Duration
	sent      map[string]int
	errors    map[string]map[string]int
	errLat    map[string][]time.Duration // by code
	lags      []time.Duration
}

func newRecorder() *recorder {
	return &recorder{latencies: map[string][]time.Duration{}, sent: map[string]int{}, errors: map[string]map[string]int{}, errLat: map[string][]time.Duration{}}
}

func (r *recorder) record(kind, code string, latency, lag time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent[kind]++
	r.lags = append(r.lags, lag)
	if code == "OK" {
		r.latencies[kind] = append(r.latencies[kind], latency)
		return
	}
	if r.errors[kind] == nil {
		r.errors[kind] = map[string]int{}
	}
	r.errors[kind][code]++
	// From the send, not the planned arrival: how fast the server
	// answered, whatever the generator's own lag.
	r.errLat[code] = append(r.errLat[code], latency-lag)
}

// fill completes rep from the recorded outcomes over the planned window d.
func (r *recorder) fill(rep *Report, d time.Duration, itemsPerCall map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Kinds, rep.Errors = map[string]*KindReport{}, map[string]int{}
	for kind, n := range itemsPerCall {
		lat := slices.Clone(r.latencies[kind])
		slices.Sort(lat)
		k := &KindReport{ItemsPerCall: n, Sent: r.sent[kind], OK: len(lat), Errors: map[string]int{}}
		k.Throughput = float64(len(lat)) / d.Seconds()
		k.P50Ms, k.P95Ms, k.P99Ms = ms(percentile(lat, 50)), ms(percentile(lat, 95)), ms(percentile(lat, 99))
		if len(lat) > 0 {
			k.MaxMs = ms(lat[len(lat)-1])
			var sum time.Duration
			for _, l := range lat {
				sum += l
			}
			k.MeanMs = ms(sum / time.Duration(len(lat)))
		}
		for code, c := range r.errors[kind] {
			k.Errors[code] = c
			rep.Errors[code] += c
		}
		rep.Kinds[kind] = k
	}
	for code, lat := range r.errLat {
		lat = slices.Clone(lat)
		slices.Sort(lat)
		if rep.ErrorLatency == nil {
			rep.ErrorLatency = map[string]Latency{}
		}
		rep.ErrorLatency[code] = Latency{P50Ms: ms(percentile(lat, 50)), P99Ms: ms(percentile(lat, 99)), MaxMs: ms(lat[len(lat)-1])}
	}
	lags := slices.Clone(r.lags)
	slices.Sort(lags)
	rep.SendLagP99Ms = ms(percentile(lags, 99))
}

// percentile is the nearest-rank p-th percentile of sorted; 0 if empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// ms is d in milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
