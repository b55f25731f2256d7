# ferry — carry container images across an air gap.
GO          ?= go
BIN         := bin/ferry
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
STATICCHECK ?= $(shell command -v staticcheck 2>/dev/null || echo "$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2")
# Short runs are counted in executions, not seconds: Go 1.26's fuzz
# coordinator can report a wall-clock -fuzztime's own deadline as a failure
# ("context deadline exceeded", no input written: go.dev/issue/75804, fixed
# in Go 1.27). 20000 runs take 1-15 s per target here; a target that stalls
# shows as a slow run.
FUZZTIME    ?= 20000x
# The fuzzer minimizes every new interesting input (default: up to a minute
# each, O(n²) runs) and reports no executions meanwhile; a bounded number of
# runs keeps a short fuzz run fuzzing.
FUZZMINIMIZE ?= 1000x
export GOTOOLCHAIN := local

.DEFAULT_GOAL := help
.PHONY: help build test unit e2e fuzz-short fuzz bench lint demo clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/ferry
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ferry

test: lint ## lint, then every test with -race (unit and end-to-end on real registries), then short fuzz runs
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) --no-print-directory fuzz-short

unit: ## unit tests only (no real registry needed)
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/test$$')

e2e: ## end-to-end tests only: the built binary against real registries (docker-registry, skopeo, regctl, helm)
	$(GO) test -race -count=1 -timeout 15m ./test/...

fuzz-short: ## each fuzz target for $(FUZZTIME) (runs, or a duration such as 30s)
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./filter/
	$(GO) test -run='^$$' -fuzz='^FuzzSelect$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./filter/
	$(GO) test -run='^$$' -fuzz='^FuzzLoad$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./mapping/
	$(GO) test -run='^$$' -fuzz='^FuzzOpen$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./bundle/
	$(GO) test -run='^$$' -fuzz='^FuzzParseRecord$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./bundle/
	$(GO) test -run='^$$' -fuzz='^FuzzParseIndex$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./bundle/
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/names/
	$(GO) test -run='^$$' -fuzz='^FuzzGunzip$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/inflate/
	$(GO) test -run='^$$' -fuzz='^FuzzParseChallenges$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/registry/
	$(GO) test -run='^$$' -fuzz='^FuzzRangeStart$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/registry/
	$(GO) test -run='^$$' -fuzz='^FuzzParseBytes$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./internal/units/
	$(GO) test -run='^$$' -fuzz='^FuzzRequestPath$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./cache/
	$(GO) test -run='^$$' -fuzz='^FuzzPaths$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./static/
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./inventory/
	$(GO) test -run='^$$' -fuzz='^FuzzChartLoad$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./chart/
	$(GO) test -run='^$$' -fuzz='^FuzzImagesIn$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./chart/
	$(GO) test -run='^$$' -fuzz='^FuzzPick$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZE) ./chart/

fuzz: ## longer fuzz runs (FUZZTIME=5m make fuzz; a duration may end in go.dev/issue/75804's false failure on Go 1.26)
	$(MAKE) fuzz-short FUZZTIME=$(if $(filter 20000x,$(FUZZTIME)),2000000x,$(FUZZTIME))

bench: ## benchmarks against yardsticks in the same run (plain copy, dd, sha256sum, regsync): throughput, peak RSS, requests (see docs/benchmarks.md)
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout 30m ./test/ | tee bench.out

lint: ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

demo: build ## local registries, a small image set, export, inspect, verify, import, check digests
	$(GO) run ./test/demo -ferry $(BIN) -dir demo-work

clean: ## remove build output
	rm -rf bin demo-work bench.out
