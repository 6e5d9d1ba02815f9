"""Images/s of a job from its steps.jsonl: the global batch over the median
interval between consecutive steps after the first WARM, and with --mean
also the mean rate over the same intervals (epoch ends included).

    python3 scripts/gpu/steps_rate.py [--mean] OUTPUT/steps.jsonl [BATCH [WARM]]

BATCH defaults to 512 and WARM to 5. Prints the median rate (then the mean
with --mean), 0 when fewer than two consecutive steps are there.
"""
import json
import statistics
import sys
from datetime import datetime

args = sys.argv[1:]
mean = "--mean" in args
args = [a for a in args if a != "--mean"]
path = args[0]
batch = int(args[1]) if len(args) > 1 else 512
warm = int(args[2]) if len(args) > 2 else 5

ts = []
for line in open(path):
    r = json.loads(line)
    t = r["time"].rstrip("Z")
    t = t[:26] if "." in t else t
    ts.append((r["step"], datetime.fromisoformat(t).timestamp()))
ts.sort()
d = [b[1] - a[1] for a, b in zip(ts[warm:], ts[warm + 1:]) if b[0] == a[0] + 1]
rates = ["%.0f" % (batch / statistics.median(d)), "%.0f" % (batch * len(d) / sum(d))] if d else ["0", "0"]
print(" ".join(rates if mean else rates[:1]))
