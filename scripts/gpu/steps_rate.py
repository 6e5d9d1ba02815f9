"""Median images/s of a job from its steps.jsonl, over the steps after the
first 5 (consecutive steps only), for a global batch of 512.

    python3 scripts/gpu/steps_rate.py OUTPUT/steps.jsonl
"""
import json
import statistics
import sys
from datetime import datetime

ts = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    t = r["time"].rstrip("Z")
    t = t[:26] if "." in t else t
    ts.append((r["step"], datetime.fromisoformat(t).timestamp()))
ts.sort()
d = [b[1] - a[1] for a, b in zip(ts[5:], ts[6:]) if b[0] == a[0] + 1]
print("%.0f" % (512 / statistics.median(d)) if d else "0")
