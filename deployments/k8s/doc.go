// Package k8s holds the offline checks of colpali-gateway's Kubernetes
// manifests (base/ and overlays/ here): every overlay is built with
// Kustomize's Go API, every object is decoded strictly into its Kubernetes,
// prometheus-operator or (for CloudNativePG and KEDA) our own type, and the
// project's rules are asserted on the result, down to running the gateway
// and the Triton simulator with the rendered configuration and reading the
// metrics the alerts and dashboards name.
//
// It is its own Go module so that Kubernetes, Kustomize and Prometheus stay
// out of the product's go.mod; its go.sum pins them. `make k8s-check` (part
// of `make test`) runs it: `cd deployments/k8s && go test ./...`.
package k8s
