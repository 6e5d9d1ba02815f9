#!/usr/bin/env bash
# What watching a job costs the training step: the same 2-worker job with
# the dashboard and metrics off (--http off) and on (the coordinator's
# dashboard with a browser-like client holding its event stream, and every
# /metrics page -- coordinator and both workers -- scraped each second),
# interleaved over ROUNDS rounds (the order alternates). Throughput is
# measured from steps.jsonl with the workers' own step times, after the
# first WARM steps; and, less sensitive to other load on a shared machine,
# as the CPU time of the whole job (coordinator and workers, user+system)
# per step. Ends with
#   observe: off A images/s, on B images/s (medians of N runs each), on/off R (min-max of pairs P-Q); CPU per step off C ms, on D ms (medians)
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
ROUNDS=${ROUNDS:-4}
WARM=${WARM:-20}
FLAGS=${FLAGS:---dataset synthetic --synthetic-size 8192 --epochs 2 --batch 64 --width 0.25 --threads 1 --no-progress}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
CGO_ENABLED=0 $GO build -o "$tmp/bin/" ./cmd/coordinator ./cmd/worker

rate() { # images/s of a run from its steps.jsonl (worker clocks, after WARM steps)
  python3 - "$1/steps.jsonl" "$WARM" <<'PY'
import json, sys, datetime
last = {}
for line in open(sys.argv[1]):
    l = json.loads(line); last[l["step"]] = l
steps = sorted(s for s in last if s > int(sys.argv[2]))
t = lambda s: datetime.datetime.fromisoformat(last[s]["time"].replace("Z", "+00:00")).timestamp()
n = sum(last[s].get("samples", 64) for s in steps[1:])
print("%.1f" % (n / (t(steps[-1]) - t(steps[0]))))
PY
}

# cpu OUTFILE CMD...: runs CMD and writes the CPU seconds (user+system) of
# it and every descendant it waited for.
cpu() {
  python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write("%.3f\n" % (u.ru_utime + u.ru_stime))
sys.exit(rc)' "$@"
}

cpustep() { # CPU ms per step of a run
  python3 -c 'import json, sys
steps = len({json.loads(l)["step"] for l in open(sys.argv[1] + "/steps.jsonl")})
print("%.1f" % (1000 * float(open(sys.argv[1] + ".cpu").read()) / steps))' "$1"
}

run() { # run MODE OUT: one job; prints its images/s and CPU ms per step
  local mode=$1 out=$2 port
  if [ "$mode" = off ]; then
    cpu "$out.cpu" "$tmp/bin/coordinator" --workers 2 --output "$out" --http off $FLAGS 2> "$out.log"
  else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cpu "$out.cpu" "$tmp/bin/coordinator" --workers 2 --output "$out" --http 127.0.0.1:$port $FLAGS 2> "$out.log" &
    local co=$!
    until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do sleep 0.1; kill -0 $co 2>/dev/null || break; done
    curl -sN "http://127.0.0.1:$port/api/events" > /dev/null 2>&1 &
    local sse=$!
    ( while kill -0 $co 2>/dev/null; do
        urls="http://127.0.0.1:$port"
        urls="$urls $(grep -ho '"url":"[^"]*"' "$out"/logs/w*.log 2>/dev/null | cut -d'"' -f4 | tr '\n' ' ')"
        for u in $urls; do curl -s "$u/metrics" > /dev/null || true; done
        sleep 1
      done ) &
    local scr=$!
    wait $co
    kill $sse $scr 2>/dev/null || true
    wait $sse $scr 2>/dev/null || true
  fi
  echo "$(rate "$out") $(cpustep "$out")"
}

offs=() ons=() ratios=() coff=() con=()
printf "%-6s %-5s %12s %14s\n" round mode images/s "CPU ms/step"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="off on"; else order="on off"; fi
  for m in $order; do
    read -r v c < <(run $m "$tmp/r$r-$m")
    printf "%-6s %-5s %12s %14s\n" "$r" "$m" "$v" "$c"
    if [ $m = off ]; then off=$v; offs+=("$v"); coff+=("$c"); else on=$v; ons+=("$v"); con+=("$c"); fi
  done
  ratios+=("$(python3 -c "print('%.3f' % ($on / $off))")")
done
python3 - "${offs[*]}" "${ons[*]}" "${ratios[*]}" "${coff[*]}" "${con[*]}" <<'PY'
import statistics, sys
off, on, r, coff, con = ([float(x) for x in a.split()] for a in sys.argv[1:6])
print("observe: off %.0f images/s, on %.0f images/s (medians of %d runs each), on/off %.3f (min-max of pairs %.3f-%.3f); CPU per step off %.1f ms, on %.1f ms (medians)" % (
    statistics.median(off), statistics.median(on), len(off), statistics.median(r), min(r), max(r),
    statistics.median(coff), statistics.median(con)))
PY
