# colpali-gateway. `make help` lists the targets.
#
# Every tool is pinned in tools/go.mod and run with `go tool`, which builds it
# from the Go module proxy on first use: nothing needs to be installed first.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO        ?= go
# The Go release the gateway is built and tested with: the first with
# fixes for every standard-library vulnerability govulncheck reports as
# reachable here (net/http, crypto/tls, crypto/x509, html/template in
# go1.26.8). The go command fetches it from the module proxy once
# (golang.org/toolchain) when the machine's own Go is older.
export GOTOOLCHAIN := go1.26.10
GO_TOOL   := $(GO) tool -modfile=tools/go.mod
BUF       := $(GO_TOOL) buf
BIN       := bin
GO_TEST_FLAGS ?= -race -count=1 -timeout=15m
PKGS      := ./...
# go-nvml's nvml.h marks many calls deprecated; gcc's warnings about them on
# every fresh build are noise (Go's default flags plus that one switch).
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
# The embedded Postgres (PGlite + pgvector, npm packages pinned by the lockfile).
PGLITE_DIR   := deployments/pglite
PGLITE_STAMP := $(PGLITE_DIR)/node_modules/.package-lock.json

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: run
run: build tools install ## Start the local stack (two Triton simulators, the gateway, its embedded Postgres) on loopback.
	deployments/local/run.sh

.PHONY: test
test: check-generate lint vulncheck breaking install protoc k8s-check ## Run every check and every test (go test -race).
	$(GO) test $(GO_TEST_FLAGS) $(PKGS)

# proto/'s test compiles the public API with the oldest protoc it supports,
# Debian 12's 3.21; without a protoc it skips, so CI (root, Debian) installs it.
.PHONY: protoc
protoc: ## Install Debian's protoc (3.21) for proto/'s test, when missing and root.
	@if command -v protoc >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq protobuf-compiler >/dev/null; \
	else echo "protoc not found and cannot install it: proto/'s protoc 3.21 test will skip"; fi
# deployments/k8s is a Go module of its own (Kustomize, k8s.io/api,
# prometheus-operator and Prometheus pinned in its go.mod, out of the
# product's); the root's ./... leaves it out, so it is vetted and tested here.
K8S_DIR := deployments/k8s

.PHONY: k8s-check
k8s-check: ## Check the Kubernetes manifests offline: Kustomize builds, strict decoding, project rules, PromQL, dashboards.
	cd $(K8S_DIR) && $(GO) vet ./...
	cd $(K8S_DIR) && $(GO) tool -modfile=../../tools/go.mod staticcheck ./...
	cd $(K8S_DIR) && $(GO) test -count=1 -timeout=10m ./...

.PHONY: k8s-dashboards
k8s-dashboards: ## Regenerate the Grafana dashboards' JSON (deployments/k8s/base/monitoring/dashboards) from Go.
	cd $(K8S_DIR) && $(GO) generate ./...

# The packages whose tests take TEST_DATABASE_URL: the store, the API-key
# store, and the gateway command's end-to-end document tests.
PG_PKGS := ./store/... ./auth/apikey/... ./internal/app/...

.PHONY: test-postgres
test-postgres: install ## Run the database tests against DATABASE_URL (a Postgres with pgvector; a non-superuser owner is enough once the vector extension exists).
	@if [ -z "$${DATABASE_URL:-}" ]; then echo "test-postgres: set DATABASE_URL=postgres://user:pass@host:port/db"; exit 2; fi
	TEST_DATABASE_URL="$$DATABASE_URL" $(GO) test $(GO_TEST_FLAGS) $(PG_PKGS)

.PHONY: install
install: $(PGLITE_STAMP) ## Install the embedded Postgres's npm packages (npm ci; a no-op when up to date).

