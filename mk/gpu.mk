# pkg/gpu: the CUDA backend. `make gpu-devbin` builds what scripts/gpu-check.sh
# runs on a GPU machine; `make gpu-check` runs it (needs a GPU).
GO ?= go

.PHONY: gpu-test gpu-devbin gpu-check
gpu-test:
	CGO_ENABLED=0 $(GO) test -count=1 ./pkg/gpu/... ./cmd/gpubench/...

gpu-devbin:
	mkdir -p .devbin
	CGO_ENABLED=0 $(GO) test -c -o .devbin/gpu.test ./pkg/gpu
	CGO_ENABLED=0 $(GO) build -o .devbin/gpubench ./cmd/gpubench

gpu-check: gpu-devbin
	./scripts/gpu-check.sh
