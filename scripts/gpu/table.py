#!/usr/bin/env python3
"""Reads RESULT lines (from gpubench and torch_peer.py) on stdin and prints
the comparison table of scripts/gpu-check.sh: images/s, ratio to torch AMP
(bf16) and torch fp32 of the same stem and batch, and model FLOP utilisation
against the H100 SXM dense peaks (bf16 989 TFLOP/s, tf32 495, fp32 67).
ringtrain rows are named by their convolutions (rt/cudnn, rt/im2col); rows
suffixed "-f32a" kept float32 activations in bf16 (gpubench -activations fp32),
"+find" timed cuDNN's algorithms (gpubench -conv-search measure); rows
marked "*" ran with a non-default convolution scratch (one
chunk per convolution), to compare losses with the chunked default."""
import sys

PEAK = {"bf16": 989.0, "amp": 989.0, "tf32": 495.0, "fp32": 67.0}

rows = []
for line in sys.stdin:
    if not line.startswith("RESULT "):
        continue
    kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    rows.append(kv)

torch = {(r["stem"], r["batch"], r["precision"]): float(r["img_s"]) for r in rows if r.get("impl") == "torch"}
print(f"{'impl':<18}{'prec':<6}{'stem':<10}{'batch':>6}{'img/s':>10}{'ms/step':>9}{'TFLOP/s':>9}{'MFU':>7}{'vs AMP':>8}{'vs fp32':>8}")
for r in rows:
    if r.get("impl") == "ringtrain" and r.get("conv"):
        r["impl"] = "rt/" + r["conv"]  # rt/cudnn or rt/im2col
        if r.get("act") == "fp32" and r["precision"] == "bf16":
            r["impl"] += "-f32a"  # bf16 convolutions, float32 activations
        if r.get("search") == "measure":
            r["impl"] += "+find"  # cuDNN algorithms timed (cudnnFind)
    if r.get("scratch", "0") != "0":  # a one-chunk comparison run of gpubench
        r["impl"] = r["impl"] + "*"
    ips = float(r["img_s"])
    amp = torch.get((r["stem"], r["batch"], "amp"))
    f32 = torch.get((r["stem"], r["batch"], "fp32"))
    tf = float(r.get("tflops", 0))
    mfu = tf / PEAK.get(r["precision"], 989.0)
    ra = f"{ips / amp:.2f}x" if amp else "-"
    rf = f"{ips / f32:.2f}x" if f32 else "-"
    print(f"{r['impl']:<18}{r['precision']:<6}{r['stem']:<10}{r['batch']:>6}{ips:>10.1f}{float(r['ms_step']):>9.1f}"
          f"{tf:>9.1f}{100 * mfu:>6.1f}%{ra:>8}{rf:>8}")
