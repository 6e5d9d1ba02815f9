# ringtrain — see README.md. Each feature area adds its targets in mk/*.mk.
GO ?= go
export CGO_ENABLED ?= 0

.PHONY: all build test vet
all: build

build:
	$(GO) build -o bin/ ./cmd/...

vet:
	$(GO) vet ./...

# The default test run: every package, race-free short mode, well under 15
# minutes on 2 cores. Long runs live behind their own targets.
test: vet
	$(GO) test -count=1 -timeout 20m ./...

include $(wildcard mk/*.mk)
