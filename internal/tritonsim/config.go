package tritonsim

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

// Defaults of Config.
const (
	DefaultGRPCAddr          = "127.0.0.1:8001" // Triton's gRPC port
	DefaultMetricsAddr       = "127.0.0.1:8002" // Triton's metrics port
	DefaultOutputDatatype    = tensor.TypeFP16
	DefaultInstances         = 1
	DefaultQueryMaxBatchSize = 64 // max_batch_size in deployments/triton
	DefaultImageMaxBatchSize = 16
	DefaultSpeed             = 1.0
	DefaultLayout            = LayoutShared
)

// Limits that keep a mistyped flag from asking for absurd resources.
const (
	maxInstances    = 1024
	maxBatchSizeCap = 4096
	maxStall        = time.Hour
	maxSigma        = 3.0 // exp(3) is a 20x factor: already absurd for a GPU
)

// Cost is a straight-line batch cost, Base + n*PerItem, before Speed: the
// shape of the router's prior. It overrides the profile's curve for its
// model when set; see Config.QueryCurve for any other shape.
type Cost struct {
	// Base is paid once per batch (kernel launches, the fixed part of a
	// forward pass).
	Base time.Duration
	// PerItem is paid for every item of the batch.
	PerItem time.Duration
}

// Config configures a Server. The zero value of every field means its
// default, so Config{} is a simulator on Triton's usual ports.
type Config struct {
	// GRPCAddr is the gRPC listen address; a ":0" port picks a free one
	// (see Server.GRPCAddr). Default "127.0.0.1:8001".
	GRPCAddr string
	// MetricsAddr is the HTTP listen address of /metrics, /v2/health/* and
	// /simulator/faults. Default "127.0.0.1:8002".
	MetricsAddr string
	// TLS, when set, puts the gRPC listener under TLS (mutual TLS if it
	// verifies client certificates), as Triton's --grpc-use-ssl and
	// --grpc-use-ssl-mutual do. Default nil: clear text. The metrics
	// listener stays clear, as Triton's does.
	TLS *tls.Config
	// Model names the models and tensors; zero fields take
	// model.Config.WithDefaults' defaults (Dimension 128). ModelVersion is
	// ignored: the simulator serves version "1" of each model and answers
	// NotFound for any other explicit version.
	Model model.Config
	// OutputDatatype is the datatype of the embeddings output, "FP16" or
	// "FP32". num_tokens is always INT32 [batch, 1]. Default "FP16".
	OutputDatatype string
	// Instances is the number of instances per model (instance_group
	// count); each runs one batch at a time. Where they run is Layout's
	// business. Default 1.
	Instances int
	// Layout places the instances on simulated GPUs: LayoutShared (one GPU
	// for every instance of both models, whose batches queue for it in
	// turn) or LayoutSeparate (a GPU per instance). Default LayoutShared.
	Layout string
	// DisableDynamicBatching turns Triton's dynamic batcher off: every
	// request then executes as a batch of its own. Queue policy and
	// priorities still apply. Default false: on, as in
	// deployments/triton/model_repository.
	DisableDynamicBatching bool
	// QueryBatching and ImageBatching are the models' dynamic_batching
	// blocks. A zero Batching means the block of the shipped model
	// repository (RepositoryBatching); any other value is taken as
	// config.pbtxt would be, zero fields being Triton's defaults.
	QueryBatching, ImageBatching Batching
	// MaxQueueSize, when positive, overrides max_queue_size in every queue
	// policy of both models. A request beyond it fails with Unavailable
	// "Exceeds maximum queue size". Default 0: the Batching's own.
	MaxQueueSize int
	// QueryMaxBatchSize is the query model's max_batch_size; a larger
	// request fails with InvalidArgument. Default 64.
	QueryMaxBatchSize int
	// ImageMaxBatchSize is the image model's max_batch_size. Default 16.
	ImageMaxBatchSize int
	// Profile names the simulated GPU whose cost curves apply (see
	// Profiles). Default DefaultProfile.
	Profile string
	// QueryCurve and ImageCurve, when set, replace the profile's curve for
	// their model.
	QueryCurve, ImageCurve Curve
	// QueryCost and ImageCost, when either field is set, replace the
	// model's curve with a straight line; they predate curves and take
	// precedence over QueryCurve and ImageCurve.
	QueryCost, ImageCost Cost
	// Speed divides every cost: 2 is a GPU twice as fast, 0.33 three times
	// slower. Default 1.
	Speed float64
	// JitterSigma is the sigma of the multiplicative lognormal jitter of
	// every batch's duration (mean-preserving: the mean cost is the
	// curve's). 0 is none. Default 0.
	JitterSigma float64
	// StallProbability is the chance that a batch stalls, adding
	// StallDuration to it. Default 0.
	StallProbability float64
	// StallDuration is a stall's extra time. Default 0.
	StallDuration time.Duration
	// Seed seeds the jitter and stalls: a batch's draw depends only on the
	// seed, its model and its number among that model's batches. Default 0.
	Seed uint64
	// SummaryLatencies adds Triton's latency summaries to /metrics
	// (nv_inference_queue_summary_us and its siblings: quantiles per
	// model), as tritonserver --metrics-config summary_latencies=true does.
	// Default false, as in Triton.
	SummaryLatencies bool
	// Clock is the time source of the batchers and devices; nil is the
	// real clock. For tests.
	Clock Clock
	// Faults are the faults in force at start; see Server.SetFaults.
	// Default none.
	Faults Faults
	// StopAfter, when positive, makes the simulator crash (a hard Stop, as
	// if the process died) when the StopAfter-th ModelInfer call arrives;
	// that call and every call in flight fail. Server.Done tells when it
	// has happened. For fault drills. Default 0: never.
	StopAfter int
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.GRPCAddr = cmp.Or(c.GRPCAddr, DefaultGRPCAddr)
	c.MetricsAddr = cmp.Or(c.MetricsAddr, DefaultMetricsAddr)
	c.Model = c.Model.WithDefaults()
	c.OutputDatatype = cmp.Or(c.OutputDatatype, DefaultOutputDatatype)
	c.Instances = cmp.Or(c.Instances, DefaultInstances)
	c.QueryMaxBatchSize = cmp.Or(c.QueryMaxBatchSize, DefaultQueryMaxBatchSize)
	c.ImageMaxBatchSize = cmp.Or(c.ImageMaxBatchSize, DefaultImageMaxBatchSize)
	c.Speed = cmp.Or(c.Speed, DefaultSpeed)
	c.Layout = cmp.Or(c.Layout, DefaultLayout)
	c.Profile = cmp.Or(c.Profile, DefaultProfile)
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	return c
}

