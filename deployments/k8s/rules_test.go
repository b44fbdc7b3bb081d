package k8s

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// reporter receives a rule's violations: the test itself, or a collector
// in TestRulesCatchBrokenManifests.
type reporter interface {
	Errorf(format string, args ...any)
}

// workload is a Deployment or a StatefulSet: what the rules below need.
type workload struct {
	Kind, Name string
	Replicas   int32
	Selector   *metav1.LabelSelector
	Template   corev1.PodTemplateSpec
}

func (w workload) String() string { return w.Kind + "/" + w.Name }

func (d *decoded) workloads() []workload {
	var ws []workload
	for _, x := range d.deployments {
		ws = append(ws, workload{"Deployment", x.Name, ptrValue(x.Spec.Replicas, 1), x.Spec.Selector, x.Spec.Template})
	}
	for _, x := range d.statefulSets {
		ws = append(ws, workload{"StatefulSet", x.Name, ptrValue(x.Spec.Replicas, 1), x.Spec.Selector, x.Spec.Template})
	}
	return ws
}

func ptrValue[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// selects reports whether sel matches the pod labels; a nil or invalid
// selector matches nothing.
func selects(sel *metav1.LabelSelector, podLabels map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return false
	}
	return s.Matches(labels.Set(podLabels))
}

// workloadsSelected returns the workloads whose pods sel matches.
func (d *decoded) workloadsSelected(sel *metav1.LabelSelector) []workload {
	var out []workload
	for _, w := range d.workloads() {
		if selects(sel, w.Template.Labels) {
			out = append(out, w)
		}
	}
	return out
}

// hasPort reports whether a container of the pod exposes port (by name or
// number).
func hasPort(spec corev1.PodSpec, port intstr.IntOrString) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if port.Type == intstr.String && p.Name == port.StrVal || port.Type == intstr.Int && p.ContainerPort == port.IntVal {
				return true
			}
		}
	}
	return false
}

func probePort(p *corev1.Probe) (intstr.IntOrString, bool) {
	switch {
	case p.HTTPGet != nil:
		return p.HTTPGet.Port, true
	case p.GRPC != nil:
		return intstr.FromInt32(p.GRPC.Port), true
	case p.TCPSocket != nil:
		return p.TCPSocket.Port, true
	}
	return intstr.IntOrString{}, false
}

func TestWorkloadsHaveProbesResourcesAndPDB(t *testing.T) {
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		checkProbesResourcesPDB(t, decodeAll(t, objs))
	})
}

func checkProbesResourcesPDB(r reporter, d *decoded) {
	if len(d.workloads()) == 0 {
		r.Errorf("no workloads")
	}
	for _, w := range d.workloads() {
		for _, c := range w.Template.Spec.Containers {
			where := fmt.Sprintf("%s container %s", w, c.Name)
			probes := map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe}
			for kind, p := range probes {
				if p == nil {
					if kind != "startup" {
						r.Errorf("%s: no %s probe", where, kind)
					}
					continue
				}
				port, ok := probePort(p)
				if !ok {
					r.Errorf("%s: %s probe: neither HTTP, gRPC nor TCP", where, kind)
				} else if !hasPort(w.Template.Spec, port) {
					r.Errorf("%s: %s probe on port %s, which no container exposes", where, kind, port.String())
				}
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[res]; !ok {
					r.Errorf("%s: no %s request", where, res)
				}
				if _, ok := c.Resources.Limits[res]; !ok {
					r.Errorf("%s: no %s limit", where, res)
				}
			}
			if c.Resources.Requests.Memory().Cmp(*c.Resources.Limits.Memory()) > 0 {
				r.Errorf("%s: memory request above its limit", where)
			}
		}
		var pdbs []string
		for _, p := range d.pdbs {
			if selects(p.Spec.Selector, w.Template.Labels) {
				pdbs = append(pdbs, p.Name)
			}
		}
		if len(pdbs) != 1 {
			r.Errorf("%s: covered by %d PodDisruptionBudgets %v, want 1", w, len(pdbs), pdbs)
		}
	}
}

