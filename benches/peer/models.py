"""PyTorch side of `cargo xtask bench-peer`: times one model workload and prints JSON.

    python models.py --model resnet18 --mode train --size 64 --batch 32 --iters 5 [--reference DIR]

Modes, as bench_peer.rs times them in vt:
  train  forward + loss + backward + SGD step (cross entropy; for the segmentation models the
         per-pixel cross entropy with ignore index 255, `semseg_loss`)
  infer  eval forward, no grad
  neck   segmentation models only: forward + backward of the FPN / VT-FPN neck alone on random
         C2..C5 of a `size` input (strides 4..32), the loss the sum of the levels' means
Labels are synthetic: `i % classes` (per pixel for segmentation, every tenth pixel 255).

`--device cuda` runs on the GPU (synchronised before each time is taken).
`--reference DIR` is the folder holding vt_reference.py and vt_seg_reference.py (the executable
PyTorch references), needed for vt_resnet* and the segmentation models. Threads follow torch's
default (all cores), like vt's.
Prints {"median_ms": ..., "min_ms": ..., "peak_rss_mb": ...}.
"""
import argparse
import json
import resource
import sys
import time

import torch
import torch.nn.functional as F
import torchvision

# The segmentation presets (vt_backbones::PRESETS): neck and trunk depth.
SEG = {
    "fpn_resnet50": ("fpn", (3, 4, 6, 3)),
    "vt_fpn_resnet50": ("vt_fpn", (3, 4, 6, 3)),
    "fpn_resnet101": ("fpn", (3, 4, 23, 3)),
    "vt_fpn_resnet101": ("vt_fpn", (3, 4, 23, 3)),
}
# The paper's VT-FPN (VtFpnConfig::paper in vt).
VT_FPN = dict(num_tokens=8, token_channels=1024, heads=16, tokenizer_groups=16,
              transformer_groups=4, projector_groups=16, pos_encoding=True)
# C2..C5 of a bottleneck ResNet, and the neck's width.
CHANNELS = (256, 512, 1024, 2048)
FPN_CHANNELS = 256


def labels(shape, classes, ignore, dev):
    i = torch.arange(torch.Size(shape).numel())
    y = i % classes
    if ignore:
        y[i % 10 == 9] = 255
    return y.reshape(shape).to(dev)


def build(a, dev):
    """The module, a function running it on its inputs, and the loss of its output."""
    b, s, k = a.batch, a.size, a.classes
    if a.reference:
        sys.path.insert(0, a.reference)
    if a.model in SEG:
        import vt_seg_reference as S
        neck, layers = SEG[a.model]
        vt = VT_FPN if neck == "vt_fpn" else None
        if a.mode == "neck":
            m = S.FPN(CHANNELS, FPN_CHANNELS) if vt is None else S.VTFPN(CHANNELS, FPN_CHANNELS, **vt)
            feats = [torch.randn(b, c, s >> (i + 2), s >> (i + 2)).to(dev) for i, c in enumerate(CHANNELS)]
            return m, lambda: m(feats), lambda out: sum(p.mean() for p in out)
        m = S.SemanticFPN(k, neck=neck, layers=layers, vt=vt)
        y = labels((b, s, s), k, True, dev)
        loss = lambda out: S.semseg_loss(out, y)
    else:
        if a.mode == "neck":
            raise SystemExit(f"`neck` times a segmentation model's neck; `{a.model}` is a classifier")
        if a.model.startswith("vt_"):
            import vt_reference as R
            m = R.vt_resnet(a.model, num_classes=k)
        else:
            m = getattr(torchvision.models, a.model)(num_classes=k)
        y = labels((b,), k, False, dev)
        loss = lambda out: F.cross_entropy(out, y)
    x = torch.randn(b, 3, s, s).to(dev)
    return m, lambda: m(x), loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", choices=["train", "infer", "neck"], required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--reference", default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    m, run, loss = build(a, dev)
    m.to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    def step():
        if a.mode == "infer":
            m.eval()
            with torch.no_grad():
                run()
        else:
            m.train()
            opt.zero_grad(set_to_none=True)
            loss(run()).backward()
            if a.mode == "train":
                opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "peak_rss_mb": rss}))


if __name__ == "__main__":
    main()
