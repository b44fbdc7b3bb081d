package quota

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// OtherTenants is the tenant label of every tenant without an override:
// tenants come from credentials, and a label per tenant would let their
// number grow the metric without bound.
const OtherTenants = "other"

type metrics struct {
	rejections *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "colpali_quota_rejections_total",
			Help: "Calls refused by a tenant quota, by tenant (tenants and keys with an override by name, the rest as \"other\") and limit: calls_per_second, pages_per_second, concurrency, storage_documents, storage_pages.",
		}, []string{"tenant", "limit"}),
	}
	if reg != nil {
		if err := reg.Register(m.rejections); err != nil {
			return nil, errors.Join(errors.New("quota: registering metrics"), err)
		}
	}
	return m, nil
}

// reject counts a refusal; label is already bounded (a tenant or key with
// an override, or OtherTenants).
func (m *metrics) reject(label, limit string) {
	m.rejections.WithLabelValues(label, limit).Inc()
}
