package k8s

import (
	"errors"
	"fmt"
	"slices"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Our own schema of the custom resources that have no Go types here
// (CloudNativePG's and KEDA's modules would bring in their operators): the
// subset of each CRD the manifests use, decoded strictly (an unknown field
// is an error, so a typo is too) and checked for the fields the CRD
// requires and for values it accepts. Extend a type when a manifest uses a
// field it lacks; take the field from the CRD's reference, not from memory:
//   - CloudNativePG: https://cloudnative-pg.io/documentation/current/cloudnative-pg.v1/
//   - KEDA: https://keda.sh/docs/latest/reference/scaledobject-spec/

// customResources decode one apiVersion/kind each.
var customResources = map[string]func([]byte) (any, error){
	"postgresql.cnpg.io/v1/Cluster":  decodeCR[cnpgCluster],
	"postgresql.cnpg.io/v1/Database": decodeCR[cnpgDatabase],
	"postgresql.cnpg.io/v1/Pooler":   decodeCR[cnpgPooler],
	"keda.sh/v1alpha1/ScaledObject":  decodeCR[kedaScaledObject],
}

// validator is a custom resource that checks its required fields.
type validator interface{ validate() error }

func decodeCR[T any, PT interface {
	*T
	validator
}](data []byte) (any, error) {
	v := PT(new(T))
	if err := decodeStrictJSON(data, v); err != nil {
		return nil, err
	}
	return v, v.validate()
}

// required returns an error naming field when it is empty.
func required[T comparable](field string, v T) error {
	var zero T
	if v == zero {
		return fmt.Errorf("%s: required", field)
	}
	return nil
}

func oneOf(field, v string, allowed ...string) error {
	if !slices.Contains(allowed, v) {
		return fmt.Errorf("%s %q: want one of %q", field, v, allowed)
	}
	return nil
}

type localRef struct {
	Name string `json:"name"`
}

type cnpgCluster struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Instances             int    `json:"instances"`
		ImageName             string `json:"imageName"`
		PrimaryUpdateStrategy string `json:"primaryUpdateStrategy,omitempty"`
		Bootstrap             *struct {
			InitDB *struct {
				Database string `json:"database"`
				Owner    string `json:"owner"`
			} `json:"initdb,omitempty"`
		} `json:"bootstrap,omitempty"`
		PostgreSQL struct {
			Parameters map[string]string `json:"parameters,omitempty"`
		} `json:"postgresql"`
		Resources  corev1.ResourceRequirements `json:"resources"`
		Storage    cnpgStorage                 `json:"storage"`
		WALStorage *cnpgStorage                `json:"walStorage,omitempty"`
		Affinity   *struct {
			EnablePodAntiAffinity *bool  `json:"enablePodAntiAffinity,omitempty"`
			TopologyKey           string `json:"topologyKey,omitempty"`
		} `json:"affinity,omitempty"`
	} `json:"spec"`
}

type cnpgStorage struct {
	Size string `json:"size"`
}

func (c *cnpgCluster) validate() error {
	s := c.Spec
	errs := []error{
		required("metadata.name", c.Metadata.Name),
		required("spec.imageName", s.ImageName),
		required("spec.storage.size", s.Storage.Size),
	}
	if s.Instances < 1 {
		errs = append(errs, fmt.Errorf("spec.instances %d: must be at least 1", s.Instances))
	}
	if s.PrimaryUpdateStrategy != "" {
		errs = append(errs, oneOf("spec.primaryUpdateStrategy", s.PrimaryUpdateStrategy, "unsupervised", "supervised"))
	}
	if b := s.Bootstrap; b != nil && b.InitDB != nil {
		errs = append(errs, required("spec.bootstrap.initdb.database", b.InitDB.Database), required("spec.bootstrap.initdb.owner", b.InitDB.Owner))
	}
	if s.WALStorage != nil {
		errs = append(errs, required("spec.walStorage.size", s.WALStorage.Size))
	}
	return errors.Join(errs...)
}

type cnpgDatabase struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Cluster               localRef        `json:"cluster"`
		Name                  string          `json:"name"`
		Owner                 string          `json:"owner"`
		Ensure                string          `json:"ensure,omitempty"`
		DatabaseReclaimPolicy string          `json:"databaseReclaimPolicy,omitempty"`
		Extensions            []cnpgExtension `json:"extensions,omitempty"`
	} `json:"spec"`
}

type cnpgExtension struct {
	Name    string `json:"name"`
	Ensure  string `json:"ensure,omitempty"`
	Version string `json:"version,omitempty"`
	Schema  string `json:"schema,omitempty"`
}

