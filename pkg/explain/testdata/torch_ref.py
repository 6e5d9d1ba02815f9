"""PyTorch reference for pkg/explain's tests (python3-torch, torchvision).

  torch_ref.py gradcam CASES.json OUT.json

CASES.json is a list of cases {weights, image, depth, stem, classes, h, w,
layer, class}: weights a safetensors file with torchvision names (written by
ringtrain), image raw little-endian float32 (3,h,w). For each case it builds
torchvision's resnet<depth> (stem "cifar": conv1 3x3/1 and no max-pool),
loads the weights, and computes Grad-CAM of layer ("stem", "layer3",
"layer2.0", ...) for class (-1 = the predicted class) in evaluation mode:
alpha = mean of d logit / d A over (p, q), map = relu(sum_k alpha_k A_k),
upsampled with F.interpolate(mode="bilinear", align_corners=False).
OUT.json gets one result per case.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

DT = {"F32": np.float32, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        v = np.frombuffer(data[a:b], dtype=DT[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(v.copy())
    return out


def build(weights, depth, stem, classes):
    m = getattr(torchvision.models, "resnet%d" % depth)(num_classes=classes)
    if stem == "cifar":
        m.conv1 = torch.nn.Conv2d(3, m.conv1.out_channels, 3, 1, 1, bias=False)
        m.maxpool = torch.nn.Identity()
    m.load_state_dict(read_safetensors(weights))
    m.eval()
    return m


def module(m, layer):
    if layer == "stem":
        return m.maxpool
    parts = layer.split(".")
    mod = getattr(m, parts[0])
    if len(parts) > 1:
        mod = mod[int(parts[1])]
    return mod


def gradcam(args):
    with open(args[0]) as f:
        cases = json.load(f)
    torch.set_num_threads(1)
    res = [gradcam_one(**c) for c in cases]
    with open(args[1], "w") as f:
        json.dump(res, f)


def gradcam_one(weights, image, depth, stem, classes, h, w, layer, cls):
    m = build(weights, depth, stem, classes)
    x = torch.from_numpy(np.fromfile(image, dtype="<f4").reshape(1, 3, h, w).copy())
    saved = {}

    def hook(mod, inp, o):
        saved["a"] = o
        o.register_hook(lambda g: saved.__setitem__("g", g))

    module(m, layer).register_forward_hook(hook)
    logits = m(x)
    if cls < 0:
        cls = int(logits[0].argmax())
    logits[0, cls].backward()
    a, g = saved["a"].detach(), saved["g"]
    alpha = g.mean(dim=(2, 3))
    cam = F.relu((alpha[:, :, None, None] * a).sum(dim=1))
    up = F.interpolate(cam[:, None], size=(h, w), mode="bilinear", align_corners=False)
    return {
        "class": cls,
        "logits": logits[0].detach().tolist(),
        "weights": alpha[0].tolist(),
        "shape": list(cam.shape[1:]),
        "map": cam[0].flatten().tolist(),
        "upsampled": up[0, 0].flatten().tolist(),
    }


if __name__ == "__main__":
    {"gradcam": gradcam}[sys.argv[1]](sys.argv[2:])
