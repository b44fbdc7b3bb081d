package k8s

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// timeout bounds every test's processes and requests.
const timeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the gateway and the Triton simulator from this checkout
// (once per test binary) and returns the directory holding them.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "colpali-k8s-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "./cmd/gateway", "./cmd/tritonsim")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/gateway ./cmd/tritonsim: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// gatewayFlags lists the flags `gateway -h` prints.
func gatewayFlags(t *testing.T) []string {
	t.Helper()
	out, err := exec.CommandContext(testContext(t), filepath.Join(binaries(t), "gateway"), "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("gateway -h: %v\n%s", err, out)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) < 20 {
		t.Fatalf("gateway -h lists %d flags; its usage format changed?\n%s", len(flags), out)
	}
	return flags
}

// envNotFlags are the variables the gateway container may set that are not
// COLPALI_ flags: the Go runtime's, Postgres', and OpenTelemetry's own.
var envNotFlags = []string{"GOMAXPROCS", "GOMEMLIMIT", "DATABASE_URL", "PGUSER", "PGPASSWORD"}

func TestGatewayEnvNamesAreFlags(t *testing.T) {
	flags := gatewayFlags(t)
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		d := decodeAll(t, objs)
		c := container(t, d.deployment(t, "colpali-gateway").Spec.Template.Spec, "gateway")
		names := map[string]bool{}
		for name := range d.gatewayEnv(t) {
			names[name] = true
		}
		for _, e := range c.Env {
			names[e.Name] = true
		}
		for name := range names {
			flag, ok := strings.CutPrefix(name, "COLPALI_")
			switch {
			case ok:
				flag = strings.ToLower(strings.ReplaceAll(flag, "_", "-"))
				if !slices.Contains(flags, flag) {
					t.Errorf("%s: the gateway has no flag -%s (the variable would be ignored)", name, flag)
				}
			case !slices.Contains(envNotFlags, name) && !strings.HasPrefix(name, "OTEL_"):
				t.Errorf("%s: neither a COLPALI_ flag nor one of %v", name, envNotFlags)
			}
		}
	})
}

// process is a binary running for a test, its output scanned for log lines.
type process struct {
	cmd   *exec.Cmd
	lines chan map[string]any
	mu    sync.Mutex
	log   strings.Builder
	done  chan struct{}
}

// startProcess runs bin with args and env (nothing inherited but PATH) in a
// fresh directory, and stops it with SIGTERM when the test ends.
func startProcess(t *testing.T, bin string, args, env []string) *process {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &process{lines: make(chan map[string]any, 64), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() {
		defer close(p.done)
		defer close(p.lines)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				select {
				case p.lines <- line:
				default: // nobody waits for it
				}
			}
		}
		r.Close()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		stopped := make(chan error, 1)
		go func() { stopped <- p.cmd.Wait() }()
		select {
		case <-stopped:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-stopped
		}
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			t.Logf("%s output:\n%s", filepath.Base(bin), p.log.String())
			p.mu.Unlock()
		}
	})
	return p
}

// waitLog waits for the JSON log line whose msg is msg.
func (p *process) waitLog(ctx context.Context, msg string) (map[string]any, error) {
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				p.mu.Lock()
				defer p.mu.Unlock()
				return nil, fmt.Errorf("exited before logging %q:\n%s", msg, p.log.String())
			}
			if line["msg"] == msg {
				return line, nil
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("no %q log line: %w", msg, ctx.Err())
		}
	}
}

// simulator starts a Triton simulator with args, on loopback ports it
// picks (the flags given last win), and returns its gRPC and metrics
// addresses.
func simulator(t *testing.T, ctx context.Context, args ...string) (grpcAddr, metricsAddr string) {
	t.Helper()
	sim := startProcess(t, filepath.Join(binaries(t), "tritonsim"),
		append(args, "-grpc-addr=127.0.0.1:0", "-metrics-addr=127.0.0.1:0", "-log-format=json"), nil)
	line, err := sim.waitLog(ctx, "tritonsim listening (a Triton simulator, not Triton)")
	if err != nil {
		t.Fatalf("tritonsim: %v", err)
	}
	return fmt.Sprint(line["grpc_addr"]), fmt.Sprint(line["metrics_addr"])
}

// renderedGatewayEnv is the environment the gateway container gets in the
// overlay, as the kubelet would build it: the ConfigMap's variables, the
// literal values, the resource figures and the Secret's keys; the
// credentials CloudNativePG would provide are stand-ins.
func renderedGatewayEnv(t *testing.T, d *decoded) []string {
	t.Helper()
	c := container(t, d.deployment(t, "colpali-gateway").Spec.Template.Spec, "gateway")
	env := d.gatewayEnv(t)
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
		case e.ValueFrom.ResourceFieldRef != nil:
			env[e.Name] = resourceFigure(t, c, e.ValueFrom.ResourceFieldRef)
		case e.ValueFrom.SecretKeyRef != nil && d.externalSecret(e.ValueFrom.SecretKeyRef.Name):
			env[e.Name] = "stand-in-" + strings.ToLower(e.Name)
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = d.gatewaySecret(t, e.ValueFrom.SecretKeyRef.Key)
		default:
			t.Fatalf("env %s: a source this test cannot resolve", e.Name)
		}
	}
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	slices.Sort(list)
	return list
}

