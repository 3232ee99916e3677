#!/usr/bin/env python3
"""Builds the embedded Fashion-MNIST subset from the full set (Debian `dataset-fashion-mnist`).

Class-balanced and deterministic: the first 600 training images of each class (6,000) and the
first 100 test images of each class (1,000), in their original file order, written as gzip IDX
files with the standard names. Run: python3 make_subset.py [SOURCE_DIR]
"""
import gzip
import struct
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
OUT = Path(__file__).resolve().parent
PER_CLASS = {"train": 600, "t10k": 100}


def read_idx(path):
    data = gzip.open(path, "rb").read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return dims, data[4 + 4 * ndim :]


def write_idx(path, type_code, dims, payload):
    header = bytes([0, 0, type_code, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
    # mtime=0 keeps the files byte-identical across runs
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(header + payload)


for split, per_class in PER_CLASS.items():
    (n, h, w), pixels = read_idx(SRC / f"{split}-images-idx3-ubyte.gz")
    (nl,), labels = read_idx(SRC / f"{split}-labels-idx1-ubyte.gz")
    assert n == nl
    taken, count = [], [0] * 10
    for i in range(n):
        c = labels[i]
        if count[c] < per_class:
            count[c] += 1
            taken.append(i)
    size = h * w
    images = b"".join(pixels[i * size : (i + 1) * size] for i in taken)
    write_idx(OUT / f"{split}-images-idx3-ubyte.gz", 0x08, (len(taken), h, w), images)
    write_idx(OUT / f"{split}-labels-idx1-ubyte.gz", 0x08, (len(taken),), bytes(labels[i] for i in taken))
    print(split, len(taken), count)
