#!/usr/bin/env bash
# gpu-ipc.sh: the same-host GPU ring (device-to-device gradients, CUDA IPC)
# on a GPU machine. From the repository root, with binaries prebuilt
# elsewhere by `make gpu-ipcbin` (stripped and gzip'd into .devbin/ipc/):
#   1. ipcbench: WORLD (2) worker processes sharing the one GPU all-reduce
#      a vector in GPU memory through host memory (device-to-host copy, the
#      host ring through shared memory, host-to-device copy: the path
#      before) and device to device (the device ring), interleaved over
#      ROUNDS (3) rounds, sizes up to ResNet-18's gradient (44.7 MB); host
#      and device results must be bit-identical on every rank (Sum, Mean);
#   2. (JOBS=1) the real one-machine job (coordinator, 2 worker processes
#      on the GPU, ResNet-18 cifar stem, batch 512, STEPS steps, PREC) with
#      the device ring (the default) and with --gpu-ipc=false: images/s of
#      both, and the final weights must be bit-identical.
# Ends with the summary lines
#   gpu-ipc: device ring busbw D GB/s, host path H GB/s, ratio R x (n=2, 44.7 MB, GPU); bit-identical yes
#   gpu-ipc job: device ring A images/s, host path B images/s, ratio Q x; weights bit-identical yes
# Knobs: OUT (out/gpu-ipc), BIN (.devbin/ipc), DEVICE (cuda; cpu for a dry
# run without a GPU: ipcbench on shared files, the jobs on the CPU), WORLD,
# ROUNDS, ITERS (10), SIZES (ipcbench -sizes), GPUS (ipcbench -gpus: 1, every
# rank on GPU 0; 2 on a two-GPU machine puts neighbours on different GPUs,
# and where those have no peer access the device ring copies through the
# device: rank 0's INFO line says which), JOBS (1), STEPS (30), PREC
# (bf16), WIDTH (1), BUDGET (280 s for the whole script).
set -u -o pipefail
OUT=${OUT:-out/gpu-ipc}
BIN=${BIN:-.devbin/ipc}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-30}
PREC=${PREC:-bf16}
BUDGET=${BUDGET:-280}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/ringtrain-cache}
exec > >(tee -a "$OUT/gpu-ipc.log") 2>&1
status=0
. scripts/gpu/bins.sh
unpack_bins "$BIN" ipcbench coordinator worker || { echo "run make gpu-ipcbin"; exit 2; }
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"

benchdev=cuda
[ "$DEVICE" = cpu ] && benchdev=file
echo "=== [${SECONDS}s] ipcbench: host path vs device ring (${WORLD:-2} processes, -device $benchdev)"
timeout 200 "$RT/ipcbench" -device "$benchdev" -world "${WORLD:-2}" -rounds "${ROUNDS:-3}" -iters "${ITERS:-10}" ${SIZES:+-sizes "$SIZES"} ${GPUS:+-gpus "$GPUS"} >"$OUT/ipcbench.log" 2>&1
rc=$?
grep -v '^\[rank' "$OUT/ipcbench.log" | cut -c1-300
grep -E '^\[rank 0\] (INFO|DIFF)|REFUSED' "$OUT/ipcbench.log" | head -n 6 | cut -c1-300
echo "ipcbench exit status $rc"
[ "$rc" -eq 0 ] || status=1
benchline=$(grep '^gpu-ipc: ' "$OUT/ipcbench.log" | tail -n 1)
[ -n "$benchline" ] || { benchline="gpu-ipc: no result (ipcbench exit status $rc)"; status=1; }

# median images/s over the steps after the first 5 (steps.jsonl times)
rate() { python3 "$(dirname "$0")/gpu/steps_rate.py" "$1"; }

jobline=""
if [ "${JOBS:-1}" = 1 ]; then
  declare -A ips=()
  for mode in device host; do
    left=$((BUDGET - SECONDS))
    if [ "$left" -lt 30 ]; then echo "skipping the $mode job: time budget"; ips[$mode]=0; status=1; continue; fi
    echo "=== [${SECONDS}s] job: $PREC, gradients $mode"
    dir="$OUT/job-$mode"
    rm -rf "$dir"
    extra=()
    [ "$mode" = host ] && extra=(--worker-args=--gpu-ipc=false)
    timeout "$((left < 150 ? left : 150))" "$RT/coordinator" --workers 2 --worker-bin "$RT/worker" "${extra[@]}" --device "$DEVICE" \
      --precision "$PREC" --dataset synthetic --synthetic-size $((512 * STEPS)) --batch 512 --epochs 1 --stem cifar --width "${WIDTH:-1}" \
      --checkpoint-every 0 --no-progress --output "$dir" >"$dir.log" 2>&1
    rc=$?
    tail -n 2 "$dir.log"
    grep -h "gradients " "$dir"/logs/w*.log 2>/dev/null | head -n 2 | cut -c1-300
    if [ "$rc" -ne 0 ] || [ ! -s "$dir/steps.jsonl" ]; then
      echo "job failed ($rc):"; grep -h '"level":"\(error\|warn\)"' "$dir"/logs/*.log 2>/dev/null | tail -n 5 | cut -c1-400
      status=1; ips[$mode]=0; continue
    fi
    ips[$mode]=$(rate "$dir/steps.jsonl")
    echo "$mode: ${ips[$mode]} images/s (median step, global batch 512, 2 workers)"
  done
  if [ "$DEVICE" = cuda ] && ! grep -qh "gradients device to device" "$OUT"/job-device/logs/w*.log 2>/dev/null; then
    echo "the device job did not use the device ring"; status=1
  fi
  same=NO
  cmp -s "$OUT/job-device/model.safetensors" "$OUT/job-host/model.safetensors" && same=yes
  [ "$same" = yes ] || status=1
  r=$(python3 -c "a,b=${ips[device]:-0},${ips[host]:-0}; print('%.2f' % (a/b) if a and b else 'n/a')")
  jobline="gpu-ipc job: device ring ${ips[device]:-0} images/s, host path ${ips[host]:-0} images/s, ratio ${r} x; weights bit-identical $same"
fi
rm -rf "$RT"
echo "$benchline"
[ -n "$jobline" ] && echo "$jobline"
exit $status
