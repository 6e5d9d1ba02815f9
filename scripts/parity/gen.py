#!/usr/bin/env python3
"""Write PyTorch golden files for ringtrain's parity tests (pkg/nn/parity_test.go).

The ResNet family is defined below in plain torch.nn code that mirrors
torchvision's module names exactly (conv1, bn1, layer1.0.conv1,
layer1.0.downsample.0/1, fc), with two stems and a width multiplier:

  stem "imagenet": 7x7/2 conv pad 3 + BN + ReLU + 3x3/2 max-pool pad 1
  stem "cifar":    3x3/1 conv pad 1 + BN + ReLU, no pool
  width w:         stage channels round(64w), round(128w), round(256w), round(512w)
                   (at least 1); Bottleneck outputs 4x that.

Everything runs in float32 on the CPU with one thread and deterministic
algorithms, so a regeneration with the same torch build gives the same bytes.
Every case is also run in float64 from the same starting point; the float32
vs float64 discrepancy is written into the case's JSON ("torch_f32_error") as
the yardstick for the tolerances the Go side uses.

Output directory layout:
  manifest.json          {"format": 1, "torch": ..., "cases": [names]}
  <case>.json            hyper-parameters and model description
  <case>.safetensors     the tensors (written by this script: 8-byte LE header
                         length, JSON header, raw little-endian data)

Tensor names in a "model" case:
  init/<name>       parameters and buffers before anything runs (state_dict)
  input (N,3,H,W), labels (N,) I64
  logits, loss      train-mode forward of input, cross-entropy (mean,
                    label smoothing from the JSON)
  grad/<param>      d loss / d param after one backward
  after/<buffer>    BN running_mean/var/num_batches_tracked after that forward
  eval_logits       eval-mode forward of input with the "after" statistics
                    and the unchanged parameters

Tensor names in an "optim" case:
  init/<name>                as above
  batch/<s>/input, batch/<s>/labels   the fixed batches, s = 0..steps-1
  opt/<optimizer>/<name>     parameters and buffers after `steps` train steps
                             (zero_grad, forward, loss, backward, step)

Usage:
  gen.py [--out DIR]         the small committed set (default: pkg/nn/testdata/parity)
  gen.py --full --out DIR    full-width ResNet-18 (both stems) plus the small set
"""

import argparse
import copy
import json
import math
import os
import struct
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit("gen.py: cannot import torch (%s); install python3-torch (Debian: apt-get install -y "
             "python3-torch python3-torchvision) and run this script with that python3" % e)

FORMAT = 1

# ---------------------------------------------------------------- model ----


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)  # torchvision v1.5: stride on the 3x3
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


LAYERS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def channels(base, width):
    return max(1, int(math.floor(base * width + 0.5)))


