"""PyTorch side of `cargo xtask bench-peer`: times one model workload and prints JSON.

    python models.py --model resnet18 --mode train --size 64 --batch 32 --iters 5 [--reference DIR]

`--device cuda` runs on the GPU (synchronised before each time is taken).
`--reference DIR` is the folder holding vt_reference.py (the executable PyTorch VT reference),
needed for vt_resnet18. Threads follow torch's default (all cores), like vt's.
Prints {"median_ms": ..., "min_ms": ..., "peak_rss_mb": ...}.
"""
import argparse
import json
import resource
import sys
import time

import torch
import torchvision


def build(name, reference):
    if name.startswith("vt_"):
        if reference:
            sys.path.insert(0, reference)
        import vt_reference as R
        return R.vt_resnet(name, num_classes=10)
    return getattr(torchvision.models, name)(num_classes=10)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--mode", choices=["train", "infer"], required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--reference", default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    m = build(a.model, a.reference).to(dev)
    x = torch.randn(a.batch, 3, a.size, a.size).to(dev)
    y = torch.randint(0, 10, (a.batch,)).to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    def step():
        if a.mode == "train":
            m.train()
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
        else:
            m.eval()
            with torch.no_grad():
                m(x)
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
