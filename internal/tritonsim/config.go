package tritonsim

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/tensor"
	"github.com/morphik-org/colpali-gateway/model"
)

// Defaults of Config. The costs are rough figures for ColPali (PaliGemma 3B)
// on one H100: a page is ~1030 tokens through the vision tower and the
// language model, a query ~20 tokens through the language model only.
const (
	DefaultGRPCAddr          = "127.0.0.1:8001" // Triton's gRPC port
	DefaultMetricsAddr       = "127.0.0.1:8002" // Triton's metrics port
	DefaultOutputDatatype    = tensor.TypeFP16
	DefaultInstances         = 1
	DefaultQueryMaxBatchSize = 64
	DefaultImageMaxBatchSize = 16
	DefaultSpeed             = 1.0
	DefaultQueryBaseCost     = 5 * time.Millisecond
	DefaultQueryItemCost     = 300 * time.Microsecond
	DefaultImageBaseCost     = 15 * time.Millisecond
	DefaultImageItemCost     = 25 * time.Millisecond
)

// Limits that keep a mistyped flag from asking for absurd resources.
const (
	maxInstances    = 1024
	maxBatchSizeCap = 4096
)

// Cost is the simulated GPU time of one batch: Base + n*PerItem for n items,
// before Config.Speed.
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
	// Model names the models and tensors; zero fields take
	// model.Config.WithDefaults' defaults (Dimension 128). ModelVersion is
	// ignored: the simulator serves version "1" of each model and answers
	// NotFound for any other explicit version.
	Model model.Config
	// OutputDatatype is the datatype of the embeddings output, "FP16" or
	// "FP32". num_tokens is always INT32 [batch, 1]. Default "FP16".
	OutputDatatype string
	// Instances is the number of simulated GPU instances per model; each
	// runs one batch at a time. Default 1.
	Instances int
	// MaxQueueSize bounds the requests waiting for an instance, per model;
	// a request beyond it fails with Unavailable "Exceeds maximum queue
	// size". 0 means unbounded, Triton's default. Default 0.
	MaxQueueSize int
	// QueryMaxBatchSize is the query model's max_batch_size; a larger batch
	// fails with InvalidArgument. Default 64.
	QueryMaxBatchSize int
	// ImageMaxBatchSize is the image model's max_batch_size. Default 16.
	ImageMaxBatchSize int
	// Speed divides every cost: 2 is a GPU twice as fast, 0.33 three times
	// slower. Default 1.
	Speed float64
	// QueryCost is the query model's cost. A Cost with both fields zero
	// means the default, 5ms + 0.3ms per query.
	QueryCost Cost
	// ImageCost is the image model's cost. A Cost with both fields zero
	// means the default, 15ms + 25ms per page.
	ImageCost Cost
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
	c.QueryCost = cmp.Or(c.QueryCost, Cost{Base: DefaultQueryBaseCost, PerItem: DefaultQueryItemCost})
	c.ImageCost = cmp.Or(c.ImageCost, Cost{Base: DefaultImageBaseCost, PerItem: DefaultImageItemCost})
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
	if c.MaxQueueSize < 0 {
		bad("max queue size %d: want 0 (unbounded) or more", c.MaxQueueSize)
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

// BatchDuration is the cost model alone: how long a batch of n items of kind
// occupies an instance, (Base + n*PerItem)/Speed. Faults.ExtraLatency is not
// included.
func (c Config) BatchDuration(k model.Kind, n int) time.Duration {
	c = c.WithDefaults()
	cost := c.QueryCost
	if k == model.Image {
		cost = c.ImageCost
	}
	d := float64(cost.Base) + float64(n)*float64(cost.PerItem)
	return time.Duration(d / c.Speed)
}

// maxBatchSize is kind's max_batch_size.
func (c Config) maxBatchSize(k model.Kind) int {
	if k == model.Image {
		return c.ImageMaxBatchSize
	}
	return c.QueryMaxBatchSize
}
