#!/usr/bin/env bash
# ab.sh: the same measurements from two builds of ringtrain, interleaved in
# one run (A, B, then B, A in the next round, ...), so that a busy machine
# slows both alike; medians with min-max and the ratio B/A per figure.
#
#   scripts/bench/ab.sh A_BIN B_BIN
#
# A_BIN and B_BIN each hold coordinator, worker, cpustep and arbench built
# from one commit, e.g. (for a commit C, in a scratch worktree):
#   git worktree add --detach /tmp/a C && (cd /tmp/a && CGO_ENABLED=0 go build \
#     -o /tmp/a-bin/ ./cmd/coordinator ./cmd/worker ./scripts/bench/cpustep \
#     ./pkg/allreduce/internal/arbench)
#
# Per round and side (TARGETS, default "cpu job allreduce smoke"):
#   cpu:       make bench-cpu's one-process ringtrain rows without the torch
#              peer: cpustep imagenet stem (STEPS), cifar stem (CIFAR_STEPS),
#              batch BATCH, THREADS threads; images/s
#   job:       bench-cpu's 2-worker row: the real job, 2 workers x 1 thread,
#              JOB_STEPS steps of batch BATCH; images/s from steps.jsonl as
#              bench-cpu computes it
#   allreduce: make bench-allreduce's ringtrain paths without gloo: arbench
#              on the ResNet-18 gradient (11,173,962 float32), n=2 and 4,
#              gRPC+TCP and shared memory, ITERS iterations; median ms
#   smoke:     make smoke's job (coordinator + 2 workers, synthetic 4096,
#              3 epochs, batch 64, width 0.25, 1 thread): images/s (mean of
#              epochs, history.json), wall seconds, test accuracy, and the
#              final weights' SHA-256 (equal when training is unchanged)
#
# Environment: ROUNDS (3), TARGETS, STEPS (6), CIFAR_STEPS (2),
# JOB_STEPS (14), BATCH (128), THREADS (2), ITERS (10), PYTHON (python3),
# A_FLAGS and B_FLAGS (extra coordinator flags of the job and the smoke
# for that side, e.g. B_FLAGS="--http off").
# The last lines are the table; raw figures are in $OUT/results.tsv
# (OUT defaults to a temporary directory, kept).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 A_BIN B_BIN" >&2; exit 2; }
A=$(cd "$1" && pwd)
B=$(cd "$2" && pwd)
ROUNDS=${ROUNDS:-3}
TARGETS=${TARGETS:-"cpu job allreduce smoke"}
read -r -a AF <<<"${A_FLAGS:-}"
read -r -a BF <<<"${B_FLAGS:-}"
STEPS=${STEPS:-6}
CIFAR_STEPS=${CIFAR_STEPS:-2}
JOB_STEPS=${JOB_STEPS:-14}
BATCH=${BATCH:-128}
THREADS=${THREADS:-2}
ITERS=${ITERS:-10}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/ab.XXXXXX")}
mkdir -p "$OUT"
RES=$OUT/results.tsv
: >"$RES"
for d in "$A" "$B"; do
  for b in coordinator worker cpustep arbench; do
    [ -x "$d/$b" ] || { echo "ab: no $d/$b" >&2; exit 1; }
  done
done
echo "ab: A=$A ${A_FLAGS:-} B=$B ${B_FLAGS:-} rounds=$ROUNDS targets=$TARGETS; raw figures in $RES"

# put SIDE ROUND METRIC VALUE
put() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; echo "  $1 r$2 $3 $4"; }

cpu() {
  local side=$1 r=$2 bin=$3 line
  line=$("$bin/cpustep" -stem imagenet -batch "$BATCH" -threads "$THREADS" -steps "$STEPS" 2>/dev/null | grep -E 'images/s=' | tail -1)
  put "$side" "$r" cpu-imagenet-images/s "$(sed -E 's/.*images\/s=([0-9.]+).*/\1/' <<<"$line")"
  line=$("$bin/cpustep" -stem cifar -batch "$BATCH" -threads "$THREADS" -steps "$CIFAR_STEPS" 2>/dev/null | grep -E 'images/s=' | tail -1)
  put "$side" "$r" cpu-cifar-images/s "$(sed -E 's/.*images\/s=([0-9.]+).*/\1/' <<<"$line")"
}

# flags SIDE: that side's extra coordinator flags
flags() { if [ "$1" = A ]; then printf '%s\n' "${AF[@]}"; else printf '%s\n' "${BF[@]}"; fi; }

