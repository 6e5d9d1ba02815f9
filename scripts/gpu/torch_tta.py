#!/usr/bin/env python3
"""PyTorch peer for `make gpu-tta` (scripts/gpu-tta.sh): the recipe of
examples/cifar10-fast.yaml in PyTorch, as a user would run it, timed from
process start to the end of the first evaluation at or above --target.

Same model as ringtrain's resnet18 with the cifar stem (torchvision resnet18,
conv1 3x3/1, no max-pool, 10 classes), same data (the CIFAR-10 binary batches
of --data, i.e. cifar-10-batches-bin), same augmentation (pad 4 + random crop
32 + horizontal flip, then CIFAR mean/std normalisation), same optimizer and
schedule (SGD nesterov, weight decay on every parameter, OneCycleLR with
torch's defaults and max_lr = lr, stepped every batch), label smoothing,
batch with drop_last, evaluation on the 10,000 test images after every epoch.
Mixed precision: autocast bf16 + channels_last. --compile wraps the model in
torch.compile; the compile time is inside the measured time, as the user
waits for it. A torch DataLoader with --workers processes (default: all
cores) feeds the training set.

Prints one line per epoch and a final
  RESULT impl=torch mode=eager|compile tta_s=S target=T final_acc=A epochs=E total_s=X
(tta_s=nan when the target was never reached).
"""
import argparse
import math
import os
import sys
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torchvision  # noqa: E402

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def load(d, names):
    raw = np.concatenate([np.fromfile(os.path.join(d, n), np.uint8).reshape(-1, 3073) for n in names])
    return raw[:, 1:].reshape(-1, 3, 32, 32).copy(), raw[:, 0].astype(np.int64)


class Train(torch.utils.data.Dataset):
    """Per-sample augmentation in the loader processes, as a user writes it."""

    def __init__(self, x, y, augment):
        self.x, self.y, self.augment = torch.from_numpy(x), torch.from_numpy(y), augment
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float().div_(255)
        if self.augment:
            img = nn.functional.pad(img, (4, 4, 4, 4))
            r, c = torch.randint(0, 9, (2,)).tolist()
            img = img[:, r:r + 32, c:c + 32]
            if torch.rand(()) < 0.5:
                img = img.flip(2)
        return (img - self.mean) / self.std, self.y[i]


def model():
    m = torchvision.models.resnet18(num_classes=10)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="cifar-10-batches-bin directory")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=0.4)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--target", type=float, default=0.92)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit", type=int, default=0, help="train on the first N images only (dry runs)")
    ap.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images only (dry runs)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("torch_tta: CUDA not available", file=sys.stderr)
        return 1
    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    xtr, ytr = load(a.data, [f"data_batch_{i}.bin" for i in range(1, 6)])
    xte, yte = load(a.data, ["test_batch.bin"])
    if a.limit:
        xtr, ytr = xtr[:a.limit], ytr[:a.limit]
    if a.test_limit:
        xte, yte = xte[:a.test_limit], yte[:a.test_limit]
    train = torch.utils.data.DataLoader(
        Train(xtr, ytr, True), batch_size=a.batch, shuffle=True, drop_last=True,
        num_workers=a.workers, pin_memory=a.device == "cuda", persistent_workers=a.workers > 0)
    test = Train(xte, yte, False)
    xte_t = torch.stack([test[i][0] for i in range(len(test))]).to(dev).to(memory_format=torch.channels_last)
    yte_t = torch.from_numpy(yte).to(dev)

    m = model().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=a.lr, momentum=a.momentum, nesterov=True, weight_decay=a.weight_decay)
    steps = a.epochs * len(train)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps)
    lossf = nn.CrossEntropyLoss(label_smoothing=a.label_smoothing)
    fwd = torch.compile(m) if a.compile else m
    amp = dict(device_type=dev.type, dtype=torch.bfloat16)

    tta, acc = math.nan, 0.0
    for ep in range(a.epochs):
        m.train()
        for x, y in train:
            x = x.to(dev, non_blocking=True).to(memory_format=torch.channels_last)
            y = y.to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(**amp):
                loss = lossf(fwd(x), y)
            loss.backward()
            opt.step()
            sched.step()
        m.eval()
        correct = 0
        with torch.no_grad(), torch.autocast(**amp):
            for s in range(0, len(yte_t), 1000):
                correct += (fwd(xte_t[s:s + 1000]).argmax(1) == yte_t[s:s + 1000]).sum().item()
        acc = correct / len(yte_t)
        el = time.perf_counter() - T0
        if acc >= a.target and math.isnan(tta):
            tta = el
        print(f"epoch {ep + 1} train_loss {loss.item():.4f} test_acc {acc:.4f} elapsed {el:.1f}s", flush=True)
    mode = "compile" if a.compile else "eager"
    print(f"RESULT impl=torch mode={mode} tta_s={tta:.1f} target={a.target} final_acc={acc:.4f} "
          f"epochs={a.epochs} total_s={time.perf_counter() - T0:.1f} torch={torch.__version__}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
