#!/usr/bin/env bash
# gpu-job.sh: the GPU job at the speed of its kernels (issue "GPU round 2",
# item 1, and item 4's CUDA graphs). From the repository root, with binaries
# prebuilt by `make gpu-jobbin` (gzip'd into .devbin/job/):
#   1. the GPU tests matching TESTS (the device step and graph tests),
#   2. gpubench on the job's model and batch (ResNet-18, STEM stem, BATCH,
#      PREC), eager and with -graph,
#   3. the job, `coordinator --workers 1 --device cuda --precision PREC`, on
#      synthetic data, eager and with CUDA graphs (RINGTRAIN_GPU_GRAPHS=1),
#      whose final weights must be bit-identical, and (NOPREFETCH=1, the
#      default) eager with the input prefetch off (RINGTRAIN_GPU_PREFETCH=0:
#      each step uploads its own input before computing, instead of the
#      next step's input going up on a copy stream while it computes),
#      bit-identical too, skipped when the budget is short,
#   4. the same job on the real CIFAR-10 archive (augmentation on, the data
#      loader on this machine's cores) when ARCHIVE or the parts of `make
#      gpu-tta-parts` under PARTS are here (SHA-256 checked first),
#   5. the summary line
#      gpu-job: job X img/s, gpubench Y img/s, ratio R (goal >= 0.90), graph speedup G x
#      X: the eager job's images/s (real data when present, else synthetic;
#      the median step interval after the first WARM steps, global batch /
#      interval), Y: gpubench eager (the mean of its timed steps), G: the
#      job with graphs over the eager job on the same data.
# DEVICE=cpu makes a dry run (small: set BATCH, STEPS, WIDTH) without a GPU.
# Every stage is bounded by `timeout` and the whole run by BUDGET seconds.
set -u -o pipefail
. scripts/gpu/archive.sh # ARCHIVE, PARTS and their checks
OUT=${OUT:-out/gpu-job}
BIN=${BIN:-.devbin/job}
BUDGET=${BUDGET:-480}
DEVICE=${DEVICE:-cuda}
PREC=${PREC:-bf16}
STEM=${STEM:-cifar}
BATCH=${BATCH:-512}
WIDTH=${WIDTH:-1}
STEPS=${STEPS:-100}  # job steps per run
WARM=${WARM:-10}     # job steps left out of the rate
GB_WARMUP=${GB_WARMUP:-5}
GB_STEPS=${GB_STEPS:-30}
TESTS=${TESTS-TestDeviceStep|TestGraph|TestNHWCStatsBits|TestKernelResources|TestEmulatorMatchesGPU|TestTrainerOverlapped|TestFusedOptimizerOnDevice|TestPrefetchMatches|TestPrefetchGraph}
TEST_TIME=${TEST_TIME:-120}
SYNTHETIC=${SYNTHETIC:-1} # 0: no job on synthetic data
NOPREFETCH=${NOPREFETCH:-1} # 1: also the synthetic job with the input prefetch off
REAL=${REAL:-auto}        # the job on CIFAR-10: auto (when the archive or its parts are here), 1 or 0
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/ringtrain-cache}
exec > >(tee -a "$OUT/gpu-job.log") 2>&1
left() { echo $((BUDGET - SECONDS)); }
stage() { echo; echo "=== [${SECONDS}s] $*"; }
status=0

stage "machine"
timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
nproc
. scripts/gpu/bins.sh
unpack_bins "$BIN" || exit 2
ls -l "$RT"

if [ -n "$TESTS" ] && [ -x "$RT/gpu.test" ]; then
  stage "GPU tests ($TESTS)"
  req=1
  [ "$DEVICE" = cpu ] && req=
  (cd pkg/gpu && RINGTRAIN_REQUIRE_GPU=$req timeout "$TEST_TIME" "$RT/gpu.test" -test.v -test.count=1 \
    -test.run "$TESTS" -test.timeout "$((TEST_TIME - 3))s") >"$OUT/gpu-test.log" 2>&1
  rc=$?
  grep -E -- '--- (PASS|FAIL|SKIP)|^(PASS|FAIL|ok)|^gpu: |_test.go:[0-9]+:|panic' "$OUT/gpu-test.log" | cut -c1-260 | head -n 60
  echo "gpu tests exit status $rc"
  [ "$rc" -eq 0 ] || status=1
fi

stage "gpubench $STEM/$BATCH/$PREC, eager and graph"
declare -A gb=()
for mode in eager graph; do
  flag=
  [ "$mode" = graph ] && flag=-graph
  if [ "$mode" = graph ] && [ "$DEVICE" = cpu ]; then
    echo "gpubench graph: skipped (the CPU backend has no graphs; a dry run)"; gb[$mode]=0; continue
  fi
  timeout 90 "$RT/gpubench" -device "$DEVICE" -stem "$STEM" -batch "$BATCH" -precision "$PREC" \
    -warmup "$GB_WARMUP" -steps "$GB_STEPS" $flag >"$OUT/gpubench-$mode.log" 2>&1
  rc=$?
  grep -E '^(# device|RESULT)' "$OUT/gpubench-$mode.log" | cut -c1-400
  if [ "$rc" -ne 0 ]; then
    echo "gpubench $mode failed ($rc):"; tail -n 5 "$OUT/gpubench-$mode.log"; status=1; gb[$mode]=0; continue
  fi
  gb[$mode]=$(sed -n 's/^RESULT .* img_s=\([0-9.]*\) .*/\1/p' "$OUT/gpubench-$mode.log")
done

# rate STEPS_JSONL: images/s from the median step interval after WARM
# steps, and the mean over the same steps (epoch ends included).
rate() { python3 scripts/gpu/steps_rate.py --mean "$1" "$BATCH" "$WARM"; }

