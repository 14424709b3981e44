# anycloud — see README.md.
GO        ?= go
BIN       := bin/anycloud
DEMO_TAG  ?= anycloud-demo:latest
# The quickstart bundle reads DEMO_TOKEN from the environment of `apply`.
DEMO_TOKEN ?= quickstart-demo-token
export DEMO_TOKEN

.PHONY: build test run bench lint demo-image vm-image emulator screenshots clean fuzz

build:
	$(GO) build -o $(BIN) ./cmd/anycloud

# The demo workload, built FROM scratch from a static Go binary: no
# registry is needed.
demo-image:
	mkdir -p bin/demo
	CGO_ENABLED=0 $(GO) build -o bin/demo/demo ./examples/demo
	cp examples/demo/Dockerfile bin/demo/Dockerfile
	DOCKER_BUILDKIT=0 docker build -q -t $(DEMO_TAG) bin/demo >/dev/null
	@echo "built $(DEMO_TAG)"

# The main job: the control plane on the local Docker engine, running
# examples/quickstart until it is Ready.
run: build demo-image
	./$(BIN) up
	./$(BIN) apply -f examples/quickstart --wait --timeout 2m
	./$(BIN) status
	@echo
	@addr=$$(./$(BIN) get deploy hello -o json | sed -n 's/.*"address": "\([^"]*\)".*/\1/p'); \
	  echo "The demo reports the env keys it received (never values): curl http://$$addr/env"; \
	  if command -v curl >/dev/null; then curl -s "http://$$addr/env"; fi
	@echo "Try:   docker kill \$$(./$(BIN) get deploy hello -o jsonpath='{.status.vm.id}')   then   ./$(BIN) describe deploy hello"
	@echo "Stop:  ./$(BIN) delete -f examples/quickstart --wait && ./$(BIN) down"

# The cloud emulator's VM image (debootstrap, then docker import), built
# once per machine: its tag is a hash of its inputs.
vm-image:
	./scripts/vm-image.sh

# A cloud on this machine for the AWS path: moto, and a real VM per
# instance. See README, "Trying the AWS path without an account".
emulator: vm-image demo-image
	$(GO) run ./cmd/anycloud-emulator

test:
	./scripts/vm-image.sh --if-possible
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	$(MAKE) fuzz FUZZTIME=3s

# Fuzz targets (package:function), each run for FUZZTIME: briefly by
# `make test`, for a minute each by `make fuzz`. Their seed corpora also
# run as ordinary tests in every `go test`. A failing input is saved
# under the package's testdata/fuzz and replayed by `go test` from then on.
FUZZTIME ?= 1m
FUZZ_TARGETS := ./manifests:FuzzDecode ./manifests:FuzzDecodeJSON ./seal:FuzzOpen ./seal:FuzzOpenSealed ./api:FuzzApply
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; echo "fuzz $$fn in $$pkg for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	done

bench:
	./scripts/bench.sh

# The README's pictures of the dashboard, taken by its browser test
# (headless Chromium, the Docker engine and the demo image).
screenshots:
	ANYCLOUD_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run TestDashboardInABrowser ./dashboard/

# Lint: formatting, go vet, staticcheck and unreachable code (deadcode,
# counting tests as callers). The tools run at pinned versions through the
# module proxy; nothing needs installing.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE    ?= golang.org/x/tools/cmd/deadcode@v0.52.0
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@out=$$($(GO) run $(DEADCODE) -test ./...); if [ -n "$$out" ]; then echo "unreachable code:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin
