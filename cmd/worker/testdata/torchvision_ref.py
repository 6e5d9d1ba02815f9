"""Reference for cmd/worker's torchvision-weights test (python3-torch).

  torchvision_ref.py OUT.pth INPUT.f32 H W OUT.json

Builds torchvision's resnet18(num_classes=10) from a fixed seed, gives its
batch norms non-trivial running statistics, saves the state_dict as OUT.pth
(what a user downloads), and writes the logits of the evaluation-mode model
on INPUT.f32 (raw little-endian float32, 3 x H x W) to OUT.json.
"""
import json
import sys

import numpy as np
import torch
import torchvision


def main(pth, inp, h, w, out):
    torch.manual_seed(7)
    m = torchvision.models.resnet18(num_classes=10)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.num_batches_tracked.fill_(100)
    torch.save(m.state_dict(), pth)
    m.eval()
    x = torch.from_numpy(np.fromfile(inp, dtype="<f4").reshape(1, 3, int(h), int(w)).copy())
    with torch.no_grad():
        y = m(x)[0]
    with open(out, "w") as f:
        json.dump({"logits": y.tolist()}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
