package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/morphik-org/colpali-gateway/gpu"
	"github.com/morphik-org/colpali-gateway/internal/clock"
	"github.com/morphik-org/colpali-gateway/internal/config"
	"github.com/morphik-org/colpali-gateway/model"
	"github.com/morphik-org/colpali-gateway/router/policy/gpuaware"
	"github.com/morphik-org/colpali-gateway/router/policy/leastoutstanding"
	"github.com/morphik-org/colpali-gateway/router/policy/roundrobin"
	"github.com/morphik-org/colpali-gateway/triton"
)

// Defaults of Config.
const (
	DefaultPolicy            = gpuaware.Name
	DefaultMetricsPort       = 8002 // Triton's metrics port
	DefaultDNSInterval       = 30 * time.Second
	DefaultHealthInterval    = 2 * time.Second
	DefaultHealthTimeout     = time.Second
	DefaultEjectAfter        = 5
	DefaultEjectBackoff      = time.Second
	DefaultEjectBackoffMax   = 30 * time.Second
	DefaultRetryBudgetRatio  = 0.1
	DefaultRetryMinPerSecond = 5
	DefaultDrainTimeout      = 30 * time.Second
	DefaultTelemetryMaxAge   = 15 * time.Second
)

// Defaults of Config's health thresholds (see Config.UnhealthyThreshold).
const (
	DefaultUnhealthyThreshold = 3
	DefaultHealthyThreshold   = 2
)

// Default cost units: milliseconds of batch compute on a reference GPU, in
// the shape of ColPali's cost (a page costs ~80 queries). Only the shape
// matters: each backend's latency per unit is measured.
var (
	DefaultQueryCost = Cost{Base: 5, PerItem: 0.3}
	DefaultImageCost = Cost{Base: 15, PerItem: 25}
)

// Policies are the names Config.Policy accepts.
var Policies = []string{gpuaware.Name, leastoutstanding.Name, roundrobin.Name}

// Cost is the size of a batch of n items, Base + n*PerItem, in cost units.
type Cost struct {
	Base, PerItem float64
}

func (c Cost) of(n int) float64 { return c.Base + float64(n)*c.PerItem }

// Endpoint is one backend: its gRPC address and the URL of its Prometheus
// metrics (empty: none known).
type Endpoint struct {
	Addr       string
	MetricsURL string
}