// Validate names every bad field of c, after defaults.
func (c Config) Validate() error {
	c = c.WithDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for _, a := range []struct{ name, addr string }{{"grpc addr", c.GRPCAddr}, {"metrics addr", c.MetricsAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			bad("%s %q: %v", a.name, a.addr, err)
		}
	}
	if c.GRPCAddr == c.MetricsAddr && !hasZeroPort(c.GRPCAddr) {
		bad("grpc addr and metrics addr are both %q", c.GRPCAddr)
	}
	if err := c.Model.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("model: %w", err))
	}
	if c.Model.QueryModel == c.Model.ImageModel {
		bad("model: query model and image model are both %q", c.Model.QueryModel)
	}
	if c.OutputDatatype != tensor.TypeFP16 && c.OutputDatatype != tensor.TypeFP32 {
		bad("output datatype %q: want %q or %q", c.OutputDatatype, tensor.TypeFP16, tensor.TypeFP32)
	}
	if c.Instances < 1 || c.Instances > maxInstances {
		bad("instances %d: want 1 to %d", c.Instances, maxInstances)
	}
	if c.Layout != LayoutShared && c.Layout != LayoutSeparate {
		bad("layout %q: want %q or %q", c.Layout, LayoutShared, LayoutSeparate)
	}
	if c.MaxQueueSize < 0 {
		bad("max queue size %d: want 0 (the model config's) or more", c.MaxQueueSize)
	}
	for _, b := range []struct {
		name string
		n    int
	}{{"query max batch size", c.QueryMaxBatchSize}, {"image max batch size", c.ImageMaxBatchSize}} {
		if b.n < 1 || b.n > maxBatchSizeCap {
			bad("%s %d: want 1 to %d", b.name, b.n, maxBatchSizeCap)
		}
	}
	if !(c.Speed > 0) || math.IsInf(c.Speed, 0) {
		bad("speed %v: want a finite number above 0", c.Speed)
	}
	for _, k := range []struct {
		name string
		cost Cost
	}{{"query cost", c.QueryCost}, {"image cost", c.ImageCost}} {
		if k.cost.Base < 0 || k.cost.PerItem < 0 {
			bad("%s %v + %v per item: want no negative duration", k.name, k.cost.Base, k.cost.PerItem)
		}
	}
	if _, ok := profiles[c.Profile]; !ok {
		bad("profile %q: want one of %v", c.Profile, ProfileNames())
	}
	for _, k := range []struct {
		name  string
		curve Curve
	}{{"query curve", c.QueryCurve}, {"image curve", c.ImageCurve}} {
		if len(k.curve) > 0 {
			if err := k.curve.validate(); err != nil {
				bad("%s %s: %v", k.name, k.curve, err)
			}
		}
	}
	if !(c.JitterSigma >= 0 && c.JitterSigma <= maxSigma) {
		bad("jitter sigma %v: want 0 (none) to %v", c.JitterSigma, maxSigma)
	}
	if !(c.StallProbability >= 0 && c.StallProbability <= 1) {
		bad("stall probability %v: want 0 to 1", c.StallProbability)
	}
	if c.StallDuration < 0 || c.StallDuration > maxStall {
		bad("stall duration %v: want 0 to %v", c.StallDuration, maxStall)
	}
	for _, b := range []struct {
		name string
		k    model.Kind
	}{{"query batching", model.Query}, {"image batching", model.Image}} {
		if err := c.batching(b.k).validate(c.maxBatchSize(b.k)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b.name, err))
		}
	}
	if err := c.Faults.validate(c.Model); err != nil {
		errs = append(errs, fmt.Errorf("faults: %w", err))
	}
	if c.StopAfter < 0 {
		bad("stop after %d: want 0 (never) or more", c.StopAfter)
	}
	return errors.Join(errs...)
}