func TestSelectorsMatchPodLabels(t *testing.T) {
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		checkSelectors(t, decodeAll(t, objs))
	})
}

func checkSelectors(r reporter, d *decoded) {
	for _, w := range d.workloads() {
		if !selects(w.Selector, w.Template.Labels) {
			r.Errorf("%s: its selector does not match its own pod labels", w)
		}
	}
	for _, s := range d.services {
		ws := d.workloadsSelected(&metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if len(ws) != 1 {
			r.Errorf("Service %s: selects %d workloads %v, want 1", s.Name, len(ws), ws)
			continue
		}
		for _, p := range s.Spec.Ports {
			if !hasPort(ws[0].Template.Spec, p.TargetPort) {
				r.Errorf("Service %s port %s: target %s is no port of %s", s.Name, p.Name, p.TargetPort.String(), ws[0])
			}
		}
	}
	for _, p := range d.pdbs {
		if len(d.workloadsSelected(p.Spec.Selector)) == 0 {
			r.Errorf("PodDisruptionBudget %s: selects no workload", p.Name)
		}
	}
	for _, np := range d.networkPolicies {
		if len(d.workloadsSelected(&np.Spec.PodSelector)) == 0 {
			r.Errorf("NetworkPolicy %s: applies to no workload", np.Name)
		}
		for i, rule := range np.Spec.Ingress {
			for _, from := range rule.From {
				if from.PodSelector != nil && from.NamespaceSelector == nil && len(d.workloadsSelected(from.PodSelector)) == 0 {
					r.Errorf("NetworkPolicy %s ingress[%d]: admits pods of no workload", np.Name, i)
				}
			}
		}
	}
	for _, sm := range d.serviceMonitors {
		var svc *corev1.Service
		for _, s := range d.services {
			if selects(&sm.Spec.Selector, s.Labels) {
				svc = s
			}
		}
		if svc == nil {
			r.Errorf("ServiceMonitor %s: selects no Service", sm.Name)
			continue
		}
		for _, e := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
				r.Errorf("ServiceMonitor %s: port %q is no port of Service %s", sm.Name, e.Port, svc.Name)
			}
		}
	}
	for _, pm := range d.podMonitors {
		// CloudNativePG makes the Postgres and PgBouncer pods; the
		// operator names their metrics port "metrics".
		if _, ok := pm.Spec.Selector.MatchLabels["cnpg.io/cluster"]; ok {
			continue
		}
		if _, ok := pm.Spec.Selector.MatchLabels["cnpg.io/poolerName"]; ok {
			continue
		}
		ws := d.workloadsSelected(&pm.Spec.Selector)
		if len(ws) != 1 {
			r.Errorf("PodMonitor %s: selects %d workloads, want 1", pm.Name, len(ws))
			continue
		}
		for _, e := range pm.Spec.PodMetricsEndpoints {
			if !hasPort(ws[0].Template.Spec, intstr.FromString(ptrValue(e.Port, ""))) {
				r.Errorf("PodMonitor %s: port %q is no port of %s", pm.Name, ptrValue(e.Port, ""), ws[0])
			}
		}
	}
	for _, h := range d.hpas {
		ref := h.Spec.ScaleTargetRef
		if !slices.ContainsFunc(d.workloads(), func(w workload) bool { return w.Kind == ref.Kind && w.Name == ref.Name }) {
			r.Errorf("HorizontalPodAutoscaler %s: scales %s/%s, which is not here", h.Name, ref.Kind, ref.Name)
		}
	}
	for _, so := range d.scaledObjects {
		ref := so.Spec.ScaleTargetRef
		if !slices.ContainsFunc(d.workloads(), func(w workload) bool { return w.Kind == ref.Kind && w.Name == ref.Name }) {
			r.Errorf("ScaledObject %s: scales %s/%s, which is not here", so.Metadata.Name, ref.Kind, ref.Name)
		}
	}
}