# npm ci writes node_modules/.package-lock.json; it is redone only when the
# manifest or the lockfile is newer than the installed tree.
$(PGLITE_STAMP): $(PGLITE_DIR)/package.json $(PGLITE_DIR)/package-lock.json
	cd $(PGLITE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: build
build: ## Build the binaries into bin/.
	$(GO) build -o $(BIN)/ ./cmd/...

.PHONY: tools
tools: ## Build the pinned client tools (grpcurl, ghz) into bin/.
	$(GO) build -modfile=tools/go.mod -o $(BIN)/ github.com/fullstorydev/grpcurl/cmd/grpcurl github.com/bojand/ghz/cmd/ghz

.PHONY: generate
generate: ## Regenerate gen/ from proto/ (buf with local plugins), and the public API's descriptor set.
	find gen -type f \( -name '*.pb.go' -o -name '*.pb.gw.go' -o -name '*.swagger.json' -o -name '*.protoset' \) -delete
	$(BUF) generate --path proto/colpali
	$(BUF) build --path proto/colpali -o 'gen/colpali.protoset#format=binpb'
	$(BUF) generate --template buf.gen.inference.yaml --path proto/inference

.PHONY: check-generate
check-generate: generate ## Fail if gen/ differs from what proto/ generates.
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		git status --porcelain -- gen; git --no-pager diff --stat -- gen; \
		echo "gen/ is stale: run 'make generate' and commit the result"; exit 1; fi

.PHONY: lint
lint: ## buf lint and format, gofmt, go vet, staticcheck, gosec.
	$(BUF) lint
	$(BUF) format --diff --exit-code
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO_TOOL) staticcheck $(PKGS)
	$(GO_TOOL) gosec -quiet -exclude-generated $(GOSEC_EXCLUDE) $(PKGS)

# gosec scans what ships (cmd/, internal/ and the library packages); each
# finding there is fixed or carries a `#nosec Gnnn -- reason` in place.
# benchmarks/ and deployments/ hold developer tools run by hand on loopback
# (load generators, report and dashboard generators), not the product.
GOSEC_EXCLUDE := -exclude-dir=benchmarks -exclude-dir=deployments

# govulncheck's database, built offline: the golang.org/x/vulndb module
# (pinned in tools/go.mod, fetched from the module proxy) holds every Go
# advisory as OSV JSON under data/osv/, and its cmd/indexdb writes the
# database layout govulncheck reads with -db file://. The public
# vuln.go.dev is not reachable from here; the module proxy is.
VULNDB := $(BIN)/vulndb

$(VULNDB)/index/db.json: tools/go.mod
	@dir="$$($(GO) list -modfile=tools/go.mod -m -f '{{.Dir}}' golang.org/x/vulndb)"; \
	if [ ! -d "$$dir/data/osv" ]; then $(GO) mod download -modfile=tools/go.mod golang.org/x/vulndb; \
		dir="$$($(GO) list -modfile=tools/go.mod -m -f '{{.Dir}}' golang.org/x/vulndb)"; fi; \
	rm -rf $(VULNDB); $(GO_TOOL) indexdb -vulns "$$dir/data/osv" -out $(VULNDB)

.PHONY: vulncheck
vulncheck: $(VULNDB)/index/db.json ## govulncheck against the Go vulnerability database of the pinned golang.org/x/vulndb.
	$(GO_TOOL) govulncheck -db file://$(abspath $(VULNDB)) $(PKGS)

.PHONY: breaking
breaking: ## Fail if proto/ breaks wire or JSON compatibility with the previous commit.
	@if git rev-parse -q --verify 'HEAD~1^{commit}' >/dev/null && git cat-file -e 'HEAD~1:buf.yaml' 2>/dev/null; then \
		echo "buf breaking against HEAD~1 ($$(git rev-parse --short HEAD~1))"; \
		$(BUF) breaking --against '.git#ref=HEAD~1'; \
	else echo "breaking: no previous commit with proto/ to compare against; skipped"; fi

.PHONY: clean
clean: ## Remove bin/ and the installed npm packages.
	rm -rf $(BIN) $(PGLITE_DIR)/node_modules