// Config configures a Router. In a Config built in Go a zero field takes
// its default (New calls WithDefaults); Validate refuses it (see package
// internal/config: one rule for zero).
type Config struct {
	// Models names the Triton models and tensors (defaulted by
	// model.Config.WithDefaults).
	Models model.Config
	// Triton is the template of every backend connection; its Addr is
	// ignored. Zero fields take triton's defaults (triton.Config.WithDefaults).
	Triton triton.Config
	// Static are backends from configuration.
	Static []Endpoint
	// DNS is "name:port" of a headless service whose addresses are
	// backends, re-resolved every DNSInterval. Empty: no discovery.
	DNS string
	// DNSInterval is how often DNS is re-resolved. Default 30s.
	DNSInterval time.Duration
	// MetricsPort is the metrics port of backends found through DNS.
	// Default 8002, Triton's.
	MetricsPort int
	// Policy is the balancing policy: gpu_aware, least_outstanding or
	// round_robin. Default gpu_aware.
	Policy string
	// GPUAware tunes the gpu_aware policy.
	GPUAware gpuaware.Config
	// QueryCost and ImageCost size a batch for the completion-time
	// estimates. Default 5+0.3/item and 15+25/item.
	QueryCost, ImageCost Cost
	// HealthInterval is how often each backend's liveness and model
	// readiness are checked. Default 2s.
	HealthInterval time.Duration
	// HealthTimeout bounds one check (all its calls). Default 1s.
	HealthTimeout time.Duration
	// UnhealthyThreshold is the number of health checks in a row that must
	// fail without an answer (time out, or fail other than by the
	// connection being refused) before a backend leaves the routing set.
	// A refused connection or a server that says it is not live takes it
	// out at once. Default 3, as Kubernetes' failureThreshold: one check
	// starved of CPU for its timeout is noise, three in a row (about
	// 3 x HealthInterval) is a hung server.
	UnhealthyThreshold int
	// HealthyThreshold is the number of passing checks in a row that bring
	// back a backend that was taken out by failed checks. Default 2: a
	// crash-looping server is not given traffic on its first breath, and
	// one that is fine is back one HealthInterval after its first pass.
	// A backend that has never been ready (just joined, or the gateway
	// just started) needs one pass, as in Envoy.
	HealthyThreshold int
	// EjectAfter is the number of consecutive failed batches that ejects
	// a backend. Default 5.
	EjectAfter int
	// EjectBackoff is the first ejection's length; each ejection in a row
	// doubles it, up to EjectBackoffMax. Defaults 1s and 30s.
	EjectBackoff, EjectBackoffMax time.Duration
	// RetryBudgetRatio is the most retries as a fraction of batches, over
	// a 10 s window. Default 0.1.
	RetryBudgetRatio float64
	// RetryMinPerSecond is a floor of retries per second allowed whatever
	// the ratio, so a quiet gateway can still fail over. Default 5.
	RetryMinPerSecond float64
	// DrainTimeout bounds how long a leaving backend's batches in flight
	// may take before its connection is closed. Default 30s.
	DrainTimeout time.Duration
	// TelemetryMaxAge is the age beyond which GPU telemetry is ignored.
	// Default 15s.
	TelemetryMaxAge time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Models = c.Models.WithDefaults()
	c.Triton = c.Triton.WithDefaults()
	c.DNSInterval = cmp.Or(c.DNSInterval, DefaultDNSInterval)
	c.MetricsPort = cmp.Or(c.MetricsPort, DefaultMetricsPort)
	c.Policy = cmp.Or(c.Policy, DefaultPolicy)
	c.GPUAware = c.GPUAware.WithDefaults()
	c.QueryCost = cmp.Or(c.QueryCost, DefaultQueryCost)
	c.ImageCost = cmp.Or(c.ImageCost, DefaultImageCost)
	c.HealthInterval = cmp.Or(c.HealthInterval, DefaultHealthInterval)
	c.HealthTimeout = cmp.Or(c.HealthTimeout, DefaultHealthTimeout)
	c.UnhealthyThreshold = cmp.Or(c.UnhealthyThreshold, DefaultUnhealthyThreshold)
	c.HealthyThreshold = cmp.Or(c.HealthyThreshold, DefaultHealthyThreshold)
	c.EjectAfter = cmp.Or(c.EjectAfter, DefaultEjectAfter)
	c.EjectBackoff = cmp.Or(c.EjectBackoff, DefaultEjectBackoff)
	c.EjectBackoffMax = cmp.Or(c.EjectBackoffMax, DefaultEjectBackoffMax)
	c.RetryBudgetRatio = cmp.Or(c.RetryBudgetRatio, DefaultRetryBudgetRatio)
	c.RetryMinPerSecond = cmp.Or(c.RetryMinPerSecond, DefaultRetryMinPerSecond)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, DefaultDrainTimeout)
	c.TelemetryMaxAge = cmp.Or(c.TelemetryMaxAge, DefaultTelemetryMaxAge)
	return c
}

// Validate names every bad field of c by its Go name ("Models.Dimension",
// "EjectAfter"). It takes c as it is: a zero field is refused, not
// defaulted (New calls WithDefaults first).
func (c Config) Validate() error {
	var errs config.Errors
	errs.Nest("Models.", c.Models.Validate())
	errs.Nest("Triton.", c.Triton.Validate())
	if len(c.Static) == 0 && c.DNS == "" {
		errs.Bad("Static", "", "no backends: give static endpoints or a {DNS} name")
	}
	for _, e := range c.Static {
		if _, _, err := net.SplitHostPort(e.Addr); err != nil {
			errs.Bad("Static", e.Addr, "%v", err)
		}
	}
	if c.DNS != "" {
		if host, port, err := net.SplitHostPort(c.DNS); err != nil || host == "" || port == "" {
			errs.Bad("DNS", c.DNS, "want name:port")
		}
	}
	if !slices.Contains(Policies, c.Policy) {
		errs.Bad("Policy", c.Policy, "want one of %s", strings.Join(Policies, ", "))
	}
	if err := c.GPUAware.Validate(); err != nil {
		errs.Add(err)
	}
	for _, k := range []struct {
		field string
		c     Cost
	}{{"QueryCost", c.QueryCost}, {"ImageCost", c.ImageCost}} {
		if k.c.Base < 0 || k.c.PerItem < 0 || k.c.of(1) <= 0 {
			errs.Bad(k.field, fmt.Sprintf("%v + %v per item", k.c.Base, k.c.PerItem), "want no negative part and a positive total")
		}
	}
	errs.Add(config.Positive("DNSInterval", c.DNSInterval))
	errs.Add(config.Positive("HealthInterval", c.HealthInterval))
	errs.Add(config.Positive("HealthTimeout", c.HealthTimeout))
	errs.Add(config.Positive("UnhealthyThreshold", c.UnhealthyThreshold))
	errs.Add(config.Positive("HealthyThreshold", c.HealthyThreshold))
	errs.Add(config.Positive("EjectAfter", c.EjectAfter))
	errs.Add(config.Positive("EjectBackoff", c.EjectBackoff))
	errs.Add(config.Positive("EjectBackoffMax", c.EjectBackoffMax))
	errs.Add(config.Positive("RetryBudgetRatio", c.RetryBudgetRatio))
	errs.Add(config.Positive("RetryMinPerSecond", c.RetryMinPerSecond))
	errs.Add(config.Positive("DrainTimeout", c.DrainTimeout))
	errs.Add(config.Positive("TelemetryMaxAge", c.TelemetryMaxAge))
	if c.MetricsPort <= 0 || c.MetricsPort > 65535 {
		errs.Bad("MetricsPort", c.MetricsPort, "want 1 to 65535")
	}
	if c.EjectBackoff > 0 && c.EjectBackoffMax < c.EjectBackoff {
		errs.Bad("EjectBackoffMax", c.EjectBackoffMax, "below {EjectBackoff} %v", c.EjectBackoff)
	}
	return errs.Err()
}

