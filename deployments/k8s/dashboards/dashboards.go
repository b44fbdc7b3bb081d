// Package dashboards builds colpali-gateway's Grafana dashboards with the
// Grafana Foundation SDK's typed builders, so that a misspelt option or a
// panel of the wrong kind fails to compile rather than to render.
//
// `go generate ./...` in deployments/k8s writes them as JSON into
// base/monitoring/dashboards, where Kustomize turns them into ConfigMaps
// for Grafana's dashboard sidecar; the tests there fail when the committed
// JSON differs from what this package builds, and check every query's
// PromQL and the metrics it names.
//
// Every query selects on job (the ServiceMonitor's or PodMonitor's) and on
// the dashboard's namespace variable, so one Grafana serves the dev and
// prod overlays side by side.
//
// They use the SDK's classic dashboard model (package dashboard), which it
// marks deprecated in favour of dashboardv2: Grafana's dashboard sidecar
// provisions files, and file provisioning has always read the classic JSON
// model, while the v2 schema needs a Grafana 12 with its v2 dashboard API
// turned on.
package dashboards

//lint:file-ignore SA1019 the classic dashboard model on purpose, as said above

//go:generate go run ./gen -out ../base/monitoring/dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// File is one generated dashboard: the name of its JSON file and its bytes.
type File struct {
	Name string
	JSON []byte
}

// All builds every dashboard, in a fixed order, as indented JSON.
func All() ([]File, error) {
	builders := []struct {
		name  string
		build func() *dashboard.DashboardBuilder
	}{
		{"colpali-gateway.json", gateway},
		{"colpali-routing.json", routing},
		{"colpali-triton.json", triton},
		{"colpali-store.json", store},
	}
	files := make([]File, 0, len(builders))
	for _, b := range builders {
		d, err := b.build().Build()
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.name, err)
		}
		numberPanels(&d)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.name, err)
		}
		files = append(files, File{Name: b.name, JSON: buf.Bytes()})
	}
	return files, nil
}

// numberPanels gives every panel and row its own id, in order: links to a
// panel (viewPanel=N) then stay stable from one generation to the next.
func numberPanels(d *dashboard.Dashboard) {
	for i := range d.Panels {
		id := uint32(i + 1)
		switch p := d.Panels[i]; {
		case p.Panel != nil:
			p.Panel.Id = &id
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		}
	}
}

// Selectors every query starts from: a job (set by the monitors in
// base/monitoring) in the namespace the dashboard shows.
const (
	gatewaySel = `job="colpali-gateway", namespace="$namespace"`
	tritonSel  = `job="colpali-triton", namespace="$namespace"`
	// The API's own services, not gRPC health or reflection.
	apiSel      = gatewaySel + `, grpc_service=~"colpali.v1.*"`
	postgresSel = `job="colpali-postgres", namespace="$namespace"`
	poolerSel   = `job="colpali-postgres-pooler-rw", namespace="$namespace"`
)

func ptr[T any](v T) *T { return &v }

var datasource = common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${datasource}")}

// newDashboard starts a dashboard with the variables every one has: the
// Prometheus data source and the namespace (an overlay) to show.
func newDashboard(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"colpali"}).
		Refresh("30s").
		Time("now-3h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder("namespace").
			Label("Namespace").
			Datasource(datasource).
			Query(dashboard.StringOrMap{String: ptr(`label_values(up{job="colpali-gateway"}, namespace)`)}).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc))
}

// query is one PromQL target, with its legend.
func query(expr, legend string) *prometheus.DataqueryBuilder {
	return prometheus.NewDataqueryBuilder().
		Datasource(datasource).
		Expr(expr).
		LegendFormat(legend)
}

// graph is a time series panel of the given unit, half a row wide.
func graph(title, description, unit string, targets ...cog.Builder[variants.Dataquery]) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().
		Title(title).
		Description(description).
		Datasource(datasource).
		Unit(unit).
		Height(8).
		Span(12).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeList).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true))
	for _, t := range targets {
		p = p.WithTarget(t)
	}
	return p
}

// quantile is the q-quantile of a histogram, by the given labels.
func quantile(q float64, metric, sel, by string) string {
	return fmt.Sprintf(`histogram_quantile(%g, sum by (%s, le) (rate(%s_bucket{%s}[$__rate_interval])))`, q, by, metric, sel)
}

// rateBy is a counter's per-second rate summed by the given labels.
func rateBy(metric, sel, by string) string {
	return fmt.Sprintf(`sum by (%s) (rate(%s{%s}[$__rate_interval]))`, by, metric, sel)
}
