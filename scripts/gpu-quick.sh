#!/usr/bin/env bash
# gpu-quick.sh: a short, focused GPU check (for when device time is scarce),
# from the repository root, with binaries prebuilt elsewhere by `make
# gpu-quickbin` (gzip'd into .devbin/q/):
#   1. the GPU tests matching TESTS (a -test.run regexp; "" runs them all,
#      "none" none),
#   2. gpubench for each configuration of CONFIGS, each
#      "stem/batch/precision[/flag=value,flag=value]" (extra gpubench flags
#      for that run only, e.g. activations=fp32 or conv-search=measure),
#   3. the PyTorch peer for each "stem/batch/mode" of TORCH (mode fp32, amp,
#      amp-compile: torch.compile, or amp-cudagraphs: torch.compile in mode
#      reduce-overhead, i.e. CUDA graphs; compile time inside the warm-up),
#   4. PAIRS, each "ours=torch[,torch...]" (e.g.
#      cifar/512/bf16=cifar/512/amp,cifar/512/amp-compile), run ROUNDS times,
#      ours first in odd rounds and the peers first in even ones (a GPU's
#      speed drifts between runs: the pairs compare like with like), ending
#      with each side's median (min-max) over the rounds and the median
#      ratio against the faster peer,
#   5. gpubench -profile for each configuration of PROFILE,
#   6. the table of scripts/gpu/table.py (ratios to torch of the same run).
# DEVICE=cpu makes a dry run of the benchmark stages on a machine without a GPU.
# Both sides run WARMUP untimed then STEPS timed steps; each RESULT's img_s is
# the mean over one run's timed steps, and the pair lines give medians over runs.
# Every stage is bounded by `timeout` and the whole run by BUDGET seconds.
set -u -o pipefail
OUT=${OUT:-out/gpu-quick}
BIN=${BIN:-.devbin/q}
BUDGET=${BUDGET:-240}
TESTS=${TESTS-}
TEST_TIME=${TEST_TIME:-90}
CONFIGS=${CONFIGS-cifar/512/bf16 cifar/512/bf16/activations=fp32}
TORCH=${TORCH-cifar/512/amp}
PROFILE=${PROFILE-cifar/512/bf16}
PAIRS=${PAIRS-}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/ringtrain-cache}
exec > >(tee -a "$OUT/gpu-quick.log") 2>&1
left() { echo $((BUDGET - SECONDS)); }
stage() { echo; echo "=== [${SECONDS}s] $*"; }
status=0

. scripts/gpu/python.sh # sets PY

stage "machine"
timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
. scripts/gpu/bins.sh
unpack_bins "$BIN" || exit 2
ls -l "$RT"

rc=0
if [ "$TESTS" != none ]; then
  stage "GPU tests (${TESTS:-all})"
  (cd pkg/gpu && RINGTRAIN_REQUIRE_GPU=1 timeout "$TEST_TIME" "$RT/gpu.test" -test.v -test.count=1 \
    ${TESTS:+-test.run "$TESTS"} -test.timeout "$((TEST_TIME - 3))s") >"$OUT/gpu-test.log" 2>&1
  rc=$?
  grep -E -- '--- (PASS|FAIL|SKIP)|^(PASS|FAIL|ok)|^gpu: |_test.go:[0-9]+:|panic' "$OUT/gpu-test.log" | cut -c1-260 | head -n 120
  echo "gpu tests exit status $rc"
  [ "$rc" -eq 0 ] || status=1
fi

bench() { # bench CONFIG [extra gpubench flags...]
  local cfg=$1; shift
  IFS=/ read -r stem batch prec extra <<<"$cfg"
  local -a e=() kv
  [ -n "${extra:-}" ] && IFS=, read -r -a kv <<<"$extra" && for f in "${kv[@]}"; do e+=("-$f"); done
  timeout 75 "$RT/gpubench" -device "$DEVICE" -stem "$stem" -batch "$batch" -precision "$prec" "${e[@]}" "$@"
}

stage "ringtrain: $CONFIGS"
: >"$OUT/bench.log"
for cfg in $CONFIGS; do
  [ "$(left)" -lt 40 ] && { echo "skipping $cfg: time budget"; status=1; continue; }
  echo "# config $cfg"
  bench "$cfg" -warmup "$WARMUP" -steps "$STEPS" 2>&1 | tee -a "$OUT/bench.log" | grep -v '^gpu: cuDNN'
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "gpubench $cfg failed"; status=1; }
done