class ResNet(nn.Module):
    def __init__(self, depth, stem="imagenet", width=1.0, classes=1000):
        super().__init__()
        block, counts = LAYERS[depth]
        c0 = channels(64, width)
        self.inplanes = c0
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, c0, 7, stride=2, padding=3, bias=False)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(3, c0, 3, stride=1, padding=1, bias=False)
        else:
            raise ValueError("unknown stem %r" % stem)
        self.bn1 = nn.BatchNorm2d(c0)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        self.layer1 = self._make_layer(block, channels(64, width), counts[0], 1)
        self.layer2 = self._make_layer(block, channels(128, width), counts[1], 2)
        self.layer3 = self._make_layer(block, channels(256, width), counts[2], 2)
        self.layer4 = self._make_layer(block, channels(512, width), counts[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, classes)
        # torchvision's initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, count, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, count):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def perturb_bn(model, gen):
    """Moves BN affine parameters and running statistics away from their
    trivial initial values (1, 0, 0, 1) so that every term of BN's forward
    and backward, train and eval, is exercised. num_batches_tracked starts at
    3 so that its increment is visible."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(3)


def build(spec, seed):
    torch.manual_seed(seed)
    model = ResNet(spec["depth"], spec["stem"], spec["width"], spec["classes"])
    gen = torch.Generator().manual_seed(seed + 1)
    perturb_bn(model, gen)
    return model


# ----------------------------------------------------------- safetensors ----

DTYPES = {torch.float32: ("F32", "<f4"), torch.int64: ("I64", "<i8")}


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor) in file order; float32 or int64."""
    header = {}
    blobs = []
    off = 0
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        if t.dtype not in DTYPES:
            raise TypeError("%s: unsupported dtype %s" % (name, t.dtype))
        code, npfmt = DTYPES[t.dtype]
        raw = t.numpy().astype(npfmt, copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hdr = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hdr += b" " * ((8 - len(hdr) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


# ------------------------------------------------------------ helpers ----


def rel_err(a, b):
    """max|a-b| / max(max|b|, tiny), a in float32, b the float64 reference."""
    a = a.detach().double()
    b = b.detach().double()
    if a.numel() == 0:
        return 0.0
    den = max(b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / den


def state_tensors(model, prefix, params=True, buffers=True):
    out = []
    for name, t in model.state_dict(keep_vars=False).items():
        is_buf = name.endswith("running_mean") or name.endswith("running_var") or name.endswith(
            "num_batches_tracked")
        if (is_buf and buffers) or (not is_buf and params):
            out.append((prefix + name, t.clone()))
    return out


def worst(errs, names):
    return max([errs[n] for n in names] or [0.0])


# -------------------------------------------------------------- cases ----


def model_case(name, spec, batch, size, smoothing, seed, outdir):
    model = build(spec, seed)
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(batch, 3, size, size, generator=g)
    # Distinct labels (when the batch allows) so that every row's loss term differs.
    y = torch.randperm(spec["classes"], generator=g)[:batch] if batch <= spec["classes"] else \
        torch.randint(spec["classes"], (batch,), generator=g)

    tensors = state_tensors(model, "init/")
    tensors += [("input", x), ("labels", y)]

    ref = copy.deepcopy(model).double()

    def run(m, xin):
        m.train()
        m.zero_grad(set_to_none=True)
        logits = m(xin)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in m.named_parameters()}
        after = dict(state_tensors(m, "after/", params=False))
        m.eval()
        with torch.no_grad():
            ev = m(xin)
        return logits.detach(), loss.detach().reshape(1), grads, after, ev

    lo, ls, gr, af, ev = run(model, x)
    lo64, ls64, gr64, af64, ev64 = run(ref, x.double())

    tensors += [("logits", lo), ("loss", ls)]
    tensors += [("grad/" + n, t) for n, t in gr.items()]
    tensors += list(af.items())
    tensors += [("eval_logits", ev)]

    grad_err = {n: rel_err(gr[n], gr64[n]) for n in gr}
    stat_err = {n: rel_err(af[n].float(), af64[n]) for n in af if not n.endswith("num_batches_tracked")}
    noise = {
        "logits": rel_err(lo, lo64),
        "loss": rel_err(ls, ls64),
        "grad_worst": max(grad_err.values()),
        "grad_worst_tensor": max(grad_err, key=grad_err.get),
        "running_stats_worst": max(stat_err.values()),
        "eval_logits": rel_err(ev, ev64),
    }
    meta = {
        "format": FORMAT,
        "case": name,
        "kind": "model",
        "model": spec,
        "seed": seed,
        "input_shape": [batch, 3, size, size],
        "label_smoothing": smoothing,
        "bn_momentum": 0.1,
        "bn_eps": 1e-5,
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "torch_f32_error": noise,
    }
    write_safetensors(os.path.join(outdir, name + ".safetensors"), tensors, {"case": name})
    write_json(os.path.join(outdir, name + ".json"), meta)
    return meta


OPTIMIZERS = [
    {"name": "sgd", "type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.0,
     "weight_decay": 5e-4, "nesterov": False},
    {"name": "sgd_nesterov", "type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.0,
     "weight_decay": 5e-4, "nesterov": True},
    {"name": "sgd_dampening", "type": "sgd", "lr": 0.1, "momentum": 0.9, "dampening": 0.3,
     "weight_decay": 5e-4, "nesterov": False},
    {"name": "adam", "type": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8,
     "weight_decay": 1e-4, "amsgrad": False},
    {"name": "adamw", "type": "adamw", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8,
     "weight_decay": 1e-2, "amsgrad": False},
    {"name": "adagrad", "type": "adagrad", "lr": 1e-2, "lr_decay": 1e-2, "weight_decay": 1e-4,
     "eps": 1e-10, "initial_accumulator_value": 0.0},
    {"name": "rmsprop", "type": "rmsprop", "lr": 1e-3, "alpha": 0.99, "eps": 1e-8,
     "weight_decay": 0.0, "momentum": 0.0, "centered": False},
    {"name": "rmsprop_centered", "type": "rmsprop", "lr": 1e-3, "alpha": 0.9, "eps": 1e-8,
     "weight_decay": 1e-4, "momentum": 0.9, "centered": True},
]


def make_optimizer(o, params):
    t = o["type"]
    if t == "sgd":
        return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], dampening=o["dampening"],
                               weight_decay=o["weight_decay"], nesterov=o["nesterov"], foreach=False)
    if t == "adam":
        return torch.optim.Adam(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                weight_decay=o["weight_decay"], amsgrad=o["amsgrad"], foreach=False)
    if t == "adamw":
        return torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                 weight_decay=o["weight_decay"], amsgrad=o["amsgrad"], foreach=False)
    if t == "adagrad":
        return torch.optim.Adagrad(params, lr=o["lr"], lr_decay=o["lr_decay"],
                                   weight_decay=o["weight_decay"], eps=o["eps"],
                                   initial_accumulator_value=o["initial_accumulator_value"],
                                   foreach=False)
    if t == "rmsprop":
        return torch.optim.RMSprop(params, lr=o["lr"], alpha=o["alpha"], eps=o["eps"],
                                   weight_decay=o["weight_decay"], momentum=o["momentum"],
                                   centered=o["centered"], foreach=False)
    raise ValueError("unknown optimizer type %r" % t)


def optim_case(name, spec, batch, size, smoothing, steps, optimizers, seed, outdir):
    model = build(spec, seed)
    g = torch.Generator().manual_seed(seed + 2)
    batches = []
    for _ in range(steps):
        x = torch.randn(batch, 3, size, size, generator=g)
        y = torch.randint(spec["classes"], (batch,), generator=g)
        batches.append((x, y))

    tensors = state_tensors(model, "init/")
    for s, (x, y) in enumerate(batches):
        tensors += [("batch/%d/input" % s, x), ("batch/%d/labels" % s, y)]

    def train(m, o, double):
        opt = make_optimizer(o, m.parameters())
        m.train()
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            xin = x.double() if double else x
            loss = F.cross_entropy(m(xin), y, label_smoothing=smoothing)
            loss.backward()
            opt.step()
        return dict(state_tensors(m, ""))

    noise = {}
    for o in optimizers:
        got = train(copy.deepcopy(model), o, False)
        ref = train(copy.deepcopy(model).double(), o, True)
        tensors += [("opt/%s/%s" % (o["name"], n), t) for n, t in got.items()]
        errs = {n: rel_err(got[n].float(), ref[n]) for n in got if not n.endswith("num_batches_tracked")}
        # Relative to the change from the initial value: how well the update itself is known.
        init = dict(state_tensors(model, ""))
        upd = {}
        for n in errs:
            delta = (ref[n] - init[n].double()).abs().max().item()
            if delta > 0:
                upd[n] = (got[n].double() - ref[n]).abs().max().item() / delta
        noise[o["name"]] = {
            "weights_worst": max(errs.values()),
            "update_worst": max(upd.values()) if upd else 0.0,
            "update_worst_tensor": max(upd, key=upd.get) if upd else "",
        }
    meta = {
        "format": FORMAT,
        "case": name,
        "kind": "optim",
        "model": spec,
        "seed": seed,
        "input_shape": [batch, 3, size, size],
        "label_smoothing": smoothing,
        "steps": steps,
        "optimizers": optimizers,
        "bn_momentum": 0.1,
        "bn_eps": 1e-5,
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "torch_f32_error": noise,
    }
    write_safetensors(os.path.join(outdir, name + ".safetensors"), tensors, {"case": name})
    write_json(os.path.join(outdir, name + ".json"), meta)
    return meta


def small_cases(outdir):
    """The committed set: small enough to keep in git (about 4 MB)."""
    return [
        model_case("resnet18_w8_imagenet",
                   {"depth": 18, "stem": "imagenet", "width": 0.125, "classes": 10},
                   batch=2, size=64, smoothing=0.0, seed=1, outdir=outdir),
        model_case("resnet18_w8_cifar",
                   {"depth": 18, "stem": "cifar", "width": 0.125, "classes": 10},
                   batch=2, size=32, smoothing=0.1, seed=2, outdir=outdir),
        model_case("resnet50_w16_imagenet",
                   {"depth": 50, "stem": "imagenet", "width": 0.0625, "classes": 10},
                   batch=2, size=64, smoothing=0.0, seed=3, outdir=outdir),
        optim_case("optim_resnet18_w32_cifar",
                   {"depth": 18, "stem": "cifar", "width": 0.03125, "classes": 10},
                   batch=4, size=16, smoothing=0.0, steps=5, optimizers=OPTIMIZERS, seed=4,
                   outdir=outdir),
    ]


def full_cases(outdir):
    """Full-width ResNet-18, both stems (not committed: ~100 MB each)."""
    return [
        model_case("resnet18_full_imagenet",
                   {"depth": 18, "stem": "imagenet", "width": 1.0, "classes": 1000},
                   batch=2, size=64, smoothing=0.0, seed=11, outdir=outdir),
        model_case("resnet18_full_cifar",
                   {"depth": 18, "stem": "cifar", "width": 1.0, "classes": 10},
                   batch=2, size=32, smoothing=0.1, seed=12, outdir=outdir),
    ]


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "pkg", "nn", "testdata", "parity"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=default_out, help="output directory (created if missing)")
    ap.add_argument("--full", action="store_true", help="also write full-width ResNet-18 cases")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)

    metas = []
    if args.full:
        metas += full_cases(args.out)
    metas += small_cases(args.out)
    write_json(os.path.join(args.out, "manifest.json"), {
        "format": FORMAT,
        "generator": "scripts/parity/gen.py",
        "torch": torch.__version__,
        "cases": [m["case"] for m in metas],
    })
    for m in metas:
        size = os.path.getsize(os.path.join(args.out, m["case"] + ".safetensors"))
        print("%-28s %-6s %9d params %8.1f KiB  torch f32 vs f64: %s" % (
            m["case"], m["kind"], m["params"], size / 1024.0,
            json.dumps(m["torch_f32_error"], sort_keys=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
