"""CIFAR-10-JPEG75 on a GPU: the engine's speed against a plain DataLoader loop, and the paper's table.

Meant for one `device` call (see docs/results.md, CIFAR section). The data must be
in a folder that travels with the checkout, e.g. `.data/cifar10_jpeg75.npz`
(git-ignored). Results are on CIFAR-10-JPEG75, a lossy copy: not CIFAR-10.

    python bench/cifar_gpu.py --data-dir .data --epochs-scale 0.1 [--models resnet32,vgg19]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from hypersparse.config import TrainConfig
from hypersparse.data import load_dataset
from hypersparse.data.loader import DeviceLoader
from hypersparse.engine import train
from hypersparse.models import create_model

from common import provenance, write_results

PAPER = {  # the authors' accuracies on CIFAR-10 (not JPEG75): dense, then 90 / 98 / 99.5 %
    "resnet32": {0.0: 94.70, 0.9: 94.22, 0.98: 92.69, 0.995: 89.35},
    "vgg19": {0.0: 93.84, 0.9: 93.93, 0.98: 93.75, 0.995: 92.91},
}


def epochs_per_second(model_name, data, device, plain: bool, epochs=2) -> float:
    """Dense training throughput: our device-resident loader, or a plain DataLoader with CPU batches."""
    model = create_model(model_name).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    if plain:
        ds = torch.utils.data.TensorDataset(data.train_x, data.train_y)
        loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=4, pin_memory=True)
        mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1) * 255
        std = torch.tensor(data.std, device=device).view(1, -1, 1, 1) * 255

        def batches(_):
            for xb, yb in loader:
                xb = (xb.to(device, non_blocking=True).float() - mean) / std
                yield xb, yb.to(device, non_blocking=True)
    else:
        dl = DeviceLoader(data.train_x, data.train_y, 64, data.mean, data.std, device, True, True, 0, True)
        batches = dl.batches
    torch.cuda.synchronize()
    t = time.perf_counter()
    for e in range(epochs):
        for xb, yb in batches(e):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    torch.cuda.synchronize()
    return epochs / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=".data")
    ap.add_argument("--epochs-scale", type=float, default=0.1)
    ap.add_argument("--models", default="resnet32,vgg19")
    ap.add_argument("--sparsities", default="0.9,0.98,0.995")
    ap.add_argument("--regs", default="hs,l1")
    ap.add_argument("--runs-dir", default="/tmp/hypersparse-cifar")
    args = ap.parse_args()
    device = torch.device("cuda")
    prov = provenance(seed=0)  # at the start: the code that ran
    data = load_dataset("cifar10-jpeg75", args.data_dir, 0)
    speed = {m: {"ours_epochs_per_s": epochs_per_second(m, data, device, False),
                 "plain_dataloader_epochs_per_s": epochs_per_second(m, data, device, True)}
             for m in args.models.split(",")}
    rows = []
    for m in args.models.split(","):
        for k in [0.0] + [float(s) for s in args.sparsities.split(",")]:
            for reg in (["hs"] if k == 0 else args.regs.split(",")):
                method = {"method": "oneshot"} if k == 0 else {"method": "art", "reg": reg}
                cfg = TrainConfig.from_dict(dict(dataset="cifar10-jpeg75", data_dir=args.data_dir, model=m, sparsity=k,
                                                 epochs_scale=args.epochs_scale, device="cuda", **method))
                t = time.perf_counter()
                s = train(cfg, Path(args.runs_dir) / f"{m}-{k}-{reg}", progress=False, out=open(os.devnull, "w"))
                rows.append({"model": m, "sparsity": k, "reg": reg if k else "dense", "val_acc": s["sparse"]["val_acc"],
                             "test_acc": s["sparse"]["test_acc"], "epochs": s["epochs"],
                             "wall_seconds": time.perf_counter() - t, "paper": PAPER[m].get(k)})
                print(json.dumps(rows[-1]), flush=True)
    md = ["# CIFAR-10-JPEG75 on a GPU (a lossy JPEG copy of CIFAR-10: compare gaps, not absolute figures)\n",
          "| model | sparsity | reg | test acc (JPEG75) | gap to our dense | paper | paper gap | wall s |",
          "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        dense = next(d for d in rows if d["model"] == r["model"] and d["sparsity"] == 0)
        paper_dense = PAPER[r["model"]][0.0]
        md.append(f"| {r['model']} | {r['sparsity']} | {r['reg']} | {100 * r['test_acc']:.2f} | "
                  f"{100 * (dense['test_acc'] - r['test_acc']):.2f} | {r['paper']} | "
                  f"{paper_dense - r['paper']:.2f} | {r['wall_seconds']:.0f} |")
    md.append("\n| model | epochs/s, ours (data on GPU) | epochs/s, plain DataLoader |\n|---|---:|---:|")
    for m, v in speed.items():
        md.append(f"| {m} | {v['ours_epochs_per_s']:.2f} | {v['plain_dataloader_epochs_per_s']:.2f} |")
    write_results("cifar-gpu", {"provenance": prov, "rows": rows, "speed": speed}, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
