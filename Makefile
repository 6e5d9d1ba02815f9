# ringtrain — see README.md. Each feature area adds its targets in mk/*.mk.
GO ?= go
export CGO_ENABLED ?= 0
# How long each fuzz target runs (make fuzz-data, make fuzz-safetensors).
FUZZTIME ?= 30s

.PHONY: all build test vet run lint tidy-check
# staticcheck, run through the Go module proxy at a pinned version.
STATICCHECK_VERSION ?= v0.8.2
all: build

build:
	$(GO) build -o bin/ ./cmd/coordinator ./cmd/worker ./cmd/gpubench ./cmd/scalebench

# The main job: coordinator + 2 local workers, ResNet-18 on CIFAR-10
# (downloaded into ./data when missing). Extra flags: make run ARGS="--epochs 30".
run: build
	bin/coordinator --workers 2 $(ARGS)

vet:
	$(GO) vet ./...

# Static checks .ci/run makes before the tests: go.mod/go.sum are tidy
# and staticcheck finds nothing.
lint: tidy-check
	@out=$$(gofmt -l cmd pkg internal e2e deploy proto scripts); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

tidy-check:
	$(GO) mod tidy -diff

# The default test run (what .ci/run runs): go vet, then every package's
# tests, the e2e jobs included (without -race or -short), well under 15
# minutes on 2 cores. Long runs live behind their own targets.
test: vet
	$(GO) test -count=1 -timeout 20m ./...

include $(wildcard mk/*.mk)
