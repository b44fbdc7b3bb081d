package k8s

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	sigsjson "sigs.k8s.io/json"
)

// scheme knows only the API versions the manifests may use: an object of
// a removed or older version (policy/v1beta1, autoscaling/v2beta2) has no
// type here and fails to decode, as it would fail to apply.
var scheme = runtime.NewScheme()

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		utilruntime.Must(add(scheme))
	}
}

// strict decodes Kubernetes and prometheus-operator objects: an unknown or
// duplicated field or a value of the wrong type is an error.
var strict = serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

// decoded is an overlay's objects, each decoded into its type.
type decoded struct {
	namespace       string
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	serviceAccounts []*corev1.ServiceAccount
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	networkPolicies []*networkingv1.NetworkPolicy
	serviceMonitors []*monitoringv1.ServiceMonitor
	podMonitors     []*monitoringv1.PodMonitor
	rules           []*monitoringv1.PrometheusRule
	clusters        []*cnpgCluster
	databases       []*cnpgDatabase
	poolers         []*cnpgPooler
	scaledObjects   []*kedaScaledObject
}

// decodeAll decodes every object of objs, and fails the test on any that
// does not decode strictly or has no type here.
func decodeAll(t *testing.T, objs []object) *decoded {
	t.Helper()
	d := &decoded{}
	for _, o := range objs {
		if err := d.add(o); err != nil {
			t.Errorf("%s: %v", o, err)
		}
	}
	return d
}

func (d *decoded) add(o object) error {
	if cr, ok := customResources[o.APIVersion+"/"+o.Kind]; ok {
		v, err := cr(o.JSON)
		if err != nil {
			return err
		}
		switch v := v.(type) {
		case *cnpgCluster:
			d.clusters = append(d.clusters, v)
		case *cnpgDatabase:
			d.databases = append(d.databases, v)
		case *cnpgPooler:
			d.poolers = append(d.poolers, v)
		case *kedaScaledObject:
			d.scaledObjects = append(d.scaledObjects, v)
		}
		return nil
	}
	obj, _, err := strict.Decode(o.JSON, nil, nil)
	if err != nil {
		return err
	}
	switch v := obj.(type) {
	case *corev1.Namespace:
		d.namespace = v.Name
	case *appsv1.Deployment:
		d.deployments = append(d.deployments, v)
	case *appsv1.StatefulSet:
		d.statefulSets = append(d.statefulSets, v)
	case *corev1.Service:
		d.services = append(d.services, v)
	case *corev1.ConfigMap:
		d.configMaps = append(d.configMaps, v)
	case *corev1.Secret:
		d.secrets = append(d.secrets, v)
	case *corev1.ServiceAccount:
		d.serviceAccounts = append(d.serviceAccounts, v)
	case *policyv1.PodDisruptionBudget:
		d.pdbs = append(d.pdbs, v)
	case *autoscalingv2.HorizontalPodAutoscaler:
		d.hpas = append(d.hpas, v)
	case *networkingv1.NetworkPolicy:
		d.networkPolicies = append(d.networkPolicies, v)
	case *monitoringv1.ServiceMonitor:
		d.serviceMonitors = append(d.serviceMonitors, v)
	case *monitoringv1.PodMonitor:
		d.podMonitors = append(d.podMonitors, v)
	case *monitoringv1.PrometheusRule:
		d.rules = append(d.rules, v)
	default:
		return fmt.Errorf("decoded as %T, which no check here covers: add it to decoded", obj)
	}
	return nil
}

// decodeStrictJSON decodes data into v as the API server would: field
// names matched case-sensitively, and an unknown or duplicated field an
// error. It serves the custom resources' own schema (crd_test.go).
func decodeStrictJSON(data []byte, v any) error {
	strictErrs, err := sigsjson.UnmarshalStrict(data, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

func TestObjectsDecodeStrictly(t *testing.T) {
	eachOverlay(t, func(t *testing.T, overlay string, objs []object) {
		d := decodeAll(t, objs)
		if d.namespace == "" {
			t.Error("the overlay creates no Namespace")
		}
	})
}

// TestStrictDecodingCatches proves the decoding above refuses what it
// should, so that a pass means something.
func TestStrictDecodingCatches(t *testing.T) {
	bad := map[string]string{
		"unknown field": `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicaz":2}}`,
		"wrong type":    `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":"two"}}`,
		"removed API":   `{"apiVersion":"policy/v1beta1","kind":"PodDisruptionBudget","metadata":{"name":"x"},"spec":{}}`,
		"old HPA API":   `{"apiVersion":"autoscaling/v2beta2","kind":"HorizontalPodAutoscaler","metadata":{"name":"x"},"spec":{}}`,
		"typo in a ServiceMonitor": `{"apiVersion":"monitoring.coreos.com/v1","kind":"ServiceMonitor","metadata":{"name":"x"},` +
			`"spec":{"selector":{},"endpoints":[{"port":"http","intervall":"15s"}]}}`,
		"field in the wrong case in a Pooler": `{"apiVersion":"postgresql.cnpg.io/v1","kind":"Pooler","metadata":{"name":"x"},` +
			`"spec":{"cluster":{"name":"c"},"type":"rw","instances":1,"pgbouncer":{"PoolMode":"transaction"}}}`,
		"unknown field in a Pooler": `{"apiVersion":"postgresql.cnpg.io/v1","kind":"Pooler","metadata":{"name":"x"},` +
			`"spec":{"cluster":{"name":"c"},"type":"rw","instances":1,"pgbouncer":{"poolMode":"transaction","pool_mode":"session"}}}`,
		"a PgBouncer setting CloudNativePG owns": `{"apiVersion":"postgresql.cnpg.io/v1","kind":"Pooler","metadata":{"name":"x"},` +
			`"spec":{"cluster":{"name":"c"},"type":"rw","instances":1,"pgbouncer":{"poolMode":"transaction","parameters":{"pool_mode":"session"}}}}`,
		"Pooler without a cluster": `{"apiVersion":"postgresql.cnpg.io/v1","kind":"Pooler","metadata":{"name":"x"},` +
			`"spec":{"type":"rw","instances":1,"pgbouncer":{"poolMode":"transaction"}}}`,
		"ScaledObject without triggers": `{"apiVersion":"keda.sh/v1alpha1","kind":"ScaledObject","metadata":{"name":"x"},` +
			`"spec":{"scaleTargetRef":{"name":"t"}}}`,
	}
	for name, js := range bad {
		var head struct{ APIVersion, Kind string }
		if err := json.Unmarshal([]byte(js), &head); err != nil {
			t.Fatal(err)
		}
		err := (&decoded{}).add(object{APIVersion: head.APIVersion, Kind: head.Kind, Name: "x", JSON: []byte(js)})
		if err == nil {
			t.Errorf("%s: decoded without error", name)
			continue
		}
		t.Logf("%s: %v", name, strings.SplitN(err.Error(), "\n", 2)[0])
	}
}
