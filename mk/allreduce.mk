# pkg/allreduce: tests and the all-reduce benchmark (see docs/allreduce.md).
ARBENCH_FLAGS ?=

.PHONY: test-allreduce bench-allreduce
test-allreduce:
	$(GO) test -count=1 ./pkg/allreduce/...

# 2 and 4 local processes over loopback gRPC+TCP and over the same-host
# shared-memory path, the gloo peer (python3-torch) and raw TCP, in one run:
# three interleaved rounds (ARBENCH_FLAGS="-rounds N"), medians, and each
# ratio to gloo as median (min-max) with a warning when it straddles a goal.
bench-allreduce:
	$(GO) build -o bin/arbench ./pkg/allreduce/internal/arbench
	./bin/arbench $(ARBENCH_FLAGS)
