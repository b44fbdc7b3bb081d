package k8s

import (
	"io/fs"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

func (d *decoded) deployment(t *testing.T, name string) *appsv1.Deployment {
	t.Helper()
	for _, x := range d.deployments {
		if x.Name == name {
			return x
		}
	}
	t.Fatalf("no Deployment %s", name)
	return nil
}

func (d *decoded) statefulSet(t *testing.T, name string) *appsv1.StatefulSet {
	t.Helper()
	for _, x := range d.statefulSets {
		if x.Name == name {
			return x
		}
	}
	t.Fatalf("no StatefulSet %s", name)
	return nil
}

func (d *decoded) service(t *testing.T, name string) *corev1.Service {
	t.Helper()
	for _, x := range d.services {
		if x.Name == name {
			return x
		}
	}
	t.Fatalf("no Service %s", name)
	return nil
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// gatewayEnv is the gateway container's configuration as the pod sees it:
// its ConfigMap's variables, then its own env (literal values only).
func (d *decoded) gatewayEnv(t *testing.T) map[string]string {
	t.Helper()
	c := container(t, d.deployment(t, "colpali-gateway").Spec.Template.Spec, "gateway")
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		for _, cm := range d.configMaps {
			if from.ConfigMapRef != nil && cm.Name == from.ConfigMapRef.Name {
				for k, v := range cm.Data {
					env[from.Prefix+k] = v
				}
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

func (d *decoded) gatewaySecret(t *testing.T, key string) string {
	t.Helper()
	c := container(t, d.deployment(t, "colpali-gateway").Spec.Template.Spec, "gateway")
	for _, e := range c.Env {
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Key == key {
			for _, s := range d.secrets {
				if s.Name == r.SecretKeyRef.Name {
					return string(s.Data[key])
				}
			}
		}
	}
	t.Fatalf("gateway: no Secret key %s", key)
	return ""
}

func preStopSeconds(c corev1.Container) int64 {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return c.Lifecycle.PreStop.Sleep.Seconds
}

func TestGateway(t *testing.T) {
	eachOverlay(t, func(t *testing.T, overlay string, objs []object) {
		d := decodeAll(t, objs)
		dep := d.deployment(t, "colpali-gateway")
		spec := dep.Spec.Template.Spec
		c := container(t, spec, "gateway")
		if r := ptrValue(dep.Spec.Replicas, 1); r < 2 {
			t.Errorf("replicas %d: want at least 2", r)
		}
		for _, h := range d.hpas {
			if h.Spec.ScaleTargetRef.Name == dep.Name && ptrValue(h.Spec.MinReplicas, 1) < 2 {
				t.Errorf("HorizontalPodAutoscaler %s: minReplicas below 2", h.Name)
			}
		}
		if len(spec.TopologySpreadConstraints) == 0 {
			t.Error("no topology spread")
		}
		if p := c.ReadinessProbe; p == nil || p.GRPC == nil || p.GRPC.Port != 9090 || ptrValue(p.GRPC.Service, "") != "" {
			t.Error(`readiness: want the native gRPC probe of the overall health ("") on 9090`)
		}
		if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" {
			t.Error("liveness: want GET /healthz")
		}
		// GOMAXPROCS and GOMEMLIMIT come from this container's resources.
		from := map[string]string{}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil {
				r := e.ValueFrom.ResourceFieldRef
				if r.ContainerName != "" && r.ContainerName != c.Name {
					t.Errorf("env %s: from container %s's resources", e.Name, r.ContainerName)
				}
				from[e.Name] = r.Resource
			}
		}
		if from["GOMAXPROCS"] != "limits.cpu" || !strings.HasSuffix(from["GOMEMLIMIT"], ".memory") {
			t.Errorf("GOMAXPROCS and GOMEMLIMIT from %v: want limits.cpu and a memory figure", from)
		}
		// The kubelet's SIGKILL must not cut the drain short: a preStop
		// sleep if any, then the gateway's -drain-delay and
		// -shutdown-timeout (set explicitly: their defaults are the
		// binary's business, the grace period this file's).
		env := d.gatewayEnv(t)
		need := time.Duration(preStopSeconds(c)) * time.Second
		for _, v := range []string{"COLPALI_DRAIN_DELAY", "COLPALI_SHUTDOWN_TIMEOUT"} {
			d, err := time.ParseDuration(env[v])
			if err != nil {
				t.Fatalf("%s: %v", v, err)
			}
			need += d
		}
		if grace := time.Duration(ptrValue(spec.TerminationGracePeriodSeconds, 30)) * time.Second; grace <= need {
			t.Errorf("terminationGracePeriodSeconds %v: want above preStop + -drain-delay + -shutdown-timeout = %v", grace, need)
		}
		// Its DNS discovery reads Triton's headless Service, on its gRPC port.
		host, port, err := net.SplitHostPort(env["COLPALI_TRITON_DNS"])
		if err != nil {
			t.Fatalf("COLPALI_TRITON_DNS %q: %v", env["COLPALI_TRITON_DNS"], err)
		}
		svc := d.service(t, host)
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("Service %s: not headless, so its DNS name is one virtual IP, not the backends", host)
		}
		if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port && p.Name == "grpc" }) {
			t.Errorf("COLPALI_TRITON_DNS port %s: not the gRPC port of Service %s", port, host)
		}
		// Stateless for real: production's replicas share DATABASE_URL's
		// Postgres, and a gateway without it stops rather than keep
		// documents of its own (elsewhere it refuses the embedded Postgres
		// in a pod and serves embeddings only).
		if overlay == "prod" && env["COLPALI_REQUIRE_DATABASE_URL"] != "true" {
			t.Error("prod: COLPALI_REQUIRE_DATABASE_URL is not true")
		}
		if env["COLPALI_TRITON_METRICS_PORT"] != "8002" {
			t.Errorf("COLPALI_TRITON_METRICS_PORT %q: want Triton's metrics port 8002", env["COLPALI_TRITON_METRICS_PORT"])
		}
	})
}