func TestPodsRunLocked(t *testing.T) {
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		checkPodsLocked(t, decodeAll(t, objs))
	})
}

func checkPodsLocked(r reporter, d *decoded) {
	for _, w := range d.workloads() {
		spec := w.Template.Spec
		if ptrValue(spec.AutomountServiceAccountToken, true) {
			r.Errorf("%s: mounts a service account token it does not use", w)
		}
		podNonRoot := spec.SecurityContext != nil && ptrValue(spec.SecurityContext.RunAsNonRoot, false)
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			where := fmt.Sprintf("%s container %s", w, c.Name)
			sc := c.SecurityContext
			if sc == nil {
				r.Errorf("%s: no securityContext", where)
				continue
			}
			if !podNonRoot && !ptrValue(sc.RunAsNonRoot, false) {
				r.Errorf("%s: may run as root (runAsNonRoot)", where)
			}
			if ptrValue(sc.AllowPrivilegeEscalation, true) {
				r.Errorf("%s: allowPrivilegeEscalation is not false", where)
			}
			if !ptrValue(sc.ReadOnlyRootFilesystem, false) {
				r.Errorf("%s: root filesystem is writable", where)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				r.Errorf("%s: capabilities: want drop [ALL] and nothing added", where)
			}
		}
	}
}

// checkImage refuses an image without a pinned tag or digest.
func checkImage(image string) error {
	name, digest, hasDigest := strings.Cut(image, "@")
	if hasDigest {
		if !strings.HasPrefix(digest, "sha256:") {
			return fmt.Errorf("image %q: digest is not sha256", image)
		}
		return nil
	}
	slash := strings.LastIndex(name, "/")
	colon := strings.LastIndex(name, ":")
	if colon <= slash {
		return fmt.Errorf("image %q: no tag (that is latest)", image)
	}
	if tag := name[colon+1:]; tag == "latest" || tag == "" {
		return fmt.Errorf("image %q: tag %q moves; pin a version", image, tag)
	}
	return nil
}

func TestNoLatestTags(t *testing.T) {
	for _, bad := range []string{"nginx", "nginx:latest", "registry:5000/app", "ghcr.io/x/y:latest"} {
		if checkImage(bad) == nil {
			t.Errorf("checkImage(%q) passed", bad)
		}
	}
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		checkImages(t, decodeAll(t, objs))
	})
}

func checkImages(r reporter, d *decoded) {
	for _, w := range d.workloads() {
		for _, c := range slices.Concat(w.Template.Spec.InitContainers, w.Template.Spec.Containers) {
			if err := checkImage(c.Image); err != nil {
				r.Errorf("%s container %s: %v", w, c.Name, err)
			}
		}
	}
	for _, c := range d.clusters {
		if err := checkImage(c.Spec.ImageName); err != nil {
			r.Errorf("Cluster %s: %v", c.Metadata.Name, err)
		}
	}
}

// externalSecret reports whether a Secret the manifests read but do not
// hold is made by an operator they declare: CloudNativePG keeps the
// application owner's credentials in <cluster>-app.
func (d *decoded) externalSecret(name string) bool {
	cluster, ok := strings.CutSuffix(name, "-app")
	return ok && slices.ContainsFunc(d.clusters, func(c *cnpgCluster) bool { return c.Metadata.Name == cluster })
}

func TestReferencesResolve(t *testing.T) {
	eachOverlay(t, func(t *testing.T, _ string, objs []object) {
		checkReferences(t, decodeAll(t, objs))
	})
}

