#!/usr/bin/env python3
"""ncu_summary.py CSV: one line per kernel from Nsight Compute's
`--csv --page details` output: launches, mean duration, DRAM and memory
throughput (% of peak), achieved and theoretical occupancy, registers per
thread, block and grid sizes. Standard library only.

Rows are (launch ID, kernel, section, metric, unit, value); a file this
script cannot read that way is reported, not fatal: the CSV itself comes
back from the device for a reading by eye."""
import csv
import statistics
import sys

# Duration units to microseconds.
TIME = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}

WANT = {
    "Duration": "dur",
    "DRAM Throughput": "dram",
    "Memory Throughput": "mem",
    "Achieved Occupancy": "occ",
    "Theoretical Occupancy": "theo",
    "Registers Per Thread": "regs",
    "Block Size": "block",
    "Grid Size": "grid",
}


def number(s):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def main(path):
    with open(path, newline="", errors="replace") as f:
        lines = [ln for ln in f if ln.startswith('"')]  # ncu's own messages start with ==PROF==
    rows = list(csv.DictReader(lines))
    need = {"ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"}
    if not rows or not need <= set(rows[0]):
        print(f"ncu: no kernel rows to read in {path} (columns: {sorted(rows[0]) if rows else 'none'})")
        return 0
    launches = {}  # ID -> (kernel, {key: value})
    for r in rows:
        key = WANT.get(r["Metric Name"])
        if key is None:
            continue
        v = number(r["Metric Value"])
        if v is None:
            continue
        if key == "mem" and r["Metric Unit"] != "%":
            continue  # the byte/second row of the same name
        if key == "dur":
            v *= TIME.get(r["Metric Unit"], float("nan"))
        name = r["Kernel Name"].split("(")[0].strip()
        launches.setdefault(r["ID"], (name, {}))[1][key] = v
    if not launches:
        print(f"ncu: no metrics of {sorted(WANT)} in {path}")
        return 0
    kernels = {}
    for name, m in launches.values():
        kernels.setdefault(name, []).append(m)
    print("ncu: kernel                       launches  mean us  DRAM %  mem %  occ %  theory %  regs  block  grid")
    for name in sorted(kernels, key=lambda n: -sum(m.get("dur", 0) for m in kernels[n])):
        ms = kernels[name]

        def mean(k):
            vs = [m[k] for m in ms if k in m]
            return statistics.mean(vs) if vs else float("nan")

        print(f"ncu: {name:<28} {len(ms):8d} {mean('dur'):8.1f} {mean('dram'):7.1f} {mean('mem'):6.1f} "
              f"{mean('occ'):6.1f} {mean('theo'):9.1f} {mean('regs'):5.0f} {mean('block'):6.0f} {mean('grid'):5.0f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: ncu_summary.py CSV", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
