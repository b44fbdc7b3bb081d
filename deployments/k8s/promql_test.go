package k8s

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/morphik-org/colpali-gateway/deployments/k8s/dashboards"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// externalMetrics are the series the manifests name that neither the
// gateway nor the Triton simulator exports, with where they come from. The
// simulator exports every Triton metric the manifests use today; a
// Triton-only one (nv_cpu_utilization, say) would be listed here too.
var externalMetrics = map[string]string{
	"up": "Prometheus, per scrape target",
	// CloudNativePG's instance exporter (port 9187): its own collector and
	// the default monitoring queries (cnpg-default-monitoring).
	"cnpg_collector_up":           "CloudNativePG instance exporter: 1 while it reaches Postgres",
	"cnpg_backends_total":         "CloudNativePG default query backends: connections by database, user and state",
	"cnpg_pg_database_size_bytes": "CloudNativePG default query pg_database: size per database",
	"cnpg_pg_replication_lag":     "CloudNativePG default query pg_replication: seconds behind the primary",
	// CloudNativePG's PgBouncer exporter (port 9127): SHOW POOLS.
	"cnpg_pgbouncer_up":               "CloudNativePG PgBouncer exporter: 1 while it reaches PgBouncer",
	"cnpg_pgbouncer_pools_cl_active":  "CloudNativePG PgBouncer exporter: SHOW POOLS cl_active",
	"cnpg_pgbouncer_pools_cl_waiting": "CloudNativePG PgBouncer exporter: SHOW POOLS cl_waiting",
	"cnpg_pgbouncer_pools_sv_active":  "CloudNativePG PgBouncer exporter: SHOW POOLS sv_active",
	"cnpg_pgbouncer_pools_sv_idle":    "CloudNativePG PgBouncer exporter: SHOW POOLS sv_idle",
	"cnpg_pgbouncer_pools_maxwait":    "CloudNativePG PgBouncer exporter: SHOW POOLS maxwait",
}

// jobOf is the scrape job each source's series carry (the monitors in
// base/monitoring set them).
func jobOf(metric, exporter string) string {
	switch {
	case exporter == "gateway":
		return "colpali-gateway"
	case exporter == "tritonsim":
		return "colpali-triton"
	case strings.HasPrefix(metric, "cnpg_pgbouncer_"):
		return "colpali-postgres-pooler-rw"
	case strings.HasPrefix(metric, "cnpg_"):
		return "colpali-postgres"
	}
	return ""
}

// promQL is one expression and where it was found.
type promQL struct {
	where, expr string
}

// grafanaVar matches Grafana's variables and macros in a query.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)\}?`)

// fromGrafana replaces Grafana's variables with values PromQL accepts:
// interval macros with a duration, the others with a label value.
func fromGrafana(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		if strings.Contains(v, "interval") || strings.Contains(v, "__range") {
			return "5m"
		}
		return "grafana_variable"
	})
}

