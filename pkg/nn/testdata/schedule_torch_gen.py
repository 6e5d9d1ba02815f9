#!/usr/bin/env python3
"""Write pkg/nn/testdata/schedule_torch.json: the learning rates (and
OneCycle momenta) torch.optim.lr_scheduler produces step by step, for
schedule_test.go. torch's default, chainable scheduler.step() path.

Usage: python3 schedule_torch_gen.py [OUT]   (needs python3-torch)
"""
import json
import sys
import warnings

import torch

warnings.filterwarnings("ignore")
STEPS = 120


def run(make, base=0.1, steps=STEPS, opt="sgd"):
    p = torch.nn.Parameter(torch.zeros(1))
    if opt == "sgd":
        o = torch.optim.SGD([p], lr=base, momentum=0.9)
    else:
        o = torch.optim.Adam([p], lr=base)
    s = make(o)
    lrs, moms = [], []
    for _ in range(steps):
        g = o.param_groups[0]
        lrs.append(g["lr"])
        moms.append(g["momentum"] if opt == "sgd" else g["betas"][0])
        o.step()
        s.step()
    return lrs, moms


S = torch.optim.lr_scheduler
cases = []


def add(name, args, make, **kw):
    lrs, moms = run(make, **kw)
    cases.append({"name": name, "args": args, "lr": lrs, "momentum": moms})


add("step", {"base": 0.1, "step_size": 30, "gamma": 0.1}, lambda o: S.StepLR(o, 30, 0.1))
add("step7", {"base": 0.05, "step_size": 7, "gamma": 0.5}, lambda o: S.StepLR(o, 7, 0.5), base=0.05)
add("multistep", {"base": 0.1, "milestones": [30, 80, 80, 100], "gamma": 0.1},
    lambda o: S.MultiStepLR(o, [30, 80, 80, 100], 0.1))
add("cosine", {"base": 0.1, "t_max": 50, "eta_min": 0.001}, lambda o: S.CosineAnnealingLR(o, 50, 0.001))
add("cosine0", {"base": 0.2, "t_max": 100, "eta_min": 0.0}, lambda o: S.CosineAnnealingLR(o, 100, 0.0), base=0.2)
add("linear", {"base": 0.05, "start_factor": 0.5, "end_factor": 1.0, "total_iters": 4},
    lambda o: S.LinearLR(o, 0.5, 1.0, 4), base=0.05)
add("linear_down", {"base": 0.1, "start_factor": 1.0, "end_factor": 0.1, "total_iters": 90},
    lambda o: S.LinearLR(o, 1.0, 0.1, 90))
add("onecycle", {"max_lr": 0.1, "total_steps": STEPS}, lambda o: S.OneCycleLR(o, 0.1, total_steps=STEPS))
add("onecycle_adam", {"max_lr": 0.01, "total_steps": STEPS, "opt": "adam"},
    lambda o: S.OneCycleLR(o, 0.01, total_steps=STEPS), base=0.01, opt="adam")
add("onecycle_linear_3phase", {"max_lr": 0.4, "total_steps": STEPS, "pct_start": 0.25, "linear": True,
                               "three_phase": True, "div_factor": 10.0, "final_div_factor": 100.0},
    lambda o: S.OneCycleLR(o, 0.4, total_steps=STEPS, pct_start=0.25, anneal_strategy="linear",
                           three_phase=True, div_factor=10.0, final_div_factor=100.0))
add("warmup_cosine", {"base": 0.1, "warmup": 5, "start_factor": 0.1, "t_max": 100, "eta_min": 0.0},
    lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, 1.0, 5), S.CosineAnnealingLR(o, 100, 0.0)], milestones=[5]))

out = sys.argv[1] if len(sys.argv) > 1 else "schedule_torch.json"
with open(out, "w") as f:
    json.dump({"torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
    f.write("\n")