// resourceFigure is what the kubelet puts in a resourceFieldRef variable:
// the quantity divided by the divisor, rounded up.
func resourceFigure(t *testing.T, c corev1.Container, r *corev1.ResourceFieldSelector) string {
	t.Helper()
	kind, name, _ := strings.Cut(r.Resource, ".")
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		t.Fatalf("resourceFieldRef %s: the container sets no such figure", r.Resource)
	}
	div := r.Divisor.AsApproximateFloat64()
	if div == 0 {
		div = 1
	}
	return strconv.FormatInt(int64(math.Ceil(q.AsApproximateFloat64()/div)), 10)
}

// runGateway starts the gateway with the overlay's rendered environment,
// on loopback, its backend the simulator instead of the Triton Service
// (flags on the command line win over COLPALI_ variables), and waits until
// it is ready. It returns the gateway's HTTP address and its admin
// listener's (/metrics).
func runGateway(t *testing.T, ctx context.Context, d *decoded, simGRPC, simMetrics string, extraArgs ...string) (httpAddr, adminAddr string) {
	t.Helper()
	gw := startProcess(t, filepath.Join(binaries(t), "gateway"), append([]string{
		"-grpc-addr=127.0.0.1:0", "-http-addr=127.0.0.1:0", "-admin-addr=127.0.0.1:0",
		"-triton-dns=", "-triton-addrs=" + simGRPC + "=" + simMetrics,
		// The overlay's drain delay is still parsed and validated (the
		// environment is read first); nothing routes to this gateway, so
		// its stop at the test's end need not wait for it.
		"-drain-delay=1ms",
	}, extraArgs...), renderedGatewayEnv(t, d))
	line, err := gw.waitLog(ctx, "gateway serving")
	if err != nil {
		t.Fatalf("gateway with the rendered configuration: %v", err)
	}
	httpAddr, adminAddr = fmt.Sprint(line["http_addr"]), fmt.Sprint(line["admin_addr"])
	for {
		if code, _ := get(ctx, "http://"+httpAddr+"/readyz"); code == http.StatusOK {
			return httpAddr, adminAddr
		}
		select {
		case <-ctx.Done():
			t.Fatalf("gateway never ready: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func get(ctx context.Context, url string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestGatewayRunsWithRenderedConfig runs the gateway's own flag parsing
// and validation on each overlay's environment: a bad value, a zero where
// a positive is due, or a misspelt duration stops it with an error naming
// the flag. Where the overlay runs the simulator in Triton's place, the
// simulator runs with the rendered arguments too (its flag parsing is as
// strict), and is the gateway's backend.
func TestGatewayRunsWithRenderedConfig(t *testing.T) {
	ctx := testContext(t)
	simGRPC, simMetrics := simulator(t, ctx)
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		d := decodeAll(t, objs)
		grpcAddr, metricsAddr := simGRPC, simMetrics
		if c := container(t, d.statefulSet(t, "colpali-triton").Spec.Template.Spec, "triton"); isSimulator(c) {
			grpcAddr, metricsAddr = simulator(t, ctx, c.Args...)
		}
		runGateway(t, ctx, d, grpcAddr, metricsAddr)
	})
}

var (
	metricsOnce sync.Once
	exported    map[string]string // metric name → the binary exporting it
	metricsErr  error
)

// exportedMetrics runs the simulator and the gateway (prod's configuration),
// makes one call of each kind so that every labelled series exists, and
// returns the metric names both expose.
func exportedMetrics(t *testing.T) map[string]string {
	t.Helper()
	metricsOnce.Do(func() {
		metricsErr = fmt.Errorf("the metrics run failed: see the test that ran it first")
		exported = map[string]string{}
		t.Run("scrape", func(t *testing.T) {
			ctx := testContext(t)
			simGRPC, simMetrics := simulator(t, ctx)
			// -auth=none: the API keys live in the database, which is
			// not here; the call only has to make the series exist.
			gw, gwAdmin := runGateway(t, ctx, decodeAll(t, render(t)["prod"]), simGRPC, simMetrics, "-auth=none")
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+gw+"/v1/queries:embed", strings.NewReader(`{"queries": ["late interaction"]}`))
			if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("EmbedQueries through the gateway: %v %v", resp, err)
			} else {
				resp.Body.Close()
			}
			// The REST middleware counts a request after its answer is
			// written, so the client may see the answer first: read the
			// gateway's metrics until that count is there.
			for who, url := range map[string]string{"gateway": "http://" + gwAdmin + "/metrics", "tritonsim": "http://" + simMetrics + "/metrics"} {
				for {
					code, body := get(ctx, url)
					if code != http.StatusOK {
						t.Fatalf("%s: %d %s", url, code, body)
					}
					names := metricNames(body)
					if who == "gateway" && !names["colpali_http_requests_total"] {
						select {
						case <-ctx.Done():
							t.Fatalf("%s: no colpali_http_requests_total after a REST call: %v", url, ctx.Err())
						case <-time.After(10 * time.Millisecond):
						}
						continue
					}
					for name := range names {
						exported[name] = who
					}
					break
				}
			}
			metricsErr = nil
		})
	})
	if metricsErr != nil {
		t.Fatal(metricsErr)
	}
	return exported
}

// metricNames returns the series names of a Prometheus text exposition
// (histograms as their _bucket, _sum and _count series).
func metricNames(body string) map[string]bool {
	names := map[string]bool{}
	for line := range strings.Lines(body) {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}