// ParseEndpoints parses a comma-separated list of backends. Each is
// "host:port", whose metrics are then at http://host:metricsPort/metrics
// (Triton's layout), or "host:port=METRICS", METRICS being "host:port" of
// the metrics endpoint or a full http(s) URL: simulators and tests bind
// random ports, and some deployments put metrics elsewhere.
func ParseEndpoints(list string, metricsPort int) ([]Endpoint, error) {
	var out []Endpoint
	var errs []error
	seen := map[string]bool{}
	for spec := range strings.SplitSeq(list, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		addr, metrics, explicit := strings.Cut(spec, "=")
		host, _, err := net.SplitHostPort(addr)
		if err != nil || host == "" {
			errs = append(errs, fmt.Errorf("backend %q: want host:port[=metrics host:port or URL]", spec))
			continue
		}
		if seen[addr] {
			errs = append(errs, fmt.Errorf("backend %q listed twice", addr))
			continue
		}
		seen[addr] = true
		e := Endpoint{Addr: addr, MetricsURL: metricsURL(host, metricsPort)}
		if explicit {
			u, err := parseMetrics(metrics)
			if err != nil {
				errs = append(errs, fmt.Errorf("backend %q: metrics %q: %w", addr, metrics, err))
				continue
			}
			e.MetricsURL = u
		}
		out = append(out, e)
	}
	return out, errors.Join(errs...)
}

func metricsURL(host string, port int) string {
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/metrics"
}

func parseMetrics(s string) (string, error) {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return "", errors.New("not a URL with a host")
		}
		return s, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", errors.New("want host:port or an http(s) URL")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return "", errors.New("bad port")
	}
	return metricsURL(host, p), nil
}

// Resolver resolves a host name to addresses; *net.Resolver implements it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// TargetSetter is told the metrics URL of every backend in the pool
// (gRPC address → URL) whenever the pool changes; the gpu package's
// scraper implements it.
type TargetSetter interface {
	SetTargets(targets map[string]string)
}

// Deps are the router's collaborators. All optional.
type Deps struct {
	// Logger receives the router's logs. Default: discarded.
	Logger *slog.Logger
	// Dial opens a backend connection. Default: triton.New with
	// Config.Triton, Config.Models and the address. The router dials each
	// backend twice, first for its batches, then for its health checks:
	// on one HTTP/2 connection a check would wait behind the frames of a
	// multi-megabyte answer and time out on a backend that is only busy.
	Dial func(addr string) (Backend, error)
	// Resolver resolves Config.DNS. Default: net.DefaultResolver.
	Resolver Resolver
	// GPU supplies backends' telemetry. Default: none.
	GPU gpu.Source
	// Targets is kept in step with the pool's metrics URLs. Default: none.
	Targets TargetSetter
	// Registerer receives the router's metrics. Default: none.
	Registerer prometheus.Registerer
	// Clock times health checks, ejection backoffs, the retry budget's
	// window, DNS re-resolution and drains, so that tests drive them with
	// a fake clock. Default: clock.System. Three times stay on real time:
	// callers' deadlines (they belong to the caller), batch latencies
	// (real work on a real connection) and telemetry ages, which the
	// balancing policies compare with time.Now.
	Clock clock.Clock
}
