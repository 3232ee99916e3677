#!/usr/bin/env python3
"""Reference values for vt-data's AutoAugment / RandAugment tests (tests/augment_reference.rs).

Run with a PyTorch venv (torch 2.x, torchvision 0.2x):  /work/V/bin/python make_reference.py
Versions used for the committed files are written into `ops_reference.txt`'s first line.

It writes, next to this script:
* `image_rgb.bin` (24x32x3) and `image_gray.bin` (18x20x1): the fixed test images, HWC uint8,
  a smooth gradient plus seeded noise (numpy RandomState(0)), so every op changes them;
* `ops_reference.txt` + `ops_reference.bin`: for every op of torchvision's AutoAugment space and
  several signed magnitudes (taken from the 10-bin table, plus a few extra), the output of
  `torchvision.transforms.v2.AutoAugment()._apply_image_or_video_transform` on the uint8 CHW
  tensor (nearest interpolation, default fill) -- i.e. torchvision.transforms.v2.functional
  semantics -- stored HWC; the text file lists `image op magnitude offset length` per case;
* `policy_imagenet.txt`: the 25 ImageNet sub-policies, one op per line: `policy slot op p bin`;
* `magnitudes.txt`: `space op bin value` of the AutoAugment (10 bins) and RandAugment (31 bins)
  magnitude tables for a 24x32 (HxW) image, and whether each op is signed;
* `rrc_stats.txt`: statistics of 200,000 `v2.RandomResizedCrop.make_params` crop boxes
  (default scale and ratio) on a 300x200 (WxH) image, seeded torch.manual_seed(0): mean
  area fraction, mean log aspect ratio, share of areas below 0.5, mean relative offset
  x / (W - w) where W > w;
* `resize_input.bin` (13x17x3 HWC, numpy RandomState(1)) and `resize_reference.txt`: antialiased
  bilinear `v2.functional.resize` of it to several (H, W), one line `h w v0 v1 ...` (HWC).
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

OUT = Path(__file__).resolve().parent


def test_image(h, w, c):
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 255 / (w - 1)), (y * 255 / (h - 1)), ((x + y) * 127 / (w + h))], -1)[..., :c]
    noise = rng.randint(-40, 41, size=(h, w, c))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


images = {"rgb": test_image(24, 32, 3), "gray": test_image(18, 20, 1)}
for name, img in images.items():
    (OUT / f"image_{name}.bin").write_bytes(img.tobytes())

aa = v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=InterpolationMode.NEAREST)
ra = v2.RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31)

# --- ops
lines = [f"# torch {torch.__version__} torchvision {torchvision.__version__}"]
blob = bytearray()
for name, img in images.items():
    h, w, _ = img.shape
    chw = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    for op, (fn, signed) in aa._AUGMENTATION_SPACE.items():
        table = fn(10, h, w)
        mags = [0.0] if table is None or table.ndim == 0 else sorted({float(table[i]) for i in (1, 4, 7, 9)})
        if op == "Rotate":
            mags += [12.5, 45.0]  # a half-pixel-heavy angle and one beyond the table
        if op in ("Brightness", "Color", "Contrast", "Sharpness"):
            mags += [0.5]
        cases = [m for m in mags] + ([-m for m in mags if m != 0.0] if signed else [])
        for m in cases:
            out = aa._apply_image_or_video_transform(chw, op, m, interpolation=aa.interpolation, fill=aa._fill)
            hwc = out.permute(1, 2, 0).contiguous().numpy().tobytes()
            lines.append(f"{name} {op} {m!r} {len(blob)} {len(hwc)}")
            blob += hwc
(OUT / "ops_reference.txt").write_text("\n".join(lines) + "\n")
(OUT / "ops_reference.bin").write_bytes(bytes(blob))

# --- policy table
rows = []
for i, policy in enumerate(aa._policies):
    for j, (op, p, bin_) in enumerate(policy):
        rows.append(f"{i} {j} {op} {p!r} {bin_ if bin_ is not None else 'None'}")
(OUT / "policy_imagenet.txt").write_text("\n".join(rows) + "\n")

# --- magnitude tables
rows = []
for space, t, bins in (("autoaugment", aa, 10), ("randaugment", ra, 31)):
    for op, (fn, signed) in t._AUGMENTATION_SPACE.items():
        table = fn(bins, 24, 32)
        if table is None or table.ndim == 0:
            rows.append(f"{space} {op} none 0 {int(signed)}")
            continue
        for k in range(bins):
            rows.append(f"{space} {op} {k} {float(table[k])!r} {int(signed)}")
(OUT / "magnitudes.txt").write_text("\n".join(rows) + "\n")
# --- RandomResizedCrop statistics
torch.manual_seed(0)
rrc = v2.RandomResizedCrop(8)
W, H = 300, 200
img = torch.zeros(3, H, W, dtype=torch.uint8)
n = 200_000
area = logr = small = off = offn = 0.0
for _ in range(n):
    p = rrc.make_params([img])
    h, w, top, left = p["height"], p["width"], p["top"], p["left"]
    f = w * h / (W * H)
    area += f
    logr += float(np.log(w / h))
    small += float(f < 0.5)
    if W > w:
        off += left / (W - w)
        offn += 1
(OUT / "rrc_stats.txt").write_text(
    f"mean_area {area / n!r}\nmean_log_ratio {logr / n!r}\nshare_small {small / n!r}\nmean_rel_x {off / offn!r}\n"
)
# --- antialiased bilinear resize
src = np.random.RandomState(1).randint(0, 256, (13, 17, 3)).astype(np.uint8)
(OUT / "resize_input.bin").write_bytes(src.tobytes())
rows = []
for size in [(5, 7), (20, 30), (13, 9), (4, 17)]:
    out = v2.functional.resize(torch.from_numpy(src).permute(2, 0, 1), list(size), antialias=True)
    vals = out.permute(1, 2, 0).flatten().tolist()
    rows.append(" ".join(map(str, [*size, *vals])))
(OUT / "resize_reference.txt").write_text("\n".join(rows) + "\n")
print("wrote", len(lines) - 1, "op cases,", len(blob), "bytes", file=sys.stderr)
