// Command gen writes colpali-gateway's Grafana dashboards (package
// dashboards) as JSON files into -out, replacing what is there.
//
//	go run ./dashboards/gen -out base/monitoring/dashboards
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/morphik-org/colpali-gateway/deployments/k8s/dashboards"
)

func main() {
	out := flag.String("out", "base/monitoring/dashboards", "directory to write the dashboards' JSON into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	files, err := dashboards.All()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(out, f.Name), f.JSON, 0o644); err != nil {
			return err
		}
	}
	return nil
}
