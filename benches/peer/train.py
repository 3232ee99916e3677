"""PyTorch side of `cargo xtask bench-peer --end-to-end`: the run `cargo xtask train --model M`
makes, as a PyTorch user would write it, timed as a whole.

    python train.py --data /usr/share/datasets/fashion-mnist --model resnet18 --epochs 3 \
        --train-limit 8000 --out DIR [--reference benches/peer/reference]

The recipe is vt_run::RunConfig::small_data: width 1/4, small-image stem (3x3 stride 1, no
max-pool), 28 px, pad 3 + random crop + horizontal flip, Fashion-MNIST normalisation, SGD with
Nesterov momentum 0.9 and weight decay 5e-4 on weights only, LR 0.01 -> 0.1 over one warmup
epoch then cosine to 0, label smoothing 0.1, batch 64; a test evaluation after every epoch and a
checkpoint every 200 steps and at the end. The loader is torch's DataLoader over the decoded
IDX arrays with per-sample transforms (num_workers 0: on 2 cores worker processes compete with
the step; vt's loader uses threads). A class-balanced subset of `--train-limit` images.

Prints {"wall_s": ..., "train_images": ..., "images_per_sec": ..., "top1": ...}: images/s is
epochs x train images / this script's wall time, evaluation included, from after the imports.
bench-peer times this process from outside instead, as it times vt's `train`: from process start
(interpreter and `import torch` included) to exit, and prints this timer beside it.
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    dims = [struct.unpack(">I", data[4 + 4 * i: 8 + 4 * i])[0] for i in range(magic & 0xFF)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load(folder, split):
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    def find(stem):
        for ext in ("", ".gz"):
            p = os.path.join(folder, stem + ext)
            if os.path.exists(p):
                return p
        raise SystemExit(f"{folder}: no {stem}[.gz]")
    return read_idx(find(names[0])), read_idx(find(names[1]))


def balanced(labels, limit, seed):
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per = limit // len(classes)
    idx = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    return np.sort(np.concatenate(idx))


class Images(torch.utils.data.Dataset):
    def __init__(self, x, y, train):
        self.x, self.y, self.train = torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64)), train

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i].float().div_(255).unsqueeze(0)
        if self.train:
            img = F.pad(img, (3, 3, 3, 3))
            dy, dx = torch.randint(0, 7, (2,)).tolist()
            img = img[:, dy:dy + 28, dx:dx + 28]
            if torch.rand(()) < 0.5:
                img = img.flip(-1)
        return (img - 0.2860) / 0.3530, self.y[i]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference", default=None)
    a = ap.parse_args()
    start = time.perf_counter()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import models
    torch.manual_seed(0)
    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "test")
    keep = balanced(ytr, a.train_limit, 0)
    train = torch.utils.data.DataLoader(Images(xtr[keep], ytr[keep], True), batch_size=a.batch,
                                        shuffle=True, drop_last=True)
    # the test batch is the train batch, as `train`'s default (`data.eval_batch_size` unset)
    test = torch.utils.data.DataLoader(Images(xte, yte, False), batch_size=a.batch)
    spec = argparse.Namespace(model=a.model, classes=10, width=0.25, stem="small", in_channels=1,
                              reference=a.reference)
    if a.reference:
        sys.path.insert(0, a.reference)
    m = models.classifier(spec)
    decay = [p for p in m.parameters() if p.ndim > 1]
    rest = [p for p in m.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                           {"params": rest, "weight_decay": 0.0}], lr=0.1, momentum=0.9, nesterov=True)
    steps_per_epoch = len(train)
    total = a.epochs * steps_per_epoch

    def lr_at(step):
        if step < steps_per_epoch:  # linear warmup 0.01 -> 0.1 over the first epoch
            return 0.01 + (0.1 - 0.01) * step / steps_per_epoch
        t = (step - steps_per_epoch) / max(total - steps_per_epoch, 1)
        return 0.5 * 0.1 * (1 + math.cos(math.pi * t))

    os.makedirs(a.out, exist_ok=True)
    step, top1, images = 0, 0.0, 0
    for epoch in range(a.epochs):
        m.train()
        for x, y in train:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y, label_smoothing=0.1).backward()
            opt.step()
            step += 1
            images += len(y)
            if step % 200 == 0:
                torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, os.path.join(a.out, "ckpt.pt"))
        m.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += (m(x).argmax(1) == y).sum().item()
        top1 = 100.0 * correct / len(yte)
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, os.path.join(a.out, "ckpt.pt"))
    wall = time.perf_counter() - start
    print(json.dumps({"wall_s": wall, "train_images": images, "images_per_sec": images / wall, "top1": top1}))


if __name__ == "__main__":
    main()
