# Scale-out benchmarking (pkg/scale, cmd/scalebench; see docs/scale.md).
#
# bench-scale: 8 emulated hosts (network namespaces, tbf-limited links;
# needs root, ip and tc), one worker per host, ResNet-18 (cifar stem)
# gradients on the wire, forward+backward emulated (--compute) so that 8
# workers fit on 2 cores; gloo (python3-torch) over the same links,
# interleaved; the sweep three times, interleaved (--sweep-rounds 3), every
# goal judged over its rounds (docs/scale.md, Verdicts). About 11-12 minutes
# on the 2-core machine. Ends with
#   scale: efficiency n=2 E2 n=4 E4 n=8 E8, busbw vs link B%, vs gloo G x, model error M%
# Extra flags: make bench-scale BENCH_SCALE_FLAGS="--steps 8".
BENCH_SCALE_FLAGS ?=
BENCH_SCALE_ARGS ?= --emulate-hosts 8 --link 500mbit --compute 4s --bucket-mb 4 --workers 1,2,4,8 \
	--warmup 2 --steps 4 --rounds 3 --sweep-rounds 3 --profile-batch 16 --output runs/bench-scale

.PHONY: bench-scale test-scale scale-predict
bench-scale: build
	bin/scalebench $(BENCH_SCALE_ARGS) $(BENCH_SCALE_FLAGS)

# The model alone: 8-512 GPUs at 25 and 100 Gbit/s with an H100's step.
scale-predict: build
	bin/scalebench --predict --workers 8,16,32,64,128,256,512 --link 25gbit,100gbit --compute 9.7ms --batch 512 $(BENCH_SCALE_FLAGS)

# pkg/scale's tests; the namespace ones skip with a message unless root.
test-scale:
	RINGTRAIN_SCALE_TESTS=1 $(GO) test -count=1 -v ./pkg/scale/...