stage "PyTorch peer: $TORCH"
: >"$OUT/torch.log"
for cfg in $TORCH; do
  [ "$(left)" -lt 30 ] && { echo "skipping torch $cfg: time budget"; status=1; continue; }
  IFS=/ read -r stem batch mode <<<"$cfg"
  PYTHONUNBUFFERED=1 timeout 150 "$PY" scripts/gpu/torch_peer.py --stems "$stem" --batches "$batch" --modes "$mode" \
    --warmup "$WARMUP" --steps "$STEPS" 2>&1 | tee -a "$OUT/torch.log"
done

torchrun() { # torchrun stem/batch/mode
  local stem batch mode
  IFS=/ read -r stem batch mode <<<"$1"
  PYTHONUNBUFFERED=1 timeout 150 "$PY" scripts/gpu/torch_peer.py --stems "$stem" --batches "$batch" --modes "$mode" \
    --warmup "$WARMUP" --steps "$STEPS" 2>&1
}

stage "alternating pairs: $PAIRS (x$ROUNDS)"
: >"$OUT/pairs.log"
for pair in $PAIRS; do
  ours=${pair%%=*} theirs=${pair#*=}
  runours() { bench "$ours" -warmup "$WARMUP" -steps "$STEPS" 2>&1 | grep '^RESULT' | sed "s|^RESULT |RESULT pair=$pair round=$r |" | tee -a "$OUT/pairs.log"; }
  runtheirs() {
    local t
    for t in ${theirs//,/ }; do
      torchrun "$t" | grep '^RESULT' | sed "s|^RESULT |RESULT pair=$pair round=$r |" | tee -a "$OUT/pairs.log"
    done
  }
  for r in $(seq "$ROUNDS"); do
    [ "$(left)" -lt 40 ] && { echo "skipping round $r of $pair: time budget"; status=1; break; }
    if [ $((r % 2)) -eq 1 ]; then runours; runtheirs; else runtheirs; runours; fi
  done
  "$PY" - "$pair" "$OUT/pairs.log" <<'PYEOF'
import statistics, sys
pair, path = sys.argv[1], sys.argv[2]
ours, theirs = [], {}
for line in open(path):
    kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    if kv.get("pair") != pair:
        continue
    if kv.get("impl") == "torch":
        theirs.setdefault(kv.get("precision"), []).append(float(kv["img_s"]))
    else:
        ours.append(float(kv["img_s"]))
def span(v):
    return f"median {statistics.median(v):.0f} (min {min(v):.0f}, max {max(v):.0f}, {len(v)} runs)"
if ours and theirs:
    mo = statistics.median(ours)
    print(f"pair {pair}: ours {span(ours)} img/s")
    for mode, v in sorted(theirs.items()):
        print(f"pair {pair}: torch {mode} {span(v)} img/s; ratio {mo / statistics.median(v):.2f}x")
    best = max(theirs, key=lambda m: statistics.median(theirs[m]))
    print(f"pair {pair}: vs the faster peer (torch {best}): median ratio {mo / statistics.median(theirs[best]):.2f}x")
PYEOF
done

stage "per-op breakdown: $PROFILE"
for cfg in $PROFILE; do
  [ "$(left)" -lt 30 ] && { echo "skipping profile $cfg: time budget"; continue; }
  f="$OUT/profile-$(echo "$cfg" | tr -c 'A-Za-z0-9_.\n-' '_').log"
  bench "$cfg" -warmup 2 -steps 2 -profile 2 -kernels >"$f" 2>&1 || echo "profile $cfg failed"
  grep -E '^(# profile|PROFILE)' "$f" | head -n 40
  grep -E '^KERNEL (k_nhwc_partial|k_nhwc_bn_|k_chan_finish_wide|k_bf16_)' "$f"
done

stage "table"
cat "$OUT/bench.log" "$OUT/torch.log" "$OUT/pairs.log" | "$PY" scripts/gpu/table.py | tee "$OUT/table.txt"
echo "gpu tests: $([ "$TESTS" = none ] && echo "not run" || { [ "$rc" -eq 0 ] && echo PASS || echo "FAIL ($rc)"; })  total ${SECONDS}s  status $status"
rm -rf "$RT"
exit $status