func (d *cnpgDatabase) validate() error {
	s := d.Spec
	errs := []error{
		required("spec.cluster.name", s.Cluster.Name),
		required("spec.name", s.Name),
		required("spec.owner", s.Owner),
	}
	if s.Ensure != "" {
		errs = append(errs, oneOf("spec.ensure", s.Ensure, "present", "absent"))
	}
	if s.DatabaseReclaimPolicy != "" {
		errs = append(errs, oneOf("spec.databaseReclaimPolicy", s.DatabaseReclaimPolicy, "retain", "delete"))
	}
	for i, e := range s.Extensions {
		errs = append(errs, required(fmt.Sprintf("spec.extensions[%d].name", i), e.Name))
		if e.Ensure != "" {
			errs = append(errs, oneOf(fmt.Sprintf("spec.extensions[%d].ensure", i), e.Ensure, "present", "absent"))
		}
	}
	return errors.Join(errs...)
}

type cnpgPooler struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Cluster   localRef `json:"cluster"`
		Instances *int     `json:"instances,omitempty"`
		Type      string   `json:"type,omitempty"`
		PgBouncer *struct {
			PoolMode   string            `json:"poolMode,omitempty"`
			Parameters map[string]string `json:"parameters,omitempty"`
		} `json:"pgbouncer"`
		Template *corev1.PodTemplateSpec `json:"template,omitempty"`
	} `json:"spec"`
}

func (p *cnpgPooler) validate() error {
	s := p.Spec
	errs := []error{required("spec.cluster.name", s.Cluster.Name)}
	if s.Type != "" {
		errs = append(errs, oneOf("spec.type", s.Type, "rw", "ro", "r"))
	}
	if s.Instances != nil && *s.Instances < 0 {
		errs = append(errs, fmt.Errorf("spec.instances %d: must not be negative", *s.Instances))
	}
	if s.Cluster.Name == p.Metadata.Name {
		errs = append(errs, fmt.Errorf("metadata.name %q: a Pooler may not share its Cluster's name", p.Metadata.Name))
	}
	if s.PgBouncer == nil {
		errs = append(errs, errors.New("spec.pgbouncer: required"))
	} else {
		if s.PgBouncer.PoolMode != "" {
			errs = append(errs, oneOf("spec.pgbouncer.poolMode", s.PgBouncer.PoolMode, "session", "transaction"))
		}
		for k := range s.PgBouncer.Parameters {
			if !slices.Contains(pgbouncerParameters, k) {
				errs = append(errs, fmt.Errorf("spec.pgbouncer.parameters.%s: not one CloudNativePG lets through (the operator owns the others)", k))
			}
		}
	}
	if t := s.Template; t != nil && len(t.Spec.Containers) == 0 {
		errs = append(errs, errors.New("spec.template.spec.containers: required when a template is given"))
	}
	return errors.Join(errs...)
}

// pgbouncerParameters are the PgBouncer settings CloudNativePG's webhook
// accepts in a Pooler (its allowed list); it refuses the rest, which it
// sets itself (listen address, auth, pool_mode).
var pgbouncerParameters = []string{
	"application_name_add_host", "autodb_idle_timeout", "client_idle_timeout", "client_login_timeout",
	"default_pool_size", "disable_pqexec", "idle_transaction_timeout", "ignore_startup_parameters",
	"log_connections", "log_disconnections", "log_pooler_errors", "log_stats", "max_client_conn",
	"max_db_connections", "max_prepared_statements", "max_user_connections", "min_pool_size",
	"query_timeout", "query_wait_timeout", "reserve_pool_size", "reserve_pool_timeout",
	"server_check_delay", "server_check_query", "server_connect_timeout", "server_fast_close",
	"server_idle_timeout", "server_lifetime", "server_login_retry", "server_reset_query",
	"server_reset_query_always", "server_round_robin", "stats_period", "verbose",
}

type kedaScaledObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type       string            `json:"type"`
			MetricType string            `json:"metricType,omitempty"`
			Metadata   map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

func (s *kedaScaledObject) validate() error {
	sp := s.Spec
	errs := []error{required("spec.scaleTargetRef.name", sp.ScaleTargetRef.Name)}
	if len(sp.Triggers) == 0 {
		errs = append(errs, errors.New("spec.triggers: required"))
	}
	if sp.MinReplicaCount != nil && sp.MaxReplicaCount != nil && *sp.MinReplicaCount > *sp.MaxReplicaCount {
		errs = append(errs, fmt.Errorf("spec.minReplicaCount %d: above spec.maxReplicaCount %d", *sp.MinReplicaCount, *sp.MaxReplicaCount))
	}
	for i, tr := range sp.Triggers {
		errs = append(errs, required(fmt.Sprintf("spec.triggers[%d].type", i), tr.Type))
		if tr.MetricType != "" {
			errs = append(errs, oneOf(fmt.Sprintf("spec.triggers[%d].metricType", i), tr.MetricType, "AverageValue", "Value", "Utilization"))
		}
		if tr.Type == "prometheus" {
			for _, k := range []string{"serverAddress", "query", "threshold"} {
				errs = append(errs, required(fmt.Sprintf("spec.triggers[%d].metadata.%s", i, k), tr.Metadata[k]))
			}
		}
	}
	return errors.Join(errs...)
}
