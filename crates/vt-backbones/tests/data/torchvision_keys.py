"""Writes torchvision_keys.json: state_dict keys and shapes of torchvision's ResNet-18/34/50/101
(1000 classes), which vt's parameter names must equal. Run with a Python that has torchvision:
    python torchvision_keys.py
"""
import json
import os

import torchvision

out = {}
for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    m = getattr(torchvision.models, name)()
    out[name] = {k: list(v.shape) for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchvision_keys.json")
with open(path, "w") as f:
    json.dump(out, f, indent=0, sort_keys=True)
print("wrote", path)
