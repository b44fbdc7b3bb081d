package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/morphik-org/colpali-gateway/internal/cli"
	"github.com/morphik-org/colpali-gateway/internal/tlsreload"
	"github.com/morphik-org/colpali-gateway/internal/tritonsim"
	"github.com/morphik-org/colpali-gateway/model"
)

const usageHeader = `tritonsim is a simulator of NVIDIA Triton Inference Server for development and
tests. It is not Triton and runs no model: it serves the ColPali query and image
models over Triton's gRPC protocol (KServe v2) with deterministic embeddings,
Triton's dynamic batcher (settings of deployments/triton/model_repository), one
simulated GPU shared by both models, batch costs from a GPU profile or curve
with seeded jitter and stalls, Triton's /metrics names, and faults on demand.

Usage: tritonsim [flags]

Faults can be changed while it runs:
  curl -d '{"extra_latency":"50ms","error_rate":0.2,"not_ready":["colpali_image"]}' \
    http://127.0.0.1:8002/simulator/faults

Flags:
`

// options is everything the command line sets.
type options struct {
	cfg tritonsim.Config
	log cli.LogFlags
	// tls are the -tls-* files, read into cfg.TLS by main.
	tls tlsreload.Config
}

// parseFlags parses args and validates the result. Every bad value is
// reported, all at once: a typed flag records its parse error and parsing
// goes on, then the configuration's own validation adds its findings.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("tritonsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}

	var errs []error
	def := tritonsim.Config{}.WithDefaults()
	o := options{cfg: def}
	c := &o.cfg

	fs.StringVar(&c.GRPCAddr, "grpc-addr", def.GRPCAddr, "gRPC listen `address` (Triton's gRPC port is 8001); port 0 picks a free one")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", def.MetricsAddr, "HTTP `address` of /metrics, /v2/health/* and /simulator/faults (Triton's metrics port is 8002)")
	fs.StringVar(&c.Model.QueryModel, "query-model", def.Model.QueryModel, "query model `name`")
	fs.StringVar(&c.Model.ImageModel, "image-model", def.Model.ImageModel, "image model `name`")
	fs.StringVar(&c.Model.QueryInput, "query-input", def.Model.QueryInput, "query model's BYTES input `name`")
	fs.StringVar(&c.Model.ImageInput, "image-input", def.Model.ImageInput, "image model's BYTES input `name`")
	fs.StringVar(&c.Model.EmbeddingsOutput, "embeddings-output", def.Model.EmbeddingsOutput, "embeddings output `name`")
	fs.StringVar(&c.Model.NumTokensOutput, "num-tokens-output", def.Model.NumTokensOutput, "per-item token count output `name`")
	intFlag(fs, &errs, &c.Model.Dimension, "dimension", "`length` of every embedding vector")
	fs.StringVar(&c.OutputDatatype, "output-datatype", def.OutputDatatype, "embeddings `datatype`: FP16 or FP32")
	intFlag(fs, &errs, &c.Instances, "instances", "`number` of instances per model (instance_group count), each running one batch at a time; see -gpu-layout")
	intFlag(fs, &errs, &c.MaxQueueSize, "max-queue-size", "`number` of queued requests per model and priority level before Unavailable \"Exceeds maximum queue size\", overriding -query-max-queue-size and -image-max-queue-size; 0 keeps theirs")
	intFlag(fs, &errs, &c.QueryMaxBatchSize, "query-max-batch-size", "largest query batch `size`")
	intFlag(fs, &errs, &c.ImageMaxBatchSize, "image-max-batch-size", "largest image batch `size`")
	floatFlag(fs, &errs, &c.Speed, "speed", "`factor` dividing every cost: 2 is twice as fast, 0.33 three times slower")
	registerCostFlags(fs, &errs, c)
	// A Cost whose two parts are both 0 means "not set": the profile's or
	// the curve's cost applies; set 1ns for a practically free model.
	durationFlag(fs, &errs, &c.QueryCost.Base, "query-base-cost", "`duration` of every query batch on a straight-line cost replacing the profile's (with -query-item-cost)")
	durationFlag(fs, &errs, &c.QueryCost.PerItem, "query-item-cost", "`duration` of every query in a batch on a straight-line cost")
	durationFlag(fs, &errs, &c.ImageCost.Base, "image-base-cost", "`duration` of every page batch on a straight-line cost replacing the profile's (with -image-item-cost)")
	durationFlag(fs, &errs, &c.ImageCost.PerItem, "image-item-cost", "`duration` of every page in a batch on a straight-line cost")
	registerBatchingFlags(fs, &errs, model.Query, &c.QueryBatching)
	registerBatchingFlags(fs, &errs, model.Image, &c.ImageBatching)
	durationFlag(fs, &errs, &c.Faults.ExtraLatency, "extra-latency", "fault: `duration` added to every batch")
	floatFlag(fs, &errs, &c.Faults.ErrorRate, "error-rate", "fault: `fraction` (0 to 1) of ModelInfer calls failing with Internal \"simulated failure\"")
	fs.Func("not-ready", "fault: comma-separated model `names` reported not ready", func(s string) error {
		c.Faults.NotReady = nil
		for name := range strings.SplitSeq(s, ",") {
			if name = strings.TrimSpace(name); name != "" {
				c.Faults.NotReady = append(c.Faults.NotReady, name)
			}
		}
		return nil
	})
	intFlag(fs, &errs, &c.StopAfter, "stop-after", "fault: crash (hard stop, exit status 1) when the `N`th ModelInfer call arrives; 0 is never")
	o.log.Register(fs)
	fs.StringVar(&o.tls.CertFile, "tls-cert-file", "", "PEM certificate `file` of the gRPC listener (with -tls-key-file); empty: clear text")
	fs.StringVar(&o.tls.KeyFile, "tls-key-file", "", "PEM private key `file` of -tls-cert-file")
	fs.StringVar(&o.tls.CAFile, "tls-client-ca-file", "", "PEM CA bundle `file`: require client certificates it signed (mutual TLS)")

	if err := fs.Parse(args); err != nil {
		// flag has already printed the message and the usage.
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		errs = append(errs, err)
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q: tritonsim takes only flags", fs.Args()))
	}
	c.QueryBatching, c.ImageBatching = settled(c.QueryBatching), settled(c.ImageBatching)
	if err := o.log.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := o.cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	return o, errors.Join(errs...)
}

// lenient is a flag.Value that records a bad value in errs instead of
// failing, so that one run reports every bad flag rather than the first.
type lenient[T any] struct {
	p      *T
	name   string
	errs   *[]error
	parse  func(string) (T, error)
	format func(T) string
}

func (v *lenient[T]) String() string {
	if v.p == nil { // flag calls String on a zero value to find defaults
		return ""
	}
	return v.format(*v.p)
}

func (v *lenient[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		*v.errs = append(*v.errs, fmt.Errorf("-%s %q: %w", v.name, s, err))
		return nil
	}
	*v.p = x
	return nil
}

func intFlag(fs *flag.FlagSet, errs *[]error, p *int, name, usage string) {
	fs.Var(&lenient[int]{p: p, name: name, errs: errs, parse: func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, errors.New("not an integer")
		}
		return n, nil
	}, format: strconv.Itoa}, name, usage)
}

func floatFlag(fs *flag.FlagSet, errs *[]error, p *float64, name, usage string) {
	fs.Var(&lenient[float64]{p: p, name: name, errs: errs, parse: func(s string) (float64, error) {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, errors.New("not a number")
		}
		return f, nil
	}, format: func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }}, name, usage)
}

func durationFlag(fs *flag.FlagSet, errs *[]error, p *time.Duration, name, usage string) {
	fs.Var(&lenient[time.Duration]{p: p, name: name, errs: errs, parse: func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, errors.New("not a duration such as 25ms")
		}
		return d, nil
	}, format: time.Duration.String}, name, usage)
}
