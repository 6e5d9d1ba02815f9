# GEMM (pkg/nn/internal/gemm): benchmarks and code generation. See docs/gemm.md.

.PHONY: bench-gemm bench-gemm-go gemm-generate test-gemm

# Ours vs OpenBLAS (told the CPU type) on the ResNet-18 conv shapes, one run,
# interleaved, medians: a table of GFLOP/s and ratios.
bench-gemm:
	GO=$(GO) scripts/gemm/bench.sh

# Go benchmarks only (the best path; GEMM_PATH=avx2|generic forces one).
GEMM_PATH ?=
bench-gemm-go:
	$(GO) test -run '^$$' -bench . -benchtime 20x ./pkg/nn/internal/gemm/ $(if $(GEMM_PATH),-args -gemm.path=$(GEMM_PATH))

# Regenerate the amd64 assembly from asmgen.
gemm-generate:
	$(GO) generate ./pkg/nn/internal/gemm/

test-gemm:
	$(GO) test -count=1 ./pkg/nn/internal/gemm/...