job() {
  local side=$1 r=$2 bin=$3 dir=$OUT/job
  local extra=()
  mapfile -t extra < <(flags "$side" | grep .)
  rm -rf "$dir"
  "$bin/coordinator" --workers 2 --threads 1 --device cpu --worker-bin "$bin/worker" \
    --dataset synthetic --synthetic-size 100000 --batch "$BATCH" --epochs 1 --max-steps "$JOB_STEPS" \
    --checkpoint-every 0 --no-progress --output "$dir" "${extra[@]}" >"$OUT/job.log" 2>&1 || {
    echo "ab: job failed ($side)" >&2; tail -20 "$OUT/job.log" >&2; return 1; }
  put "$side" "$r" job-2workers-images/s "$("$PYTHON" - "$dir/steps.jsonl" "$BATCH" <<'PY'
import json, sys, datetime
ts = []
for line in open(sys.argv[1]):
    t = json.loads(line)["time"].rstrip("Z")
    if "." in t:
        a, b = t.split("."); t = a + "." + b[:6]
    ts.append(datetime.datetime.fromisoformat(t).timestamp())
d = sorted(b - a for a, b in zip(ts[3:], ts[4:]))
print(f"{int(sys.argv[2]) / d[len(d) // 2]:.1f}")
PY
)"
}

allreduce() {
  local side=$1 r=$2 bin=$3 extra=()
  # Newer builds interleave rounds themselves; one round here.
  local help
  help=$("$bin/arbench" -h 2>&1 || true)
  if grep -q -- '-rounds' <<<"$help"; then extra=(-rounds 1); fi
  "$bin/arbench" -gloo "" -sizes 11173962 -worlds 2,4 -modes tcp,shm -iters "$ITERS" -raw-iters 1 "${extra[@]}" \
    >"$OUT/arbench.log" 2>&1 || { echo "ab: arbench failed ($side)" >&2; tail -20 "$OUT/arbench.log" >&2; return 1; }
  grep -E '^grpc-(tcp|shm) n=[0-9]+ bytes=[0-9]+ median' "$OUT/arbench.log" | while read -r path n _ _ ms _; do
    ms=${ms%,}
    put "$side" "$r" "allreduce-${path#grpc-}-n${n#n=}-ms" "${ms%ms}"
  done
}

smoke() {
  local side=$1 r=$2 bin=$3 dir=$OUT/smoke t0 t1 extra=()
  mapfile -t extra < <(flags "$side" | grep .)
  rm -rf "$dir"
  t0=$(date +%s.%N)
  "$bin/coordinator" --workers 2 --no-progress --worker-bin "$bin/worker" --output "$dir" \
    --dataset synthetic --synthetic-size 4096 --epochs 3 --batch 64 --width 0.25 --threads 1 "${extra[@]}" >"$OUT/smoke.log" 2>&1 || {
    echo "ab: smoke failed ($side)" >&2; tail -20 "$OUT/smoke.log" >&2; return 1; }
  t1=$(date +%s.%N)
  "$PYTHON" - "$dir/history.json" <<'PY' | while read -r k v; do put "$side" "$r" "$k" "$v"; done
import json, sys
h = json.load(open(sys.argv[1]))["epochs"]
print("smoke-images/s", round(sum(e["images_per_sec"] for e in h) / len(h), 1))
print("smoke-test-acc", h[-1]["val_acc"])
PY
  put "$side" "$r" smoke-wall-s "$("$PYTHON" -c "print(round($t1 - $t0, 2))")"
  put "$side" "$r" smoke-sha256 "$(sha256sum "$dir/model.safetensors" | cut -c1-16)"
}

for r in $(seq 1 "$ROUNDS"); do
  order="A B"
  [ $((r % 2)) -eq 0 ] && order="B A"
  echo "--- round $r/$ROUNDS ($order)"
  for t in $TARGETS; do
    for side in $order; do
      bin=$A
      [ "$side" = B ] && bin=$B
      "$t" "$side" "$r" "$bin"
    done
  done
done

"$PYTHON" - "$RES" "$ROUNDS" <<'PY'
import sys, statistics
from collections import defaultdict
vals = defaultdict(lambda: defaultdict(list))
order = []
for line in open(sys.argv[1]):
    side, r, k, v = line.rstrip("\n").split("\t")
    if k not in order:
        order.append(k)
    vals[k][side].append(v)
print()
print(f"| figure | A median (min-max) | B median (min-max) | B/A median (min-max of rounds) |")
print("|---|---|---|---|")
for k in order:
    a, b = vals[k]["A"], vals[k]["B"]
    if k.endswith("sha256"):
        print(f"| {k} | {' '.join(sorted(set(a)))} | {' '.join(sorted(set(b)))} | {'same' if set(a) == set(b) and len(set(a)) == 1 else 'DIFFERENT'} |")
        continue
    a, b = [float(x) for x in a], [float(x) for x in b]
    ratios = [y / x for x, y in zip(a, b) if x]
    f = lambda xs: f"{statistics.median(xs):.4g} ({min(xs):.4g}-{max(xs):.4g})"
    print(f"| {k} | {f(a)} | {f(b)} | {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
PY
