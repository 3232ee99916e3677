"""PyTorch side of `cargo xtask bench-peer`: times one model workload and prints JSON.

    python models.py --model resnet18 --mode train --size 64 --batch 32 --iters 5 [--reference DIR]

Modes, as bench_peer.rs times them in vt:
  train  forward + loss + backward + SGD step (cross entropy; for the segmentation models the
         per-pixel cross entropy with ignore index 255, `semseg_loss`)
  infer  eval forward, no grad
  neck   segmentation models only: forward + backward of the FPN / VT-FPN neck alone on random
         C2..C5 of a `size` input (strides 4..32), the loss the sum of the levels' means
Labels are synthetic: `i % classes` (per pixel for segmentation, every tenth pixel 255).

Model shape and recipe (the defaults are the full-width ImageNet models with plain SGD):
  --width W          every channel count scaled by W (vt's `with_width`: stem, stages, VT and
                     token channels, FPN and head channels; heads and groups kept)
  --stem small       3x3 stride-1 conv, no max-pool (vt's `Stem::Small`, for 28-64 px inputs)
  --in-channels C    input channels (1 for Fashion-MNIST)
  --lr, --momentum, --nesterov, --weight-decay, --label-smoothing: the optimizer and loss of a
                     recipe (bench-peer passes those of `reproduce --preset cpu`)

`--device cuda` runs on the GPU (synchronised before each time is taken).
`--reference DIR` is the folder holding vt_reference.py and vt_seg_reference.py (the executable
PyTorch references), needed for vt_resnet* and the segmentation models. Threads follow torch's
default (all cores), like vt's.
Prints {"median_ms": ..., "min_ms": ..., "peak_rss_mb": ..., "params": ...}; bench-peer checks
the parameter count equals vt's, so both sides time the same model.
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


# ResNet classifiers: block and blocks per stage (torchvision's).
RESNET = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


def scaled(c, w):
    """vt's `with_width` rounding: round(c * w), at least 1."""
    return max(1, int(round(c * w)))


def set_stem(m, a, stem_width):
    """Replace the ImageNet stem of a torchvision-style module by `a`'s (input channels, small
    stem: 3x3 stride 1 and no max-pool)."""
    k, s = (3, 1) if a.stem == "small" else (7, 2)
    m.conv1 = torch.nn.Conv2d(a.in_channels, stem_width, k, s, k // 2, bias=False)
    if a.stem == "small":
        m.maxpool = torch.nn.Identity()


class ResNet(torch.nn.Module):
    """A torchvision ResNet at any width (torchvision's BasicBlock refuses widths other than
    64), from the reference's blocks; the names are torchvision's."""

    def __init__(self, R, block, layers, widths, stem_width, classes):
        super().__init__()
        B = R.BasicBlock if block == "basic" else R.Bottleneck
        self.conv1 = torch.nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(stem_width)
        self.relu = torch.nn.ReLU()
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        cin = stem_width
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n):
                blocks.append(B(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w * B.expansion
            setattr(self, f"layer{i + 1}", torch.nn.Sequential(*blocks))
        self.fc = torch.nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def classifier(a):
    k, w = a.classes, a.width
    if a.width == 1.0 and a.stem == "imagenet" and a.in_channels == 3 and not a.model.startswith("vt_"):
        return getattr(torchvision.models, a.model)(num_classes=k)
    import vt_reference as R
    if a.model.startswith("vt_"):
        block, layers, c0, couts, project_last = R.VT_RESNET_PRESETS[a.model]
        cfgs = R.vt_stack(scaled(c0, w), [scaled(c, w) for c in couts], project_last,
                          token_channels=scaled(1024, w))
        widths = [scaled(c, w) for c in (64, 128, 256)]
        m = R.VTResNet(block, layers, cfgs, num_classes=k, widths=widths, stem_width=scaled(64, w))
    else:
        block, layers = RESNET[a.model]
        m = ResNet(R, block, layers, [scaled(c, w) for c in (64, 128, 256, 512)], scaled(64, w), k)
    set_stem(m, a, scaled(64, w))
    return m


def build(a, dev):
    """The module, a function running it on its inputs, and the loss of its output."""
    b, s, k, w = a.batch, a.size, a.classes, a.width
    if a.reference:
        sys.path.insert(0, a.reference)
    if a.model in SEG:
        import vt_seg_reference as S
        neck, layers = SEG[a.model]
        vt = dict(VT_FPN, token_channels=scaled(VT_FPN["token_channels"], w)) if neck == "vt_fpn" else None
        d = scaled(FPN_CHANNELS, w)
        if a.mode == "neck":
            chans = [scaled(c, w) for c in CHANNELS]
            m = S.FPN(chans, d) if vt is None else S.VTFPN(chans, d, **vt)
            feats = [torch.randn(b, c, s >> (i + 2), s >> (i + 2)).to(dev) for i, c in enumerate(chans)]
            return m, lambda: m(feats), lambda out: sum(p.mean() for p in out)
        head = scaled(128, w)
        m = S.SemanticFPN(k, neck=neck, layers=layers, vt=vt,
                          widths=[scaled(c, w) for c in (64, 128, 256, 512)], stem_width=scaled(64, w),
                          fpn_channels=d, head_channels=head, gn_groups=min(32, head))
        set_stem(m.backbone.body, a, scaled(64, w))
        y = labels((b, s, s), k, True, dev)
        loss = lambda out: S.semseg_loss(out, y)
    else:
        if a.mode == "neck":
            raise SystemExit(f"`neck` times a segmentation model's neck; `{a.model}` is a classifier")
        m = classifier(a)
        y = labels((b,), k, False, dev)
        loss = lambda out: F.cross_entropy(out, y, label_smoothing=a.label_smoothing)
    x = torch.randn(b, a.in_channels, s, s).to(dev)
    return m, lambda: m(x), loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", choices=["train", "infer", "neck"], required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--reference", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--stem", choices=["imagenet", "small"], default="imagenet")
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--nesterov", action="store_true")
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    m, run, loss = build(a, dev)
    m.to(dev)
    # weight decay on weights only, as vt_train::optim::param_groups (biases and norms exempt)
    decay = [p for p in m.parameters() if p.ndim > 1]
    rest = [p for p in m.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": a.weight_decay},
                           {"params": rest, "weight_decay": 0.0}],
                          lr=a.lr, momentum=a.momentum, nesterov=a.nesterov)

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

    for _ in range(2):  # warm-up, as bench_peer's WARMUP
        step()
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_ms": times[len(times) // 2], "min_ms": times[0], "peak_rss_mb": rss,
                      "params": sum(p.numel() for p in m.parameters())}))


if __name__ == "__main__":
    main()
