#!/usr/bin/env python3
"""Write pkg/nn/testdata/optim_torch.safetensors: torch.optim updates on
fixed tensors, for optim_torch_test.go to compare bit for bit.

The optimizers alone are tested here (no model): two parameters, of 37
elements (AVX2 kernels process 16 at a time, so 5 go through the scalar
tail) and 64 elements, fixed random gradients for each of STEPS steps, and
each configuration's parameters and state afterwards. Single-tensor path
(foreach=False), float32, one thread.

Tensor names:
  init/<p>                 starting values          (p in "a", "b")
  grad/<s>/<p>             gradient of step s = 0..STEPS-1
  out/<case>/<p>           value after STEPS steps
  out/<case>/<p>.<state>   torch's state tensors after STEPS steps
Metadata: "cases" = JSON list of {"name", "type", hyper-parameters},
"torch" = torch.__version__, "steps".

Usage: python3 optim_torch_gen.py [OUT]   (needs python3-torch)
"""
import json
import struct
import sys

import torch

STEPS = 5
SHAPES = {"a": (37,), "b": (8, 8)}

CASES = []
for mom in (0.0, 0.9):
    for damp in (0.0, 0.3):
        for nesterov in (False, True):
            for wd in (0.0, 1e-2):
                if nesterov and (mom == 0 or damp != 0):
                    continue
                CASES.append(dict(type="sgd", lr=0.05, momentum=mom, dampening=damp, nesterov=nesterov, weight_decay=wd))
for t in ("adam", "adamw"):
    for ams in (False, True):
        for wd in (0.0, 0.05):
            CASES.append(dict(type=t, lr=1e-3 if wd == 0 else 3e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=wd, amsgrad=ams))
for lr_decay in (0.0, 0.05):
    for wd in (0.0, 0.02):
        for acc in (0.0, 0.1):
            CASES.append(dict(type="adagrad", lr=0.01, lr_decay=lr_decay, weight_decay=wd, initial_accumulator_value=acc, eps=1e-10))
for centered in (False, True):
    for mom in (0.0, 0.9):
        for wd in (0.0, 0.02):
            CASES.append(dict(type="rmsprop", lr=0.01, alpha=0.99, eps=1e-8, weight_decay=wd, momentum=mom, centered=centered))
for i, c in enumerate(CASES):
    c["name"] = "%s_%d" % (c["type"], i)


def make(c, params):
    t = c["type"]
    if t == "sgd":
        return torch.optim.SGD(params, lr=c["lr"], momentum=c["momentum"], dampening=c["dampening"],
                               nesterov=c["nesterov"], weight_decay=c["weight_decay"], foreach=False)
    if t in ("adam", "adamw"):
        cls = torch.optim.Adam if t == "adam" else torch.optim.AdamW
        return cls(params, lr=c["lr"], betas=tuple(c["betas"]), eps=c["eps"], weight_decay=c["weight_decay"],
                   amsgrad=c["amsgrad"], foreach=False)
    if t == "adagrad":
        return torch.optim.Adagrad(params, lr=c["lr"], lr_decay=c["lr_decay"], weight_decay=c["weight_decay"],
                                   initial_accumulator_value=c["initial_accumulator_value"], eps=c["eps"],
                                   foreach=False)
    return torch.optim.RMSprop(params, lr=c["lr"], alpha=c["alpha"], eps=c["eps"], weight_decay=c["weight_decay"],
                               momentum=c["momentum"], centered=c["centered"], foreach=False)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "optim_torch.safetensors"
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1234)
    tensors = {}
    init = {p: torch.randn(s, generator=g) for p, s in SHAPES.items()}
    for p, v in init.items():
        tensors["init/" + p] = v
    grads = []
    for s in range(STEPS):
        gs = {p: torch.randn(sh, generator=g) * (0.5 + s) for p, sh in SHAPES.items()}
        grads.append(gs)
        for p, v in gs.items():
            tensors["grad/%d/%s" % (s, p)] = v
    for c in CASES:
        params = {p: v.clone().requires_grad_(True) for p, v in init.items()}
        opt = make(c, list(params.values()))
        for s in range(STEPS):
            for p, v in params.items():
                v.grad = grads[s][p].clone()
            opt.step()
        for p, v in params.items():
            tensors["out/%s/%s" % (c["name"], p)] = v.detach()
            for k, sv in opt.state[v].items():
                if torch.is_tensor(sv) and sv.dim() > 0:
                    tensors["out/%s/%s.%s" % (c["name"], p, k)] = sv
    write(out, tensors, {"cases": json.dumps(CASES), "torch": torch.__version__, "steps": str(STEPS)})


def write(path, tensors, meta):
    header = {"__metadata__": meta}
    blobs, off = [], 0
    for name in sorted(tensors):
        b = tensors[name].contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


if __name__ == "__main__":
    main()
