#!/usr/bin/env bash
# gpu-check.sh: the one command for a GPU machine. From the repository root,
# with binaries prebuilt elsewhere by `make gpu-devbin` into .devbin/:
#   1. GPU tests (every op vs the CPU backend, ResNet-18 step, bf16 vs fp32),
#   2. ringtrain ResNet-18 training images/s (stems cifar and imagenet at
#      32x32, batch 256 and 512, fp32 and bf16),
#   3. the PyTorch peer on the same GPU (eager fp32; AMP bf16 + channels_last),
#   4. a table with ratios and model FLOP utilisation,
# plus a one-chunk comparison run (cifar, batch 512) and a per-op time
# breakdown (gpubench -profile).
# Each stage is guarded by `timeout`, a failing stage does not stop the next,
# and the whole run stays under 5 minutes (BUDGET). Logs go to $OUT (default
# ./out/gpu-check). Exit status: 0 when the tests passed and every benchmark
# produced a result.
set -u -o pipefail
OUT=${OUT:-out/gpu-check}
BIN=${BIN:-.devbin}
BUDGET=${BUDGET:-290} # seconds for the whole script (under 5 minutes)
mkdir -p "$OUT"
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/ringtrain-cache} # compiled kernels, shared by every process below
LOG="$OUT/gpu-check.log"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
status=0
left() { echo $((BUDGET - SECONDS)); }
stage() { echo; echo "=== [$((SECONDS))s] $*"; }

. scripts/gpu/python.sh # sets PY

stage "machine"
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv || true
ls -l "$BIN" || { echo "missing $BIN: build it with 'make gpu-devbin'"; exit 2; }

stage "GPU tests"
t=$(( $(left) - 170 )); [ "$t" -gt 240 ] && t=240; [ "$t" -lt 120 ] && t=120
# The test binary runs in its package directory, as `go test` would.
ABSBIN=$(cd "$BIN" && pwd)
(cd pkg/gpu && RINGTRAIN_REQUIRE_GPU=1 timeout "$t" "$ABSBIN/gpu.test" -test.v -test.count=1 -test.timeout "$((t - 5))s") \
  >"$OUT/gpu-test.log" 2>&1
rc=$?
grep -E -- '--- (PASS|FAIL|SKIP)|^(PASS|FAIL|ok)|^gpu: |_test.go:[0-9]+:' "$OUT/gpu-test.log" | cut -c1-300 | head -n 160
echo "gpu tests exit status $rc"
[ "$rc" -eq 0 ] || status=1

stage "ringtrain benchmarks"
: >"$OUT/bench.log"
for stem in cifar imagenet; do
  for batch in 256 512; do
    for prec in fp32 bf16; do
      [ "$(left)" -lt 100 ] && { echo "skipping ringtrain $stem/$batch/$prec: time budget"; status=1; continue; }
      timeout 60 "$BIN/gpubench" -device cuda -stem "$stem" -batch "$batch" -precision "$prec" -warmup 2 -steps 8 \
        2>&1 | tee -a "$OUT/bench.log"
      [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpubench $stem/$batch/$prec failed"; status=1; }
    done
  done
done

# Comparison runs at cifar/512: im2col + cuBLAS (the fallback) in fp32
# and bf16, im2col with one chunk per convolution (layer1's im2col
# exceeds the 1 GiB default scratch at this size, so the default chunks),
# and cuDNN with TF32. The fp32 loss sequences must agree to rounding in
# the first steps whatever the convolution path.
for extra in "fp32 -conv im2col" "bf16 -conv im2col" "fp32 -conv im2col -scratch 8589934592" "tf32 -conv cudnn"; do
  [ "$(left)" -lt 100 ] && { echo "skipping comparison run $extra: time budget"; continue; }
  set -- $extra
  prec=$1; shift
  timeout 60 "$BIN/gpubench" -device cuda -stem cifar -batch 512 -precision "$prec" -warmup 2 -steps 8 "$@" \
    2>&1 | tee -a "$OUT/bench.log"
done
echo "cifar/512/fp32 losses per step, by convolution path and scratch:"
grep '^RESULT' "$OUT/bench.log" | grep 'precision=fp32 stem=cifar batch=512' | sed -E 's/.*(conv=.*)/  \1/' || true

stage "per-op time breakdown (cifar, batch 512; each op synchronised alone)"
for prec in bf16 fp32; do
  [ "$(left)" -lt 90 ] && { echo "skipping the $prec breakdown: time budget"; continue; }
  timeout 60 "$BIN/gpubench" -device cuda -stem cifar -batch 512 -precision "$prec" -warmup 2 -steps 2 -profile 2 \
    >"$OUT/profile-$prec.log" 2>&1 || echo "profile $prec failed"
  grep -E '^(# profile|PROFILE)' "$OUT/profile-$prec.log" | head -n 24
done

stage "PyTorch peer ($PY)"
t=$(( $(left) - 10 )); [ "$t" -gt 180 ] && t=180
if [ "$t" -gt 20 ]; then
  PYTHONUNBUFFERED=1 timeout "$t" "$PY" scripts/gpu/torch_peer.py --warmup 5 --steps 15 2>&1 | tee "$OUT/torch.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "torch peer failed or timed out"; status=1; }
else
  echo "skipping the PyTorch peer: time budget"; status=1
fi

stage "table (H100 SXM peaks: bf16 989, tf32 495, fp32 67 TFLOP/s)"
cat "$OUT/bench.log" "$OUT/torch.log" 2>/dev/null | "$PY" scripts/gpu/table.py | tee "$OUT/table.txt"
echo "gpu tests: $( [ $rc -eq 0 ] && echo PASS || echo "FAIL (exit $rc; see gpu-test.log)")   total ${SECONDS}s   status $status"
exit $status
