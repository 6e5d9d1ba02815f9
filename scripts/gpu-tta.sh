#!/usr/bin/env bash
# gpu-tta.sh: time to accuracy on one GPU, ours against PyTorch in the same
# session (issue "GPU round 2"). From the repository root, with binaries
# prebuilt by `make gpu-ttabin` (gzip'd into .devbin/tta/):
#   1. ours: `coordinator --workers 1 --config $RECIPE` on the CIFAR-10
#      archive ARCHIVE (its SHA-256 checked first), timed from the command's
#      start to the log line of the first epoch whose test accuracy reaches
#      TARGET (start-up, data loading and kernel compilation included);
#   2. the PyTorch peer, scripts/gpu/torch_tta.py, with the same recipe (read
#      from RECIPE), eager and with torch.compile (compile time included); the
#      faster of the two is the peer;
#   3. the summary line
#      gpu-tta: ours S1 s to 92% (final A1%), torch S2 s (final A2%), ratio R x
#      (R = S1/S2; the goal is R <= 0.8 with final accuracies within 0.3 points).
# The archive is larger than one device call carries: `make gpu-tta-parts`
# splits it into .devbin/cifar-parts/part-*, carried in back-to-back calls;
# this script joins them into ARCHIVE when ARCHIVE is missing.
# DEVICE=cpu with OURS_ARGS/TORCH_ARGS makes a dry run without a GPU.
set -u -o pipefail
. scripts/gpu/archive.sh # ARCHIVE, PARTS and their checks
OUT=${OUT:-out/gpu-tta}
BIN=${BIN:-.devbin/tta}
RECIPE=${RECIPE:-examples/cifar10-fast.yaml}
TARGET=${TARGET:-0.92}
DEVICE=${DEVICE:-cuda}
OURS_ARGS=${OURS_ARGS-}
TORCH_ARGS=${TORCH_ARGS-}
TORCH_MODES=${TORCH_MODES-eager compile}
LIMIT=${LIMIT:-900}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/gpu-tta.log") 2>&1
stage() { echo; echo "=== [${SECONDS}s] $*"; }

. scripts/gpu/python.sh # sets PY

stage "data"
cifar_archive || { echo "gpu-tta: no data"; exit 1; }
DATA=$(mktemp -d)
tar -xzf "$ARCHIVE" -C "$DATA" || exit 1
echo "extracted to $DATA"
timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true

. scripts/gpu/bins.sh
unpack_bins "$BIN" || exit 2

stage "ours: $RECIPE $OURS_ARGS"
rm -rf "$OUT/ours"
start=$(date +%s.%N)
# Both sides read the same extracted files (DATA/cifar-10-batches-bin, the
# archive verified above), so neither side's time includes the extraction.
timeout "$LIMIT" "$RT/coordinator" --workers 1 --worker-bin "$RT/worker" --config "$RECIPE" \
  --data-dir "$DATA" --output "$OUT/ours" --no-progress --device "$DEVICE" $OURS_ARGS >"$OUT/ours.log" 2>&1
rc=$?
echo "coordinator exit status $rc"
"$PY" - "$start" "$TARGET" "$OUT/ours.log" >"$OUT/ours.result" <<'PYEOF'
import datetime, json, math, sys
start, target, path = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
tta, acc, n = math.nan, 0.0, 0
for line in open(path, errors="replace"):
    if not line.startswith("{"):
        continue
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("msg") != "epoch" or r.get("logger") != "coordinator":
        continue
    ts = datetime.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).timestamp()
    n, acc = n + 1, r["val_acc"]
    print(f"epoch {r['epoch']} test_acc {acc:.4f} elapsed {ts - start:.1f}s")
    if acc >= target and math.isnan(tta):
        tta = ts - start
print(f"RESULT impl=ringtrain tta_s={tta:.1f} target={target} final_acc={acc:.4f} epochs={n}")
PYEOF
cat "$OUT/ours.result"
[ "$rc" -eq 0 ] || tail -n 20 "$OUT/ours.log"

# The peer's recipe comes from the same file.
read -r EPOCHS BATCH LR MOM WD LS < <("$PY" - "$RECIPE" <<'PYEOF'
import re, sys
t = open(sys.argv[1]).read()
def get(key, default):
    m = re.search(r"\b" + key + r":\s*([0-9.eE+-]+)", t)
    return m.group(1) if m else default
print(get("epochs", "20"), get("global_batch", "512"), get("max_lr", get("lr", "0.4")),
      get("momentum", "0.9"), get("weight_decay", "0.0005"), get("label_smoothing", "0"))
PYEOF
)
for mode in $TORCH_MODES; do
  stage "torch $mode: epochs $EPOCHS batch $BATCH lr $LR momentum $MOM wd $WD smoothing $LS $TORCH_ARGS"
  flag=""; [ "$mode" = compile ] && flag=--compile
  PYTHONUNBUFFERED=1 timeout "$LIMIT" "$PY" scripts/gpu/torch_tta.py --data "$DATA/cifar-10-batches-bin" \
    --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" --momentum "$MOM" --weight-decay "$WD" \
    --label-smoothing "$LS" --target "$TARGET" --device "$DEVICE" $flag $TORCH_ARGS 2>&1 | tee "$OUT/torch-$mode.log" |
    grep -E '^(epoch|RESULT)|Error'
done

stage "summary"
"$PY" scripts/gpu/tta_summary.py "$OUT/ours.result" "$OUT"/torch-*.log | tee "$OUT/summary.txt"
status=$?
rm -rf "$RT" "$DATA"
exit $status
