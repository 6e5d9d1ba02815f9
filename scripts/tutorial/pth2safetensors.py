"""Convert a PyTorch state_dict (.pth/.pt, e.g. torchvision's ResNet-18
weights) into a safetensors file ringtrain reads (--weights).

  python3 scripts/tutorial/pth2safetensors.py resnet18-f37072fd.pth resnet18.safetensors

Needs only Debian's python3-torch (no safetensors package): float tensors
are written as F32, integer ones (num_batches_tracked) as I64, in the
state_dict's order, with torchvision's names unchanged. A checkpoint that
wraps the state_dict ({"state_dict": ...} or {"model": ...}) is unwrapped.
"""
import json
import struct
import sys

import torch


def main(src, dst):
    sd = torch.load(src, map_location="cpu")
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    header, blobs, off = {}, [], 0
    for name, t in sd.items():
        if not torch.is_tensor(t):
            continue
        name = name[len("module."):] if name.startswith("module.") else name
        t = t.detach().contiguous()
        if t.is_floating_point():
            t, code = t.to(torch.float32), "F32"
        else:
            t, code = t.to(torch.int64), "I64"
        raw = t.numpy().tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hdr = json.dumps(header, separators=(",", ":")).encode()
    hdr += b" " * ((8 - len(hdr) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)
    print("%s: %d tensors, %.1f MB -> %s" % (src, len(header), off / 1e6, dst))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: pth2safetensors.py IN.pth OUT.safetensors")
    main(sys.argv[1], sys.argv[2])