// hasZeroPort reports whether addr asks the system to pick a port, in which
// case two listeners on the same host do not collide.
func hasZeroPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

// curve is kind's cost curve before Speed: QueryCost/ImageCost if set,
// else QueryCurve/ImageCurve if set, else the profile's.
func (c Config) curve(k model.Kind) Curve {
	cost, curve, prof := c.QueryCost, c.QueryCurve, profiles[c.Profile].Query
	if k == model.Image {
		cost, curve, prof = c.ImageCost, c.ImageCurve, profiles[c.Profile].Image
	}
	switch {
	case cost != (Cost{}):
		return Line(cost.Base, cost.PerItem)
	case len(curve) > 0:
		return curve
	}
	return prof
}

// BatchDuration is the cost model without jitter, stalls or faults: how
// long a batch of n items of kind occupies its device, curve(n)/Speed.
func (c Config) BatchDuration(k model.Kind, n int) time.Duration {
	c = c.WithDefaults()
	return time.Duration(float64(c.curve(k).At(n)) / c.Speed)
}

// batching is kind's effective dynamic_batching block: the configured or
// the repository's, with MaxQueueSize applied.
func (c Config) batching(k model.Kind) Batching {
	b := c.QueryBatching
	if k == model.Image {
		b = c.ImageBatching
	}
	if b.isZero() {
		b = RepositoryBatching(k)
	}
	if c.MaxQueueSize > 0 {
		b.DefaultQueuePolicy.MaxQueueSize = c.MaxQueueSize
		overrides := make(map[int]QueuePolicy, len(b.PriorityQueuePolicy))
		for level, p := range b.PriorityQueuePolicy {
			p.MaxQueueSize = c.MaxQueueSize
			overrides[level] = p
		}
		b.PriorityQueuePolicy = overrides
	}
	return b
}

// costModel is the configured cost model.
func (c Config) costModel() *costModel {
	return &costModel{
		query: c.curve(model.Query), image: c.curve(model.Image), speed: c.Speed,
		sigma: c.JitterSigma, stallP: c.StallProbability, stallDuration: c.StallDuration, seed: c.Seed,
	}
}

// maxBatchSize is kind's max_batch_size.
func (c Config) maxBatchSize(k model.Kind) int {
	if k == model.Image {
		return c.ImageMaxBatchSize
	}
	return c.QueryMaxBatchSize
}
