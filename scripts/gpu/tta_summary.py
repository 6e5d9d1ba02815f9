"""The summary of scripts/gpu-tta.sh from its result files: ours (the
`RESULT impl=ringtrain` file with `epoch N test_acc A elapsed S` lines) and
one log per PyTorch mode (`epoch N ... test_acc A elapsed S` and `RESULT
impl=torch mode=M ...`). Prints each peer's time to the target, then

    gpu-tta: ours S1 s to 92% (final A1%), torch S2 s (final A2%), ratio R x

against the faster peer (R = S1/S2; nan where a side never reached the
target), and, when either side missed the target, the times of both to the
highest accuracy (in steps of 0.5 points) that both reached:

    both reached 91.5%: ours S1 s, torch (mode) S2 s, ratio R x

Exits 1 when ours or every peer is missing.

    python3 scripts/gpu/tta_summary.py OURS_RESULT TORCH_LOG...
"""
import math
import os
import re
import sys

EPOCH = re.compile(r"^epoch (\d+) .*test_acc ([0-9.]+) elapsed ([0-9.]+)s")


def read(path):
    """The RESULT fields and the (accuracy, elapsed) of every epoch."""
    res, epochs = None, []
    for line in open(path, errors="replace"):
        m = EPOCH.match(line)
        if m:
            epochs.append((float(m.group(2)), float(m.group(3))))
        elif line.startswith("RESULT "):
            res = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    return res, epochs


def first(epochs, target):
    """Seconds to the first epoch at or above target (nan if none)."""
    return next((t for a, t in epochs if a >= target), math.nan)


def main(argv):
    ours, oep = read(argv[1])
    peers = []
    for p in argv[2:]:
        if not os.path.exists(p):  # an unmatched glob: no torch run
            continue
        res, ep = read(p)
        if res is not None:
            peers.append((res, ep))
    if ours is None or not peers:
        print("gpu-tta: incomplete (ours %s, torch runs %d)" % ("ran" if ours else "missing", len(peers)))
        return 1
    for res, _ in peers:
        print("torch %s: %s s to target, final %.2f%%" % (res["mode"], res["tta_s"], 100 * float(res["final_acc"])))
    def key(p):
        v = float(p[0]["tta_s"])
        return (math.isnan(v), v)
    best, bep = min(peers, key=key)
    o, t = float(ours["tta_s"]), float(best["tta_s"])
    target = float(ours["target"])
    print("gpu-tta: ours %.1f s to %g%% (final %.2f%%), torch %.1f s (final %.2f%%), ratio %.2f x" % (
        o, 100 * target, 100 * float(ours["final_acc"]), t, 100 * float(best["final_acc"]), o / t if t > 0 else math.nan))
    if math.isnan(o) or math.isnan(t):
        top = min(max((a for a, _ in oep), default=0), max((a for a, _ in bep), default=0))
        common = math.floor(top * 200) / 200
        if common > 0:
            # The peer is the faster of the modes to this accuracy.
            cands = [(first(ep, common), res["mode"]) for res, ep in peers]
            tt, mode = min(cands, key=lambda c: (math.isnan(c[0]), c[0]))
            oo = first(oep, common)
            print("both reached %.1f%%: ours %.1f s, torch (%s) %.1f s, ratio %.2f x" % (
                100 * common, oo, mode, tt, oo / tt if tt > 0 else math.nan))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
