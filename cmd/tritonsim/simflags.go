package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
)

// registerCostFlags registers the GPU profile, cost curves, jitter, stalls
// and layout.
func registerCostFlags(fs *flag.FlagSet, errs *[]error, c *tritonsim.Config) {
	var names []string
	for _, p := range tritonsim.Profiles() {
		names = append(names, fmt.Sprintf("%s (%s)", p.Name, p.Description))
	}
	fs.StringVar(&c.Profile, "profile", c.Profile, "simulated GPU `name` whose cost curves apply: "+strings.Join(names, "; "))
	curveFlag(fs, errs, &c.QueryCurve, "query-cost-curve", "query batch cost `curve` replacing the profile's, as batch:duration points interpolated linearly, e.g. 1:12ms,8:13ms,64:48ms")
	curveFlag(fs, errs, &c.ImageCurve, "image-cost-curve", "page batch cost `curve` replacing the profile's, e.g. 1:80ms,4:160ms,16:830ms")
	floatFlag(fs, errs, &c.JitterSigma, "jitter-sigma", "`sigma` of the mean-preserving lognormal jitter multiplying every batch's duration; 0 is none")
	floatFlag(fs, errs, &c.StallProbability, "stall-probability", "`fraction` (0 to 1) of batches that stall for -stall-duration more")
	durationFlag(fs, errs, &c.StallDuration, "stall-duration", "extra `duration` of a stalled batch")
	fs.Var(&lenient[uint64]{p: &c.Seed, name: "seed", errs: errs, parse: func(s string) (uint64, error) {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, errors.New("not a non-negative integer")
		}
		return n, nil
	}, format: func(n uint64) string { return strconv.FormatUint(n, 10) }}, "seed", "`seed` of the jitter and stalls: the same seed gives every model's n-th batch the same draw")
	fs.StringVar(&c.Layout, "gpu-layout", c.Layout, "`layout` of the instances on simulated GPUs: shared (one GPU for both models, whose batches queue for it in turn) or separate (a GPU per instance)")
	fs.BoolVar(&c.SummaryLatencies, "summary-latencies", false, "add Triton's latency summaries (nv_inference_queue_summary_us and others: quantiles per model) to /metrics, as tritonserver --metrics-config summary_latencies=true does")
	fs.BoolFunc("dynamic-batching", "Triton's dynamic batcher, merging queued requests into one execution (default true; -dynamic-batching=false runs every request alone)", func(s string) error {
		on, err := strconv.ParseBool(s)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("-dynamic-batching %q: not a boolean", s))
			return nil
		}
		c.DisableDynamicBatching = !on
		return nil
	})
}

// registerBatchingFlags registers one model's dynamic_batching settings,
// whose defaults are the shipped model repository's.
func registerBatchingFlags(fs *flag.FlagSet, errs *[]error, k model.Kind, b *tritonsim.Batching) {
	*b = tritonsim.RepositoryBatching(k)
	prefix, what, aWhat := "query", "query", "a query"
	if k == model.Image {
		prefix, what, aWhat = "image", "image", "an image"
	}
	name := func(s string) string { return prefix + "-" + s }
	fs.Var(&lenient[[]int]{p: &b.PreferredBatchSizes, name: name("preferred-batch-sizes"), errs: errs, parse: parseInts, format: formatInts},
		name("preferred-batch-sizes"), "comma-separated `sizes` at which "+aWhat+" batch runs at once (preferred_batch_size); empty for none")
	durationFlag(fs, errs, &b.MaxQueueDelay, name("max-queue-delay"), "how long the first "+what+" request of a batch may wait for others (max_queue_delay_microseconds)")
	intFlag(fs, errs, &b.PriorityLevels, name("priority-levels"), "`number` of priority levels of the "+what+" model; 0 ignores the priority parameter")
	intFlag(fs, errs, &b.DefaultPriorityLevel, name("default-priority-level"), "priority `level` of "+what+" requests that send none; 0 is the lowest")
	fs.StringVar(&b.DefaultQueuePolicy.TimeoutAction, name("timeout-action"), b.DefaultQueuePolicy.TimeoutAction, "`action` on "+aWhat+" request whose queue timeout passes: REJECT or DELAY")
	durationFlag(fs, errs, &b.DefaultQueuePolicy.DefaultTimeout, name("default-timeout"), "queue timeout of every "+what+" request (default_timeout_microseconds); 0 is none")
	fs.BoolVar(&b.DefaultQueuePolicy.AllowTimeoutOverride, name("allow-timeout-override"), b.DefaultQueuePolicy.AllowTimeoutOverride, "let "+aWhat+" request's timeout parameter shorten the default timeout")
	intFlag(fs, errs, &b.DefaultQueuePolicy.MaxQueueSize, name("max-queue-size"), "`number` of queued "+what+" requests before Unavailable \"Exceeds maximum queue size\"; 0 is unbounded")
}

// settled keeps a Batching that the flags emptied from meaning "the
// repository's" (the library's reading of a zero Batching): REJECT is
// Triton's default action, so spelling it out changes nothing else.
func settled(b tritonsim.Batching) tritonsim.Batching {
	if b.DefaultQueuePolicy.TimeoutAction == "" {
		b.DefaultQueuePolicy.TimeoutAction = tritonsim.TimeoutReject
	}
	return b
}

func parseInts(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", part)
		}
		out = append(out, n)
	}
	return out, nil
}

func formatInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func curveFlag(fs *flag.FlagSet, errs *[]error, p *tritonsim.Curve, name, usage string) {
	fs.Var(&lenient[tritonsim.Curve]{p: p, name: name, errs: errs, parse: tritonsim.ParseCurve,
		format: tritonsim.Curve.String}, name, usage)
}