// labelValues matches Grafana's label_values(selector, label) variable
// query, whose selector is PromQL.
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*\w+\)$`)

// expressions gathers every PromQL expression of an overlay: its
// PrometheusRule, its ScaledObject's queries and the dashboards' queries
// (their Grafana variables replaced).
func expressions(t *testing.T, d *decoded) (exprs []promQL, recorded []string) {
	t.Helper()
	for _, r := range d.rules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				name := rule.Alert + rule.Record
				exprs = append(exprs, promQL{fmt.Sprintf("PrometheusRule %s group %s rule %s", r.Name, g.Name, name), rule.Expr.String()})
				if rule.Record != "" {
					recorded = append(recorded, rule.Record)
				}
			}
		}
	}
	for _, so := range d.scaledObjects {
		for i, tr := range so.Spec.Triggers {
			if q, ok := tr.Metadata["query"]; ok {
				exprs = append(exprs, promQL{fmt.Sprintf("ScaledObject %s trigger %d", so.Metadata.Name, i), q})
			}
		}
	}
	for _, cm := range d.configMaps {
		for file, js := range cm.Data {
			if strings.HasSuffix(file, ".json") {
				exprs = append(exprs, dashboardExprs(t, cm.Name+"/"+file, js)...)
			}
		}
	}
	return exprs, recorded
}

func dashboardExprs(t *testing.T, where, js string) []promQL {
	t.Helper()
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(js), &dash); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	var exprs []promQL
	for _, p := range dash.Panels {
		for i, tg := range p.Targets {
			exprs = append(exprs, promQL{fmt.Sprintf("dashboard %s panel %q target %d", where, p.Title, i), fromGrafana(tg.Expr)})
		}
	}
	for _, v := range dash.Templating.List {
		q, ok := v.Query.(string)
		if v.Type != "query" || !ok {
			continue
		}
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("%s variable %s: query %q is not label_values(selector, label)", where, v.Name, q)
			continue
		}
		exprs = append(exprs, promQL{fmt.Sprintf("dashboard %s variable %s", where, v.Name), m[1]})
	}
	return exprs
}

// selectors returns the vector selectors of an expression.
func selectors(e parser.Expr) []*parser.VectorSelector {
	var vs []*parser.VectorSelector
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if v, ok := n.(*parser.VectorSelector); ok {
			vs = append(vs, v)
		}
		return nil
	})
	return vs
}

func matcherValues(v *parser.VectorSelector, label string) (values []string, found bool) {
	for _, m := range v.LabelMatchers {
		if m.Name != label {
			continue
		}
		switch m.Type {
		case labels.MatchEqual:
			return []string{m.Value}, true
		case labels.MatchRegexp:
			return strings.Split(m.Value, "|"), true
		}
	}
	return nil, false
}

func metricName(v *parser.VectorSelector) string {
	if v.Name != "" {
		return v.Name
	}
	names, _ := matcherValues(v, model.MetricNameLabel)
	return strings.Join(names, "|")
}

func TestPromQL(t *testing.T) {
	exported := exportedMetrics(t)
	p := parser.NewParser(parser.Options{})
	eachOverlay(t, func(t *testing.T, overlay string, objs []object) {
		d := decodeAll(t, objs)
		exprs, recorded := expressions(t, d)
		if len(exprs) < 50 {
			t.Fatalf("found %d expressions: the rules, the autoscaler and the dashboards have more", len(exprs))
		}
		for _, x := range exprs {
			e, err := p.ParseExpr(x.expr)
			if err != nil {
				t.Errorf("%s: %v\n%s", x.where, err, x.expr)
				continue
			}
			for _, v := range selectors(e) {
				name := metricName(v)
				exporter, ok := exported[name]
				switch {
				case ok:
				case slices.Contains(recorded, name):
					continue
				case externalMetrics[name] != "":
				default:
					t.Errorf("%s: %s is exported by neither the gateway nor the simulator, recorded by no rule, and not in externalMetrics", x.where, name)
					continue
				}
				if jobs, ok := matcherValues(v, "job"); ok && name != "up" {
					if want := jobOf(name, exporter); !slices.Contains(jobs, want) {
						t.Errorf("%s: %s selected with job %v; its series carry job=%q", x.where, name, jobs, want)
					}
				}
				// The autoscaler reads one namespace: its overlay's.
				if strings.HasPrefix(x.where, "ScaledObject") {
					if ns, _ := matcherValues(v, "namespace"); !slices.Equal(ns, []string{d.namespace}) {
						t.Errorf("%s: %s selected in namespace %v; the overlay is %s", x.where, name, ns, d.namespace)
					}
				}
			}
		}
		t.Logf("%d expressions parsed and their metrics found", len(exprs))
	})
}

// githubAnchor is the anchor GitHub gives a Markdown heading.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestEveryAlertHasARunbook(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for line := range strings.Lines(string(readme)) {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			anchors[githubAnchor(strings.TrimLeft(h, "#"))] = true
		}
	}
	d := decodeAll(t, render(t)["prod"])
	var alerts int
	for _, r := range d.rules {
		for _, g := range r.Spec.Groups {
			for _, rule := range g.Rules {
				if rule.Alert == "" {
					continue
				}
				alerts++
				if s := rule.Labels["severity"]; s != "critical" && s != "warning" {
					t.Errorf("alert %s: severity %q: want critical or warning", rule.Alert, s)
				}
				url := rule.Annotations["runbook_url"]
				_, anchor, _ := strings.Cut(url, "#")
				if !strings.Contains(url, "deployments/k8s/README.md#") || !anchors[anchor] {
					t.Errorf("alert %s: runbook_url %q: want deployments/k8s/README.md#<a heading of it>", rule.Alert, url)
				}
				if anchor != strings.ToLower(rule.Alert) {
					t.Errorf("alert %s: its runbook's heading should be the alert's name", rule.Alert)
				}
			}
		}
	}
	if alerts < 6 {
		t.Errorf("%d alerts: the issue asks for six kinds", alerts)
	}
}

func TestDashboardsGenerated(t *testing.T) {
	files, err := dashboards.All()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("base", "monitoring", "dashboards")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var committed []string
	for _, e := range entries {
		committed = append(committed, e.Name())
	}
	var generated []string
	for _, f := range files {
		generated = append(generated, f.Name)
		got, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil {
			t.Errorf("%v: run go generate ./... in deployments/k8s", err)
			continue
		}
		if string(got) != string(f.JSON) {
			t.Errorf("%s differs from what package dashboards generates: run go generate ./... in deployments/k8s", f.Name)
		}
	}
	slices.Sort(generated)
	if !slices.Equal(committed, generated) {
		t.Errorf("%s holds %v; package dashboards generates %v", dir, committed, generated)
	}
}
