#!/usr/bin/env bash
# bench-cpu.sh: ringtrain's CPU backend against the PyTorch peer on this
# machine, in ONE run, interleaved (ours, torch, ours, torch, ...), medians.
#
#   1. one process, 2 threads, ResNet-18 imagenet stem, batch 128, 32x32
#   2. the same with the cifar stem (fewer steps: it is 15x the work)
#   3. 2 local workers x 1 thread, global batch 128 (imagenet stem):
#      ringtrain's real job (bin/coordinator --workers 2 --threads 1
#      --dataset synthetic) against torch DDP over gloo
#   4. the GEMM micro-benchmark on the convolution shapes vs OpenBLAS
#      (scripts/gemm/bench.sh, i.e. make bench-gemm), unless BENCH_GEMM=0
#
# Every program reports the median of its own timed steps; the table shows
# the median of those over the rounds, and the ratio ours/torch. GFLOP/s
# are effective (3 x forward multiply-adds x 2 per training image: 0.22
# GFLOP imagenet stem, 3.33 GFLOP cifar stem at 32x32, as in the peer's
# README). Peak RSS is the largest process's maximum resident set (GNU time).
# The last line is
#   cpu: imagenet-stem Ax, cifar-stem Bx, 2-workers Cx (vs torch, same run)
#
# Environment: ROUNDS (3), STEPS (8), CIFAR_STEPS (3), JOB_STEPS (14),
# THREADS (2), BATCH (128), REF_DIR (../shared/reference relative to the
# repository root: torch_cpu_resnet.py, torch_ddp_cpu.py), PYTHON
# (/usr/bin/python3 when present), BENCH_GEMM (1), GEMM_ROUNDS (3), GO (go).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
GO=${GO:-go}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-8}
CIFAR_STEPS=${CIFAR_STEPS:-3}
JOB_STEPS=${JOB_STEPS:-14}
THREADS=${THREADS:-2}
BATCH=${BATCH:-128}
REF_DIR=${REF_DIR:-$ROOT/../shared/reference}
if [ -z "${PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
BENCH_GEMM=${BENCH_GEMM:-1}

die() { echo "bench-cpu: $*" >&2; exit 1; }
[ -f "$REF_DIR/torch_cpu_resnet.py" ] || die "no $REF_DIR/torch_cpu_resnet.py (set REF_DIR)"
[ -f "$REF_DIR/torch_ddp_cpu.py" ] || die "no $REF_DIR/torch_ddp_cpu.py (set REF_DIR)"
"$PYTHON" -c 'import torch' 2>/dev/null || die "$PYTHON cannot import torch (apt-get install python3-torch)"
[ -x /usr/bin/time ] || die "needs GNU time (/usr/bin/time; apt-get install time)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-cpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
BIN=$WORK/bin
mkdir -p "$BIN"
echo "bench-cpu: building into $BIN"
CGO_ENABLED=0 $GO build -o "$BIN/" ./scripts/bench/cpustep
JOB_OK=1
if ! CGO_ENABLED=0 $GO build -o "$BIN/" ./cmd/coordinator ./cmd/worker 2>"$WORK/build.err"; then
  JOB_OK=0
  echo "bench-cpu: cmd/coordinator or cmd/worker does not build; 2-worker row skipped:" >&2
  cat "$WORK/build.err" >&2
fi

# timed RESULTFILE CMD...: runs CMD under GNU time; appends "<stdout> rss_kb=N" to RESULTFILE.
timed() {
  local out=$1; shift
  /usr/bin/time -f 'rss_kb=%M' -o "$WORK/time.txt" "$@" >"$WORK/run.txt" 2>"$WORK/run.err" || {
    echo "bench-cpu: failed: $*" >&2; tail -20 "$WORK/run.err" >&2; return 1; }
  echo "$(grep -E 'images/s=' "$WORK/run.txt" | tail -1) $(tail -1 "$WORK/time.txt")" >>"$out"
  tail -1 "$out" | cut -c1-150
}

# ringtrain's real job: coordinator + 2 worker processes on synthetic data.
# images/s = global batch / median interval between consecutive committed
# steps in steps.jsonl (first 3 steps skipped as warm-up); without
# steps.jsonl (older builds), steps / span between the last "training" and
# the final "checkpoint" log lines of worker 0.
job() {
  local out=$1 dir=$WORK/job
  rm -rf "$dir"
  /usr/bin/time -f 'rss_kb=%M' -o "$WORK/time.txt" "$BIN/coordinator" --workers 2 --threads 1 --device cpu \
    --dataset synthetic --synthetic-size 100000 --batch "$BATCH" --epochs 1 --max-steps "$JOB_STEPS" \
    --checkpoint-every 0 --no-progress --output "$dir" >"$WORK/run.txt" 2>&1 || {
    echo "bench-cpu: coordinator job failed" >&2; tail -20 "$WORK/run.txt" >&2; return 1; }
  local ips
  if [ -s "$dir/steps.jsonl" ]; then
    ips=$("$PYTHON" - "$dir/steps.jsonl" "$BATCH" <<'PY'
import json, sys, datetime
ts = []
for line in open(sys.argv[1]):
    t = json.loads(line)["time"]
    t = t.rstrip("Z")
    if "." in t:
        a, b = t.split("."); t = a + "." + b[:6]
    ts.append(datetime.datetime.fromisoformat(t).timestamp())
d = sorted(b - a for a, b in zip(ts[3:], ts[4:]))
print(f"{int(sys.argv[2]) / d[len(d) // 2]:.1f} steps.jsonl")
PY
)
  else
    ips=$("$PYTHON" - "$dir/logs/w0.log" "$JOB_STEPS" "$BATCH" <<'PY'
import json, sys, datetime
def ts(s): return datetime.datetime.fromisoformat(s.rstrip("Z")).timestamp()
start = end = None
for line in open(sys.argv[1]):
    try: r = json.loads(line)
    except ValueError: continue
    if r.get("msg") == "training": start = ts(r["ts"])
    if r.get("msg") == "checkpoint" and start is not None: end = ts(r["ts"])
print(f"{int(sys.argv[2]) * int(sys.argv[3]) / (end - start):.1f} log-span")
PY
)
  fi
  echo "ringtrain-job workers=2 threads=1 images/s=${ips% *} (${ips#* }) $(tail -1 "$WORK/time.txt")" >>"$out"
  tail -1 "$out"
}

R=$WORK/results
mkdir -p "$R"
for round in $(seq 1 "$ROUNDS"); do
  echo "--- round $round/$ROUNDS"
  timed "$R/ours-imagenet" "$BIN/cpustep" -stem imagenet -batch "$BATCH" -threads "$THREADS" -steps "$STEPS"
  THREADS=$THREADS timed "$R/torch-imagenet" "$PYTHON" "$REF_DIR/torch_cpu_resnet.py" seed "$BATCH" "$STEPS"
  timed "$R/ours-cifar" "$BIN/cpustep" -stem cifar -batch "$BATCH" -threads "$THREADS" -steps "$CIFAR_STEPS"
  THREADS=$THREADS timed "$R/torch-cifar" "$PYTHON" "$REF_DIR/torch_cpu_resnet.py" cifar "$BATCH" "$CIFAR_STEPS"
  if [ "$JOB_OK" = 1 ]; then
    job "$R/ours-2w"
    timed "$R/torch-2w" "$PYTHON" "$REF_DIR/torch_ddp_cpu.py" 2 "$BATCH" "$JOB_STEPS" seed
  fi
done

GEMM_LINE=""
if [ "$BENCH_GEMM" != 0 ]; then
  echo "--- GEMM micro-benchmark (scripts/gemm/bench.sh)"
  GEMM_THREADS=$THREADS GEMM_ROUNDS=${GEMM_ROUNDS:-3} GO=$GO scripts/gemm/bench.sh | tee "$WORK/gemm.txt"
  GEMM_LINE=$(grep '^gemm: median ratio' "$WORK/gemm.txt" || true)
fi

"$PYTHON" - "$R" "$(uname -n)" "$(date -u +%Y-%m-%dT%H:%MZ)" "$THREADS" "$BATCH" "$GEMM_LINE" <<'PY'
import os, re, statistics, sys
R, host, date, threads, batch, gemm = sys.argv[1:7]
def load(name):
    p = os.path.join(R, name)
    if not os.path.exists(p): return None
    ips, rss = [], []
    for line in open(p):
        m = re.search(r"images/s=([0-9.]+)", line); ips.append(float(m.group(1)))
        m = re.search(r"rss_kb=([0-9]+)", line); rss.append(int(m.group(1)) / 1024 if m else 0)
    return statistics.median(ips), max(rss), ips
cpu = open("/proc/cpuinfo").read()
model = re.search(r"model name\s*:\s*(.*)", cpu)
print()
print(f"bench-cpu: {host}, {os.cpu_count()} CPUs ({model.group(1) if model else '?'}), {date}, "
      f"batch {batch}, {threads} threads, medians of per-run median steps (interleaved)")
print(f"{'config':<22}{'ours img/s':>11}{'torch img/s':>12}{'ratio':>7}{'ours GF/s':>10}{'torch GF/s':>11}{'ours RSS':>10}{'torch RSS':>10}  runs (ours | torch)")
gf = {"imagenet": 0.22, "cifar": 3.33, "2w": 0.22}
label = {"imagenet": "imagenet-stem 1x2thr", "cifar": "cifar-stem 1x2thr", "2w": "2 workers x 1thr"}
ratios = {}
for k in ["imagenet", "cifar", "2w"]:
    o, t = load("ours-" + k), load("torch-" + k)
    if not o or not t:
        print(f"{label[k]:<22}{'n/a':>11}"); ratios[k] = None; continue
    r = o[0] / t[0]; ratios[k] = r
    print(f"{label[k]:<22}{o[0]:>11.1f}{t[0]:>12.1f}{r:>7.2f}{o[0]*gf[k]:>10.1f}{t[0]*gf[k]:>11.1f}"
          f"{o[1]:>8.0f}Mi{t[1]:>8.0f}Mi  {' '.join(f'{v:.0f}' for v in o[2])} | {' '.join(f'{v:.0f}' for v in t[2])}")
if gemm: print(gemm)
f = lambda r: "n/a" if r is None else f"{r:.2f}x"
print(f"cpu: imagenet-stem {f(ratios['imagenet'])}, cifar-stem {f(ratios['cifar'])}, 2-workers {f(ratios['2w'])} (vs torch, same run)")
PY
