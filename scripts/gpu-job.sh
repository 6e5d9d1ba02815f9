#!/usr/bin/env bash
# gpu-job.sh: the GPU job at the speed of its kernels (issue "GPU round 2",
# item 1, and item 4's CUDA graphs). From the repository root, with binaries
# prebuilt by `make gpu-jobbin` (gzip'd into .devbin/job/):
#   1. the GPU tests matching TESTS (the device step and graph tests),
#   2. gpubench on the job's model and batch (ResNet-18, STEM stem, BATCH,
#      PREC), eager and with -graph,
#   3. the job, `coordinator --workers 1 --device cuda --precision PREC`, on
#      synthetic data, eager and with CUDA graphs (RINGTRAIN_GPU_GRAPHS=1),
#      whose final weights must be bit-identical,
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
TESTS=${TESTS-TestDeviceStep|TestGraph|TestTrainerOverlapped}
TEST_TIME=${TEST_TIME:-120}
ARCHIVE=${ARCHIVE:-data/cifar-10-binary.tar.gz}
ARCHIVE_SHA256=${ARCHIVE_SHA256:-ec30ca52e4dacef681246eccf170664c7ddf6c340060ab4372cb6c7443c4f0c0}
ARCHIVE_MD5=${ARCHIVE_MD5:-86c0b761e5f5abb74bf6d87eddaf0ab6}
PARTS=${PARTS:-.devbin/cifar-parts}
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
RT=$(mktemp -d)
for f in "$BIN"/*.gz; do gunzip -c "$f" >"$RT/$(basename "$f" .gz)" && chmod +x "$RT/$(basename "$f" .gz)"; done
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
rate() {
  python3 - "$1" "$BATCH" "$WARM" <<'PY'
import json, sys, statistics
from datetime import datetime
path, batch, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ts = []
for line in open(path):
    r = json.loads(line)
    t = r["time"].rstrip("Z")
    t = t[:26] if "." in t else t
    ts.append((r["step"], datetime.fromisoformat(t).timestamp()))
ts.sort()
d = [b[1] - a[1] for a, b in zip(ts[warm:], ts[warm + 1:]) if b[0] == a[0] + 1]
if not d:
    print("0 0")
else:
    print("%.0f %.0f" % (batch / statistics.median(d), batch * len(d) / sum(d)))
PY
}

declare -A job=() jobmean=()
runjob() { # runjob NAME GRAPHS ARGS...
  local name=$1 graphs=$2; shift 2
  local l
  l=$(left)
  if [ "$l" -lt 45 ]; then echo "skipping job $name: time budget"; status=1; job[$name]=0; return; fi
  local dir="$OUT/job-$name"
  rm -rf "$dir"
  echo "# job $name (graphs $graphs)"
  RINGTRAIN_GPU_GRAPHS=$graphs timeout "$((l < 200 ? l : 200))" "$RT/coordinator" --workers 1 --worker-bin "$RT/worker" \
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

stage "job on synthetic data, eager and graphs"
syn=(--dataset synthetic --synthetic-size $((BATCH * STEPS)) --epochs 1)
runjob synthetic 0 "${syn[@]}"
runjob synthetic-graph 1 "${syn[@]}"
if [ "${job[synthetic]}" != 0 ] && [ "${job[synthetic-graph]}" != 0 ]; then
  if cmp -s "$OUT/job-synthetic/model.safetensors" "$OUT/job-synthetic-graph/model.safetensors"; then
    echo "synthetic: final weights bit-identical with and without graphs"
  else
    echo "synthetic: final weights DIFFER with and without graphs"; status=1
  fi
fi

data=synthetic
if [ ! -f "$ARCHIVE" ] && compgen -G "$PARTS/part-*" >/dev/null; then
  mkdir -p "$(dirname "$ARCHIVE")" && cat "$PARTS"/part-* >"$ARCHIVE"
fi
if [ -f "$ARCHIVE" ]; then
  stage "job on CIFAR-10 ($ARCHIVE), eager and graphs"
  got=$(sha256sum "$ARCHIVE" | cut -d' ' -f1)
  if [ "$got" != "$ARCHIVE_SHA256" ]; then
    echo "gpu-job: $ARCHIVE has SHA-256 $got, want $ARCHIVE_SHA256"; status=1
  else
    abs="$(cd "$(dirname "$ARCHIVE")" && pwd)/$(basename "$ARCHIVE")"
    real=(--dataset cifar10 --data-dir "$OUT/cifar-data" --cifar-mirror "$abs" --cifar-mirror-md5 "$ARCHIVE_MD5" --epochs 2 --max-steps "$STEPS")
    runjob cifar 0 "${real[@]}"
    runjob cifar-graph 1 "${real[@]}"
    [ "${job[cifar]}" != 0 ] && data=cifar
  fi
else
  echo "no CIFAR-10 archive ($ARCHIVE, $PARTS/part-*): synthetic data only"
fi

python3 - "${job[$data]}" "${gb[eager]:-0}" "${job[$data-graph]:-0}" "${gb[graph]:-0}" "$data" <<'PY'
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
