#!/usr/bin/env python3
"""torchvision's DataLoader(num_workers=2) on the inputs of benches/benches/data_loader.rs.

Run the Rust bench first (it writes the JPEG folder into target/bench-data/), then:
    /work/V/bin/python benches/peer/data_loader.py [--rust-fmnist IMG_PER_S --rust-jpeg IMG_PER_S]
Prints images/s for (a) Fashion-MNIST 28x28 pad+crop+flip, batch 256, and (b) the JPEG folder
with RandomResizedCrop(224)+flip+AutoAugment(IMAGENET), batch 32; with the Rust figures given,
prints the ratio Rust / torchvision. Same transforms as the Rust bench (torchvision v1 on PIL
images, the usual recipe), persistent workers, best of 3 timed epochs after one warm-up epoch.
"""
import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms as T

ROOT = Path(__file__).resolve().parents[2]


class Idx(Dataset):
    def __init__(self, d, tf):
        raw = gzip.open(d / "train-images-idx3-ubyte.gz").read()
        self.x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
        self.y = np.frombuffer(gzip.open(d / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
        self.tf = tf

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.tf(Image.fromarray(self.x[i], mode="L")), int(self.y[i])


def rate(ds, batch):
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=2, persistent_workers=True)
    for _ in dl:  # warm-up epoch (worker start-up)
        pass
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        n = sum(len(y) for _, y in dl)
        best = max(best, n / (time.perf_counter() - t))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rust-fmnist", type=float)
    ap.add_argument("--rust-jpeg", type=float)
    a = ap.parse_args()
    fm = Idx(
        ROOT / "datasets/fashion-mnist-subset",
        T.Compose([T.RandomCrop(28, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.286], [0.353])]),
    )
    folder = ROOT / "target/bench-data/jpeg-folder-500x375/train"
    if not folder.is_dir():
        raise SystemExit(f"{folder} missing: run `cargo bench -p vt-benches --bench data_loader` first")
    jp = datasets.ImageFolder(
        folder,
        T.Compose([
            T.RandomResizedCrop(224),
            T.RandomHorizontalFlip(),
            T.AutoAugment(T.AutoAugmentPolicy.IMAGENET),
            T.ToTensor(),
            T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]),
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, ds, batch, rust in (("fashion_mnist_28x28", fm, 256, a.rust_fmnist), ("jpeg_folder_224x224", jp, 32, a.rust_jpeg)):
        r = rate(ds, batch)
        line = f"{name}: torchvision {r:,.0f} images/s ({len(ds)} images, batch {batch}, 2 workers)"
        if rust:
            line += f"; vt {rust:,.0f} images/s; ratio vt/torchvision {rust / r:.2f}"
        print(line)


if __name__ == "__main__":
    main()
