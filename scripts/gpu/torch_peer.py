#!/usr/bin/env python3
"""PyTorch peer for scripts/gpu-check.sh: ResNet-18 training images/s on the
same GPU as ringtrain's CUDA backend, the same model (torchvision resnet18,
10 classes; stem "imagenet" as torchvision builds it, stem "cifar" with a
3x3/1 conv1 and no max-pool, as pkg/nn), the same optimizer (SGD lr 0.1,
momentum 0.9, weight decay 5e-4) and random 3x32x32 inputs.

Modes: "fp32" = eager float32 (TF32 off, as ringtrain's fp32), "amp" = eager
autocast bf16 + channels_last, "amp-compile" = the same step under
torch.compile (compile time reported as compile_s, not in img_s: the timed
steps start after the warm-up, as for ringtrain), "amp-cudagraphs" = the same
under torch.compile(mode="reduce-overhead"), which also replays the step as
CUDA graphs (torch's lowest per-step host cost). Prints one RESULT line per
configuration; img_s is the mean over the timed steps of that one run.
"""
import argparse
import sys
import time

import torch
import torch.nn as nn
import torchvision

GFLOP = {"cifar": 3.33, "imagenet": 0.22}


def model(stem):
    m = torchvision.models.resnet18(num_classes=10)
    if stem == "cifar":
        m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        m.maxpool = nn.Identity()
    return m


def bench(stem, batch, mode, warmup, steps):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    m = model(stem).to(dev)
    fmt = torch.channels_last if mode.startswith("amp") else torch.contiguous_format
    m = m.to(memory_format=fmt)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(dev).to(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), generator=g).to(dev)
    lossf = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        if mode.startswith("amp"):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = lossf(m(x), y)
        else:
            loss = lossf(m(x), y)
        loss.backward()
        opt.step()
        return loss

    if mode in ("amp-compile", "amp-cudagraphs"):
        if not hasattr(torch, "compile"):
            raise RuntimeError(f"torch {torch.__version__} has no torch.compile")
        step = torch.compile(step, mode="reduce-overhead" if mode == "amp-cudagraphs" else "default")
    tc = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - tc
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    el = time.perf_counter() - t0
    ips = batch * steps / el
    print(f"RESULT impl=torch backend=cuda precision={mode} stem={stem} batch={batch} img_s={ips:.1f} "
          f"ms_step={1000 * el / steps:.2f} tflops={ips * GFLOP[stem] / 1000:.2f} loss_last={loss.item():.4f} "
          f"warmup={warmup} steps={steps} compile_s={compile_s:.1f}",
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stems", default="cifar,imagenet")
    ap.add_argument("--batches", default="256,512")
    ap.add_argument("--modes", default="fp32,amp")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_peer: CUDA not available", file=sys.stderr)
        return 1
    print(f"# torch {torch.__version__} cuda {torch.version.cuda} cudnn {torch.backends.cudnn.version()} "
          f"device {torch.cuda.get_device_name()}", flush=True)
    for stem in a.stems.split(","):
        for batch in map(int, a.batches.split(",")):
            for mode in a.modes.split(","):
                try:
                    bench(stem, batch, mode, a.warmup, a.steps)
                except Exception as e:  # report and go on with the next configuration
                    print(f"# torch {stem} {batch} {mode} failed: {e}", flush=True)
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
