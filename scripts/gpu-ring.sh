#!/usr/bin/env bash
# gpu-ring.sh: GPU checks of the distributed path, for a GPU machine. From
# the repository root, with binaries prebuilt elsewhere by `make
# gpu-ringbin` (gzip'd into .devbin/ring/, so that they travel small):
#   1. the asynchronous gradient-copy tests of pkg/gpu on the GPU,
#   2. the real one-machine job (coordinator, embedded etcd, 2 worker
#      processes sharing the GPU, ring through shared memory), ResNet-18
#      cifar stem, global batch 512, with the gradients' device-to-host
#      copies after backward (RINGTRAIN_GPU_OVERLAP=0, the default) and
#      overlapped with it (RINGTRAIN_GPU_OVERLAP=1), in bf16 and fp32; the
#      final weights must be bit-identical.
# Prints one line per job and ends with
#   ring-gpu: bf16 overlap Ax, fp32 overlap Bx (images/s, overlapped vs after backward)
# Knobs: OUT (out/gpu-ring), BIN (.devbin/ring), DEVICE (cuda; cpu for a dry
# run without a GPU), STEPS (40 steps a job), PRECISIONS ("bf16 fp32"),
# WIDTH (1; e.g. 0.125 for a quick dry run), BUDGET (200 s; jobs that would
# not fit are skipped), WORKERS (2), MODES ("0 1": the overlap settings).
set -u -o pipefail
OUT=${OUT:-out/gpu-ring}
BIN=${BIN:-.devbin/ring}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-40}
PRECISIONS=${PRECISIONS:-bf16 fp32}
BUDGET=${BUDGET:-200} # seconds for the whole script
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/ringtrain-cache}
exec > >(tee -a "$OUT/gpu-ring.log") 2>&1
status=0
. scripts/gpu/bins.sh
unpack_bins "$BIN" coordinator worker gpu.test || { echo "run make gpu-ringbin"; exit 2; }
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"

echo "=== [${SECONDS}s] asynchronous copy tests"
if [ "$DEVICE" = cuda ]; then
  (cd pkg/gpu && RINGTRAIN_REQUIRE_GPU=1 timeout 90 "$RT/gpu.test" -test.v -test.count=1 -test.run 'Async|TrainerOverlapped') >"$OUT/test.log" 2>&1
  rc=$?
  grep -E -- '--- (PASS|FAIL|SKIP)|^(PASS|FAIL)|^gpu: |_test.go:[0-9]+:' "$OUT/test.log" | cut -c1-300
  echo "tests exit status $rc"
  [ "$rc" -eq 0 ] || status=1
fi

# median images/s over the steps after the first 5 (steps.jsonl times)
rate() { python3 "$(dirname "$0")/gpu/steps_rate.py" "$1"; }

summary="ring-gpu:"
for prec in $PRECISIONS; do
  declare -A ips=()
  for ov in ${MODES:-0 1}; do
    left=$((BUDGET - SECONDS))
    if [ "$left" -lt 30 ]; then echo "skipping $prec overlap $ov: time budget"; ips[$ov]=0; status=1; continue; fi
    echo "=== [${SECONDS}s] job: $prec, overlap $ov"
    dir="$OUT/job-$prec-$ov"
    rm -rf "$dir"
    RINGTRAIN_GPU_OVERLAP=$ov timeout "$((left < 150 ? left : 150))" "$RT/coordinator" --workers "${WORKERS:-2}" --worker-bin "$RT/worker" --device "$DEVICE" \
      --precision "$prec" --dataset synthetic --synthetic-size $((512 * STEPS)) --batch 512 --epochs 1 --stem cifar --width "${WIDTH:-1}" \
      --checkpoint-every 0 --no-progress --output "$dir" >"$dir.log" 2>&1
    rc=$?
    tail -n 2 "$dir.log"
    if [ "$rc" -ne 0 ] || [ ! -s "$dir/steps.jsonl" ]; then
      echo "job failed ($rc):"; grep -h '"level":"\(error\|warn\)"' "$dir"/logs/*.log 2>/dev/null | tail -n 5 | cut -c1-400
      status=1; ips[$ov]=0; continue
    fi
    ips[$ov]=$(rate "$dir/steps.jsonl")
    grep -h "device\|precision" "$dir/logs/w0.log" | head -n 2 | cut -c1-300
    echo "$prec overlap $ov: ${ips[$ov]} images/s (median step, global batch 512, 2 workers)"
  done
  if cmp -s "$OUT/job-$prec-0/model.safetensors" "$OUT/job-$prec-1/model.safetensors"; then
    echo "$prec: final weights bit-identical with and without overlap"
  else
    echo "$prec: final weights DIFFER with and without overlap"; status=1
  fi
  r=$(python3 -c "a,b=${ips[0]},${ips[1]}; print('%.2f' % (b/a) if a and b else 'n/a')")
  summary="$summary $prec overlap ${r}x,"
done
rm -rf "$RT"
echo "${summary%,} (images/s, overlapped vs after backward)"
exit $status