declare -A job=() jobmean=()
runjob() { # runjob NAME GRAPHS PREFETCH ARGS...
  local name=$1 graphs=$2 prefetch=$3; shift 3
  local l
  l=$(left)
  if [ "$l" -lt 45 ]; then echo "skipping job $name: time budget"; status=1; job[$name]=0; return; fi
  local dir="$OUT/job-$name"
  rm -rf "$dir"
  echo "# job $name (graphs $graphs, prefetch $prefetch)"
  RINGTRAIN_GPU_GRAPHS=$graphs RINGTRAIN_GPU_PREFETCH=$prefetch timeout "$((l < 200 ? l : 200))" "$RT/coordinator" --workers 1 --worker-bin "$RT/worker" \
    --device "$DEVICE" --precision "$PREC" --stem "$STEM" --width "$WIDTH" --batch "$BATCH" \
    --checkpoint-every 0 --no-progress --output "$dir" "$@" >"$dir.log" 2>&1
  local rc=$?
  tail -n 2 "$dir.log" | cut -c1-300
  if [ "$rc" -ne 0 ] || [ ! -s "$dir/steps.jsonl" ]; then
    echo "job $name failed ($rc):"; grep -h '"level":"\(error\|warn\)"' "$dir"/logs/*.log 2>/dev/null | tail -n 5 | cut -c1-400
    status=1; job[$name]=0; jobmean[$name]=0; return
  fi
  grep -h "graphs off\|capture" "$dir"/logs/*.log 2>/dev/null | head -n 3 | cut -c1-300
  read -r job[$name] jobmean[$name] < <(rate "$dir/steps.jsonl")
  echo "job $name: ${job[$name]} img/s (median step), ${jobmean[$name]} img/s (mean over steps $WARM-$STEPS)"
}

# sameweights A B: "bit-identical" when jobs A and B ended with the same
# final weights, else "DIFFER" (and the run's status fails).
sameweights() {
  if cmp -s "$OUT/job-$1/model.safetensors" "$OUT/job-$2/model.safetensors"; then
    same=bit-identical
  else
    same=DIFFER status=1
  fi
}

# samegraph NAME: the job NAME's final weights with and without graphs must
# be the same bits.
samegraph() {
  [ "${job[$1]}" != 0 ] && [ "${job[$1-graph]}" != 0 ] || return 0
  sameweights "$1" "$1-graph"
  echo "$1: final weights $same with and without graphs"
}

if [ "$SYNTHETIC" = 1 ]; then
  stage "job on synthetic data, eager and graphs"
  syn=(--dataset synthetic --synthetic-size $((BATCH * STEPS)) --epochs 1)
  runjob synthetic 0 1 "${syn[@]}"
  runjob synthetic-graph 1 1 "${syn[@]}"
  samegraph synthetic
  if [ "$NOPREFETCH" = 1 ] && [ "$(left)" -lt 75 ]; then
    echo "synthetic: the job without the prefetch skipped (time budget)"
  elif [ "$NOPREFETCH" = 1 ]; then
    runjob synthetic-noprefetch 0 0 "${syn[@]}"
    if [ "${job[synthetic]}" != 0 ] && [ "${job[synthetic-noprefetch]}" != 0 ]; then
      sameweights synthetic synthetic-noprefetch
      python3 -c 'import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print(f"synthetic: prefetch {a / b:.2f} x (job {a:.0f} img/s with the input prefetch, {b:.0f} without), final weights {sys.argv[3]}")' \
        "${job[synthetic]}" "${job[synthetic-noprefetch]}" "$same"
    fi
  fi
fi

data=synthetic
want_real=$REAL
if [ "$REAL" = auto ]; then
  want_real=0
  { [ -f "$ARCHIVE" ] || compgen -G "$PARTS/part-*" >/dev/null; } && want_real=1
fi
if [ "$want_real" = 1 ]; then
  stage "job on CIFAR-10 ($ARCHIVE), eager and graphs"
  if cifar_archive; then
    abs="$(cd "$(dirname "$ARCHIVE")" && pwd)/$(basename "$ARCHIVE")"
    real=(--dataset cifar10 --data-dir "$OUT/cifar-data" --cifar-mirror "$abs" --cifar-mirror-md5 "$ARCHIVE_MD5" --epochs 2 --max-steps "$STEPS")
    runjob cifar 0 1 "${real[@]}"
    runjob cifar-graph 1 1 "${real[@]}"
    samegraph cifar
    [ "${job[cifar]}" != 0 ] && data=cifar
  else
    echo "gpu-job: no real data"; status=1
  fi
elif [ "$REAL" = 0 ]; then
  echo "the job on CIFAR-10: not asked (REAL=0)"
else
  echo "no CIFAR-10 archive ($ARCHIVE, $PARTS/part-*): synthetic data only"
fi

python3 - "${job[$data]:-0}" "${gb[eager]:-0}" "${job[$data-graph]:-0}" "${gb[graph]:-0}" "$data" <<'PY'
import sys
j, g, jg, gg, data = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
r = j / g if g else 0
s = jg / j if j else 0
print(f"gpubench graph {gg:.0f} img/s vs eager {g:.0f} ({gg / g if g else 0:.2f}x); job with graphs {jg:.0f} img/s ({data} data)")
print(f"gpu-job: job {j:.0f} img/s, gpubench {g:.0f} img/s, ratio {r:.2f} (goal >= 0.90), graph speedup {s:.2f} x")
PY
echo "total ${SECONDS}s, status $status"
rm -rf "$RT"
exit $status
