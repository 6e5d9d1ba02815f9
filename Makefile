# ringtrain — see README.md. Each feature area adds its targets in mk/*.mk.
GO ?= go
export CGO_ENABLED ?= 0

.PHONY: all build test vet run
all: build

build:
	$(GO) build -o bin/ ./cmd/coordinator ./cmd/worker ./cmd/gpubench ./cmd/scalebench

# The main job: coordinator + 2 local workers, ResNet-18 on CIFAR-10
# (downloaded into ./data when missing). Extra flags: make run ARGS="--epochs 30".
run: build
	bin/coordinator --workers 2 $(ARGS)

vet:
	$(GO) vet ./...

# The default test run: every package, race-free short mode, well under 15
# minutes on 2 cores. Long runs live behind their own targets.
test: vet
	$(GO) test -count=1 -timeout 20m ./...

include $(wildcard mk/*.mk)