// tritonFlags are the tritonserver options the manifests may use, each one
// tritonserver's --help documents (the 25.xx releases): Triton cannot run
// here, so this list stands in for its flag parser.
var tritonFlags = []string{
	"model-repository", "model-control-mode", "strict-readiness", "http-port", "grpc-port",
	"metrics-port", "allow-metrics", "allow-gpu-metrics", "exit-timeout-secs", "log-format",
	"log-verbose", "strict-model-config", "backend-config", "pinned-memory-pool-byte-size",
	"cuda-memory-pool-byte-size", "metrics-interval-ms", "allow-http", "allow-grpc",
}

// isSimulator reports whether the Triton container runs the simulator
// (the sim overlay) rather than tritonserver.
func isSimulator(c corev1.Container) bool {
	return len(c.Command) > 0 && filepath.Base(c.Command[0]) == "tritonsim"
}

func TestTriton(t *testing.T) {
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		d := decodeAll(t, objs)
		sts := d.statefulSet(t, "colpali-triton")
		c := container(t, sts.Spec.Template.Spec, "triton")
		tritonOnlyFromGateway(t, d, sts)
		if isSimulator(c) {
			simulatorPorts(t, c)
			return
		}
		tritonServer(t, sts)
	})
}

// simulatorPorts checks the simulator's listen addresses against its
// container's ports: Triton's gRPC and metrics ports, health on the latter.
func simulatorPorts(t *testing.T, c corev1.Container) {
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for _, a := range c.Args {
		for flag, name := range map[string]string{"-grpc-addr=": "grpc", "-metrics-addr=": "metrics"} {
			if addr, ok := strings.CutPrefix(a, flag); ok {
				if _, port, err := net.SplitHostPort(addr); err != nil || port != strconv.Itoa(int(ports[name])) {
					t.Errorf("%s: not container port %s (%d)", a, name, ports[name])
				}
			}
		}
	}
	if ports["grpc"] != 8001 || ports["metrics"] != 8002 {
		t.Errorf("ports %v: want Triton's 8001 and 8002", ports)
	}
	for kind, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || !strings.HasPrefix(p.HTTPGet.Path, "/v2/health/") || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe: want /v2/health/* on the metrics port", kind)
		}
	}
}

// tritonServer checks the real Triton: GPUs, its options and ports, probes,
// grace, shared memory and the model repository.
func tritonServer(t *testing.T, sts *appsv1.StatefulSet) {
	spec := sts.Spec.Template.Spec
	c := container(t, spec, "triton")
	if _, ok := c.Resources.Limits["nvidia.com/gpu"]; !ok {
		t.Error("no nvidia.com/gpu limit")
	}
	if spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
		t.Error("not restricted to GPU nodes (nodeSelector nvidia.com/gpu.present)")
	}
	args := map[string]string{}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok || !slices.Contains(tritonFlags, name) {
			t.Errorf("argument %q: want --NAME=VALUE with NAME one of tritonserver's options %v", a, tritonFlags)
		}
		args[name] = value
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	for flag, name := range map[string]string{"http-port": "http", "grpc-port": "grpc", "metrics-port": "metrics"} {
		if args[flag] != strconv.Itoa(int(ports[name])) {
			t.Errorf("--%s=%s but container port %s is %d", flag, args[flag], name, ports[name])
		}
	}
	if ports["http"] != 8000 || ports["grpc"] != 8001 || ports["metrics"] != 8002 {
		t.Errorf("ports %v: want Triton's 8000, 8001 and 8002", ports)
	}
	for kind, want := range map[string]struct {
		p    *corev1.Probe
		path string
	}{
		"startup":   {c.StartupProbe, "/v2/health/ready"},
		"readiness": {c.ReadinessProbe, "/v2/health/ready"},
		"liveness":  {c.LivenessProbe, "/v2/health/live"},
	} {
		if want.p == nil || want.p.HTTPGet == nil || want.p.HTTPGet.Path != want.path {
			t.Errorf("%s probe: want GET %s", kind, want.path)
		}
	}
	// Grace covers the preStop sleep and Triton's exit timeout.
	exit, err := strconv.Atoi(args["exit-timeout-secs"])
	if err != nil {
		t.Fatalf("--exit-timeout-secs: %v", err)
	}
	if preStopSeconds(c) == 0 {
		t.Error("no preStop sleep")
	}
	if grace := ptrValue(spec.TerminationGracePeriodSeconds, 30); grace <= preStopSeconds(c)+int64(exit) {
		t.Errorf("terminationGracePeriodSeconds %d: want above preStop %ds + --exit-timeout-secs %d", grace, preStopSeconds(c), exit)
	}
	// /dev/shm is memory, bounded.
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	if shm := vols[mounts["/dev/shm"]]; shm.EmptyDir == nil || shm.EmptyDir.Medium != corev1.StorageMediumMemory || shm.EmptyDir.SizeLimit == nil {
		t.Error("/dev/shm: want a memory-backed emptyDir with a sizeLimit")
	}
	// Every file of deployments/triton/model_repository is mounted
	// under its own path in the model repository.
	repo := args["model-repository"]
	models := vols[mounts[repo]]
	if models.ConfigMap == nil {
		t.Fatalf("--model-repository=%s: not a ConfigMap volume", repo)
	}
	var mounted []string
	for _, it := range models.ConfigMap.Items {
		mounted = append(mounted, it.Path)
	}
	var files []string
	src := filepath.Join("..", "triton", "model_repository")
	err = filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(mounted)
	if !slices.Equal(files, mounted) {
		t.Errorf("model repository mounts %v; deployments/triton/model_repository holds %v", mounted, files)
	}
}

// tritonOnlyFromGateway checks that only the gateway may call Triton.
func tritonOnlyFromGateway(t *testing.T, d *decoded, sts *appsv1.StatefulSet) {
	if len(d.networkPolicies) == 0 {
		t.Fatal("no NetworkPolicy")
	}
	gatewayPods := d.deployment(t, "colpali-gateway").Spec.Template.Labels
	for _, np := range d.networkPolicies {
		if !selects(&np.Spec.PodSelector, sts.Spec.Template.Labels) {
			continue
		}
		for i, rule := range np.Spec.Ingress {
			grpcOpen := slices.ContainsFunc(rule.Ports, func(p networkingv1.NetworkPolicyPort) bool { return p.Port != nil && p.Port.IntValue() == 8001 }) || len(rule.Ports) == 0
			for _, from := range rule.From {
				gateway := from.PodSelector != nil && from.NamespaceSelector == nil && selects(from.PodSelector, gatewayPods)
				if grpcOpen && !gateway {
					t.Errorf("NetworkPolicy %s ingress[%d]: opens Triton's gRPC port to more than the gateway", np.Name, i)
				}
			}
		}
	}
}

func TestPostgres(t *testing.T) {
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		d := decodeAll(t, objs)
		if len(d.clusters) != 1 || len(d.databases) != 1 || len(d.poolers) != 1 {
			t.Fatalf("%d Clusters, %d Databases, %d Poolers: want one each", len(d.clusters), len(d.databases), len(d.poolers))
		}
		cluster, db, pooler := d.clusters[0], d.databases[0], d.poolers[0]
		if db.Spec.Cluster.Name != cluster.Metadata.Name || pooler.Spec.Cluster.Name != cluster.Metadata.Name {
			t.Errorf("Database and Pooler name clusters %s and %s; the Cluster is %s", db.Spec.Cluster.Name, pooler.Spec.Cluster.Name, cluster.Metadata.Name)
		}
		if !slices.ContainsFunc(db.Spec.Extensions, func(e cnpgExtension) bool { return e.Name == "vector" && e.Ensure != "absent" }) {
			t.Error("Database: does not enable the vector extension")
		}
		if init := cluster.Spec.Bootstrap; init == nil || init.InitDB == nil || init.InitDB.Owner != db.Spec.Owner || init.InitDB.Database != db.Spec.Name {
			t.Error("Cluster's initdb database and owner differ from the Database's")
		}
		if pb := pooler.Spec.PgBouncer; pb == nil || pb.PoolMode != "transaction" || pooler.Spec.Type != "rw" {
			t.Error("Pooler: want PgBouncer in transaction mode in front of the primary (type rw)")
		}
		// The gateway connects through the pooler, to the Database's name.
		raw := d.gatewaySecret(t, "DATABASE_URL")
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("DATABASE_URL: %v", err)
		}
		if u.User != nil {
			t.Error("DATABASE_URL holds credentials: they come from PGUSER and PGPASSWORD")
		}
		if u.Hostname() != pooler.Metadata.Name || u.Port() != "5432" {
			t.Errorf("DATABASE_URL host %s: want the Pooler's Service %s:5432", u.Host, pooler.Metadata.Name)
		}
		if strings.TrimPrefix(u.Path, "/") != db.Spec.Name {
			t.Errorf("DATABASE_URL database %s: want %s", u.Path, db.Spec.Name)
		}
		if u.Query().Get("sslmode") == "" || u.Query().Get("sslmode") == "disable" {
			t.Error("DATABASE_URL: TLS not required")
		}
	})
}

func TestAutoscaling(t *testing.T) {
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		d := decodeAll(t, objs)
		if len(d.scaledObjects) != 1 {
			t.Fatalf("%d ScaledObjects: want 1, for Triton", len(d.scaledObjects))
		}
		so := d.scaledObjects[0]
		if so.Spec.ScaleTargetRef.Kind != "StatefulSet" || so.Spec.ScaleTargetRef.Name != "colpali-triton" {
			t.Errorf("ScaledObject scales %s/%s: want Triton", so.Spec.ScaleTargetRef.Kind, so.Spec.ScaleTargetRef.Name)
		}
		adv := so.Spec.Advanced
		if adv == nil || adv.HorizontalPodAutoscalerConfig == nil || adv.HorizontalPodAutoscalerConfig.Behavior == nil ||
			adv.HorizontalPodAutoscalerConfig.Behavior.ScaleDown == nil || ptrValue(adv.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds, 0) < 300 {
			t.Error("ScaledObject: want a scale-down stabilisation window of at least 5 minutes")
		}
		var cpu bool
		for _, h := range d.hpas {
			if h.Spec.ScaleTargetRef.Name == "colpali-gateway" {
				for _, m := range h.Spec.Metrics {
					cpu = cpu || m.Resource != nil && m.Resource.Name == corev1.ResourceCPU
				}
			}
		}
		if !cpu {
			t.Error("the gateway does not scale on CPU")
		}
	})
}
