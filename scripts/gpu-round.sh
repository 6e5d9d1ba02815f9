#!/usr/bin/env bash
# gpu-round.sh STAGE...: one call of a planned device session (issue "GPU
# round 2"), from the repository root of the GPU machine, with what `make
# gpu-roundbin` packed here under .devbin/round (docs/gpu.md, "A device
# session"). The stages, in the order given:
#   job       GPU tests of the device step and graphs, gpubench eager and
#             -graph, the job on synthetic data eager and with graphs
#             (scripts/gpu-job.sh)
#   ipc       the same-host GPU ring: ipcbench and the 2-worker job with and
#             without it (scripts/gpu-ipc.sh)
#   pairs     our step against PyTorch AMP eager, torch.compile and
#             torch.compile with CUDA graphs, alternating over ROUNDS, and
#             the per-op profile (scripts/gpu-quick.sh)
#   arbench   the all-reduce benchmark against gloo on this machine's cores
#             (`make bench-allreduce`, one round)
#   data      join and verify the CIFAR-10 parts carried so far
#   tta       time to 92% against PyTorch (scripts/gpu-tta.sh)
#   job-real  gpubench and the job on CIFAR-10, eager and with graphs
#             (scripts/gpu-job.sh)
#   ncu       Nsight Compute on the BN and elementwise kernels of two
#             gpubench steps (cifar/512/bf16; --clock-control none): one
#             line per kernel (scripts/gpu/ncu_summary.py), the CSV in WORK
#   sanitize  compute-sanitizer memcheck and racecheck over the kernel-level
#             GPU tests (SAN_TESTS)
# Each stage's own files go under WORK (a folder on the machine, kept between
# calls); its main log and the summary lines come back in $OUT (a device
# call returns at most 8 files), and the summary lines end the output.
set -u -o pipefail
OUT=${OUT:-out/gpu-round}
D=.devbin/round
WORK=${WORK:-/tmp/gpu-round}
export BIN=$D PARTS=$D ARCHIVE=${ARCHIVE:-data/cifar-10-binary.tar.gz}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/ringtrain-cache}
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
[ -f "$D/bins.tar.xz" ] || { echo "gpu-round: no $D/bins.tar.xz: carry it (make gpu-roundbin)"; exit 2; }
[ $# -gt 0 ] || { echo "usage: gpu-round.sh STAGE... (job ipc pairs arbench data tta job-real ncu sanitize)"; exit 2; }
. scripts/gpu/python.sh
. scripts/gpu/bins.sh
. scripts/gpu/archive.sh
export -f unpack_bins
status=0
summary="$OUT/summary.txt"
: >"$summary"

# run STAGE LOG SUMMARY_REGEXP COMMAND...: the command's output goes to the
# terminal and to WORK/STAGE; LOG (a file the command writes) comes back.
run() {
  local st=$1 log=$2 re=$3
  shift 3
  echo "=== [${SECONDS}s] gpu-round: $st"
  rm -rf "${WORK:?}/$st"
  "$@"
  local rc=$?
  [ -f "$log" ] && cp "$log" "$OUT/$st.log"
  [ -f "$log" ] && grep -E "$re" "$log" | awk '!seen[$0]++' | sed "s|^|[$st] |" >>"$summary"
  echo "[$st] exit status $rc" >>"$summary"
  [ "$rc" -eq 0 ] || status=1
}

for st in "$@"; do
  w="$WORK/$st"
  case $st in
  job)
    run job "$w/gpu-job.log" '^(gpu-job:|job |synthetic:|gpubench graph|--- FAIL|gpu tests)' \
      env OUT="$w" REAL=0 BUDGET="${JOB_BUDGET:-280}" ./scripts/gpu-job.sh ;;
  ipc)
    run ipc "$w/gpu-ipc.log" '^(gpu-ipc|ipcbench exit|the device job)' \
      env OUT="$w" BUDGET="${IPC_BUDGET:-200}" ./scripts/gpu-ipc.sh ;;
  pairs)
    run pairs "$w/gpu-quick.log" '^(pair |gpu tests:|# torch )' \
      env OUT="$w" TESTS=none CONFIGS= TORCH= PROFILE=cifar/512/bf16 ROUNDS="$ROUNDS" BUDGET="${PAIRS_BUDGET:-300}" \
      PAIRS="cifar/512/bf16=cifar/512/amp,cifar/512/amp-compile,cifar/512/amp-cudagraphs" ./scripts/gpu-quick.sh ;;
  arbench)
    run arbench "$w/arbench.log" '^(allreduce:|warning:|[a-z]+ n=[0-9]+ vs gloo|raw TCP)' \
      bash -c 'unpack_bins "$1" arbench >/dev/null && mkdir -p "$2" && cd "$2" && timeout "${ARBENCH_TIME:-240}" "$RT/arbench" -python "$3" -gloo "$4" -rounds 1 ${ARBENCH_ARGS:-} 2>&1 | tee "$2/arbench.log"' \
      _ "$D" "$w" "$PY" "$(pwd)/$D/gloo.py" ;;
  data)
    echo "=== [${SECONDS}s] gpu-round: data"
    ls -l "$D"/part-* 2>/dev/null
    if cifar_archive; then echo "[data] archive whole" >>"$summary"; else echo "[data] archive not whole yet" >>"$summary"; fi ;;
  tta)
    run tta "$w/gpu-tta.log" '^(gpu-tta|torch |RESULT|both reached)' env OUT="$w" BIN="$D" ./scripts/gpu-tta.sh ;;
  job-real)
    run job-real "$w/gpu-job.log" '^(gpu-job:|job |gpubench graph|cifar:)' \
      env OUT="$w" SYNTHETIC=0 REAL=1 TESTS= BUDGET="${JOB_BUDGET:-160}" ./scripts/gpu-job.sh ;;
  ncu)
    run ncu "$w/ncu.log" '^ncu: ' bash -c '
      unpack_bins "$1" gpubench >/dev/null || exit 2
      mkdir -p "$2"
      NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
      [ -n "$NCU" ] || { echo "ncu: not found" | tee "$2/ncu.log"; exit 2; }
      timeout "${NCU_TIME:-150}" "$NCU" --clock-control none --target-processes all \
        --kernel-name "regex:${NCU_KERNELS:-k_nhwc_partial|k_nhwc_bn_apply|k_nhwc_bn_backward|k_chan_finish_wide|k_bf16_add|k_bf16_relu_bwd}" \
        --launch-count "${NCU_COUNT:-300}" --section SpeedOfLight --section Occupancy --section LaunchStats --csv --page details \
        "$RT/gpubench" -device cuda -stem cifar -batch 512 -precision bf16 -warmup 1 -steps 1 >"$2/ncu.csv" 2>"$2/ncu.err"
      rc=$?
      { tail -n 5 "$2/ncu.err"; "$3" scripts/gpu/ncu_summary.py "$2/ncu.csv"; } | tee "$2/ncu.log"
      exit $rc' _ "$D" "$w" "$PY" ;;
  sanitize)
    run sanitize "$w/sanitize.log" '^(=+ (ERROR|RACECHECK) SUMMARY|--- FAIL|sanitize:)' bash -c '
      unpack_bins "$1" gpu.test >/dev/null || exit 2
      mkdir -p "$2"
      CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -n 1)
      [ -n "$CS" ] || { echo "sanitize: compute-sanitizer not found" | tee "$2/sanitize.log"; exit 2; }
      (rc=0
      for tool in memcheck racecheck; do
        echo "sanitize: $tool"
        (cd pkg/gpu && RINGTRAIN_REQUIRE_GPU=1 timeout "${SAN_TIME:-100}" "$CS" --tool "$tool" --error-exitcode 9 \
          "$RT/gpu.test" -test.count=1 -test.v -test.run "${SAN_TESTS:-TestNHWCStatsBits|TestGPUResidentOps|TestRingKernels}") 2>&1 |
          grep -E -- "^=+ |--- (PASS|FAIL)|^(ok|FAIL|PASS)" | head -n 40
        r=${PIPESTATUS[0]}
        echo "sanitize: $tool exit status $r"
        [ "$r" -eq 0 ] || rc=1
      done
      exit $rc) 2>&1 | tee "$2/sanitize.log"
      exit "${PIPESTATUS[0]}"' _ "$D" "$w" ;;
  *)
    echo "gpu-round: unknown stage $st"; status=2 ;;
  esac
done
echo
echo "=== [${SECONDS}s] gpu-round summary ($*)"
cat "$summary"
exit $status
