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
OUT=${OUT:-out/gpu-tta}
BIN=${BIN:-.devbin/tta}
RECIPE=${RECIPE:-examples/cifar10-fast.yaml}
ARCHIVE=${ARCHIVE:-data/cifar-10-binary.tar.gz}
ARCHIVE_SHA256=${ARCHIVE_SHA256:-ec30ca52e4dacef681246eccf170664c7ddf6c340060ab4372cb6c7443c4f0c0}
ARCHIVE_MD5=${ARCHIVE_MD5:-86c0b761e5f5abb74bf6d87eddaf0ab6}
PARTS=${PARTS:-.devbin/cifar-parts}
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
if [ ! -f "$ARCHIVE" ] && compgen -G "$PARTS/part-*" >/dev/null; then
  mkdir -p "$(dirname "$ARCHIVE")" && cat "$PARTS"/part-* >"$ARCHIVE"
fi
[ -f "$ARCHIVE" ] || { echo "gpu-tta: no CIFAR-10 archive at $ARCHIVE (nor parts in $PARTS)"; exit 1; }
got=$(sha256sum "$ARCHIVE" | cut -d' ' -f1)
[ "$got" = "$ARCHIVE_SHA256" ] || { echo "gpu-tta: $ARCHIVE has SHA-256 $got, want $ARCHIVE_SHA256"; exit 1; }
DATA=$(mktemp -d)
tar -xzf "$ARCHIVE" -C "$DATA" || exit 1
echo "archive verified ($got), extracted to $DATA"
timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true

RT=$(mktemp -d)
for f in "$BIN"/*.gz; do gunzip -c "$f" >"$RT/$(basename "$f" .gz)" && chmod +x "$RT/$(basename "$f" .gz)"; done

stage "ours: $RECIPE $OURS_ARGS"
rm -rf "$OUT/ours"
start=$(date +%s.%N)
# The archive goes in as a local mirror: the job verifies and extracts it as
# it would a download.
timeout "$LIMIT" "$RT/coordinator" --workers 1 --worker-bin "$RT/worker" --config "$RECIPE" \
  --data-dir "$OUT/ours-data" --cifar-mirror "$(cd "$(dirname "$ARCHIVE")" && pwd)/$(basename "$ARCHIVE")" \
  --cifar-mirror-md5 "$ARCHIVE_MD5" --output "$OUT/ours" --no-progress --device "$DEVICE" $OURS_ARGS >"$OUT/ours.log" 2>&1
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
cat "$OUT/ours.result" "$OUT"/torch-*.log | "$PY" -c '
import math, sys
ours, peers = None, []
for line in sys.stdin:
    if not line.startswith("RESULT "):
        continue
    kv = dict(f.split("=", 1) for f in line.split()[1:])
    if kv["impl"] == "ringtrain":
        ours = kv
    else:
        peers.append(kv)
if ours is None or not peers:
    print("gpu-tta: incomplete (ours %s, torch runs %d)" % ("ran" if ours else "missing", len(peers)))
    sys.exit(1)
for p in peers:
    print("torch %s: %s s to target, final %.2f%%" % (p["mode"], p["tta_s"], 100 * float(p["final_acc"])))
def key(p):
    v = float(p["tta_s"])
    return (math.isnan(v), v)
best = min(peers, key=key)
o, t = float(ours["tta_s"]), float(best["tta_s"])
target = 100 * float(ours["target"])
print("gpu-tta: ours %.1f s to %g%% (final %.2f%%), torch %.1f s (final %.2f%%), ratio %.2f x" % (
    o, target, 100 * float(ours["final_acc"]), t, 100 * float(best["final_acc"]), o / t if t > 0 else math.nan))
' | tee "$OUT/summary.txt"
status=$?
rm -rf "$RT" "$DATA"
exit $status
