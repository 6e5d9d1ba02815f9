# CPU speed against the PyTorch peer (scripts/bench/bench-cpu.sh; see
# docs/cpu-speed.md). One run, interleaved, medians; ends with
#   cpu: imagenet-stem Ax, cifar-stem Bx, 2-workers Cx (vs torch, same run)
# Knobs (environment): ROUNDS STEPS CIFAR_STEPS JOB_STEPS THREADS BATCH
# REF_DIR PYTHON BENCH_GEMM GEMM_ROUNDS.

.PHONY: bench-cpu bench-cpu-quick

bench-cpu:
	GO=$(GO) scripts/bench/bench-cpu.sh

# A smoke run: one round, few steps, no GEMM comparison.
bench-cpu-quick:
	GO=$(GO) ROUNDS=1 STEPS=4 CIFAR_STEPS=2 JOB_STEPS=8 BENCH_GEMM=0 scripts/bench/bench-cpu.sh
