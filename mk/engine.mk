# The training engine (pkg/nn): layers, ResNets, the CPU backend, the summary.
# See docs/engine.md.
#   make test-engine        the package's tests (well under a minute)
#   make bench-engine       ResNet-18 train-step images/s (imagenet stem at
#                           224x224 and cifar stem at 32x32); BATCH=32 THREADS=0
#   make test-engine-long   one full-size ResNet-18 step at batch 128, with
#                           its heap size (minutes on a laptop)
#   make winograd-generate  rewrite cpu_winograd_amd64.s from internal/winogen
BATCH ?= 32
THREADS ?= 0

.PHONY: test-engine bench-engine test-engine-long winograd-generate
test-engine:
	$(GO) test -count=1 ./pkg/nn/

bench-engine:
	RINGTRAIN_BENCH_BATCH=$(BATCH) RINGTRAIN_BENCH_THREADS=$(THREADS) \
		$(GO) test -run '^$$' -bench 'TrainStepResNet18' -benchtime 3x -timeout 60m ./pkg/nn/

test-engine-long:
	RINGTRAIN_LONG=1 $(GO) test -count=1 -v -run 'TestResNet18Batch128Memory' -timeout 60m ./pkg/nn/

# Regenerate the AVX-512 Winograd transforms (pkg/nn/cpu_winograd_amd64.s);
# TestWinogradAssemblyUpToDate fails when the file and the generator differ.
winograd-generate:
	$(GO) generate -run winogen ./pkg/nn/