func checkReferences(r reporter, d *decoded) {
	configMaps := map[string]*corev1.ConfigMap{}
	for _, c := range d.configMaps {
		configMaps[c.Name] = c
	}
	secrets := map[string]*corev1.Secret{}
	for _, s := range d.secrets {
		secrets[s.Name] = s
	}
	for _, w := range d.workloads() {
		spec := w.Template.Spec
		if sa := spec.ServiceAccountName; sa != "" && !slices.ContainsFunc(d.serviceAccounts, func(s *corev1.ServiceAccount) bool { return s.Name == sa }) {
			r.Errorf("%s: service account %s is not here", w, sa)
		}
		for _, c := range spec.Containers {
			where := fmt.Sprintf("%s container %s", w, c.Name)
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil && configMaps[e.ConfigMapRef.Name] == nil {
					r.Errorf("%s: envFrom ConfigMap %s is not here", where, e.ConfigMapRef.Name)
				}
				if e.SecretRef != nil && secrets[e.SecretRef.Name] == nil {
					r.Errorf("%s: envFrom Secret %s is not here", where, e.SecretRef.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if ref := e.ValueFrom.SecretKeyRef; ref != nil {
					if s := secrets[ref.Name]; s != nil {
						if _, ok := s.Data[ref.Key]; !ok {
							r.Errorf("%s: env %s: Secret %s has no key %s", where, e.Name, ref.Name, ref.Key)
						}
					} else if !d.externalSecret(ref.Name) {
						r.Errorf("%s: env %s: Secret %s is neither here nor made by an operator declared here", where, e.Name, ref.Name)
					}
				}
				if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
					if cm := configMaps[ref.Name]; cm == nil || cm.Data[ref.Key] == "" {
						r.Errorf("%s: env %s: ConfigMap %s has no key %s", where, e.Name, ref.Name, ref.Key)
					}
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.ConfigMap == nil {
				continue
			}
			cm := configMaps[v.ConfigMap.Name]
			if cm == nil {
				r.Errorf("%s volume %s: ConfigMap %s is not here", w, v.Name, v.ConfigMap.Name)
				continue
			}
			for _, it := range v.ConfigMap.Items {
				if _, ok := cm.Data[it.Key]; !ok {
					r.Errorf("%s volume %s: ConfigMap %s has no key %s", w, v.Name, cm.Name, it.Key)
				}
			}
		}
	}
}

// collector gathers a rule's violations instead of failing a test.
type collector []string

func (c *collector) Errorf(format string, args ...any) { *c = append(*c, fmt.Sprintf(format, args...)) }

// TestRulesCatchBrokenManifests runs each rule on testdata/broken, which
// breaks every one of them, and checks that each says so.
func TestRulesCatchBrokenManifests(t *testing.T) {
	objs, err := build(filepath.Join("testdata", "broken"))
	if err != nil {
		t.Fatal(err)
	}
	d := decodeAll(t, objs)
	for name, c := range map[string]struct {
		check func(reporter, *decoded)
		want  []string
	}{
		"probes, resources and PDBs": {checkProbesResourcesPDB, []string{
			"container gateway: no liveness probe",
			"container gateway: no cpu limit",
			"readiness probe on port 9999, which no container exposes",
			"StatefulSet/colpali-triton: covered by 0 PodDisruptionBudgets",
		}},
		"selectors": {checkSelectors, []string{
			"Service colpali-gateway port grpc: target grpcx is no port",
			"PodDisruptionBudget colpali-triton: selects no workload",
			`ServiceMonitor colpali-gateway: port "web" is no port`,
		}},
		"locked pods": {checkPodsLocked, []string{
			"Deployment/colpali-gateway: mounts a service account token",
			"container gateway: root filesystem is writable",
			"container gateway: capabilities",
		}},
		"pinned images": {checkImages, []string{`tag "latest" moves`}},
		"references":    {checkReferences, []string{"envFrom ConfigMap no-such-config is not here"}},
	} {
		var got collector
		c.check(&got, d)
		for _, w := range c.want {
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, w) }) {
				t.Errorf("%s: no violation saying %q; got %q", name, w, got)
			}
		}
	}
}
