"""CPU training speed: our engine's epochs against a plain PyTorch DataLoader loop, LeNet-300-100 on MNIST.

Both train the same model (LeNet-300-100), batch 64, SGD 0.1 / momentum 0.9 / wd 1e-4, on the same threads. The
plain loop is what a user would write: a ``TensorDataset`` of normalised float images, ``DataLoader(shuffle=True)``,
forward, loss, backward, step. Ours is ``hypersparse train`` itself: a short ART run (warm-up, regularization with
its per-epoch scoring of the pruned copy and statistics, fine-tuning) whose metrics rows give each phase's seconds per
epoch, split into training, scoring and statistics. The time to a sparse model at the authors' full schedule follows
from those per-epoch figures and the regularization length the full-schedule sweep measured (docs/results.md).

    python bench/train_speed.py [--threads 2] [--epochs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from common import provenance, write_results

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(splits, epochs: int) -> list[float]:
    """Seconds per epoch of the loop a user writes with torch.utils.data."""
    from torch.utils.data import DataLoader, TensorDataset

    from hypersparse.models import create_model

    torch.manual_seed(0)
    mean, std = torch.tensor(splits.mean).view(1, -1, 1, 1), torch.tensor(splits.std).view(1, -1, 1, 1)
    x = (splits.train_x.float() / 255 - mean) / std
    loader = DataLoader(TensorDataset(x, splits.train_y), batch_size=64, shuffle=True)
    model = create_model("lenet300", 10, 1, 28)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def ours(data_dir: str, epochs: int) -> list[dict]:
    """The metrics rows of a short ART run through the engine."""
    from hypersparse.config import TrainConfig
    from hypersparse.engine import train
    from hypersparse.runs import read_jsonl

    cfg = TrainConfig.from_dict({"dataset": "mnist", "data_dir": data_dir, "model": "lenet300", "sparsity": 0.98,
                                 "warmup_epochs": epochs, "finetune_epochs": epochs, "lr_steps": "1000",
                                 "lambda_init": "auto", "reg_epochs_target": 2 * epochs + 1, "seed": 0})
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=False, out=open(os.devnull, "w"))
        return read_jsonl(Path(tmp) / "run" / "metrics.jsonl")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--note", default="", help="a sentence printed on the page (e.g. what else ran on the machine)")
    ap.add_argument("--reg-epochs", type=float, default=None,
                    help="regularization epochs of a full-schedule run (default: the sweep's mean at 98.5 %%)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prov = provenance(seed=0)
    from hypersparse.data import load_dataset

    splits = load_dataset("mnist", args.data_dir, 0)
    rows = ours(args.data_dir, args.epochs)
    plain = plain_loop(splits, args.epochs)
    phases = {}
    for phase in ("warmup", "regularize", "finetune"):
        got = [r for r in rows if r["phase"] == phase][1:] or [r for r in rows if r["phase"] == phase]  # 1st warms up
        phases[phase] = {k: statistics.median(r[k] for r in got) for k in ("seconds", "measure_seconds", "stats_seconds")}
    reg = args.reg_epochs if args.reg_epochs is not None else sweep_reg_epochs()
    full = 60 * phases["warmup"]["seconds"] + reg * phases["regularize"]["seconds"] + \
        160 * phases["finetune"]["seconds"]
    payload = {"provenance": prov, "threads": args.threads, "plain_epoch_seconds": statistics.median(plain[1:] or plain),
               "phases": phases, "full_schedule_reg_epochs": reg, "full_schedule_seconds": full, "note": args.note}
    write_results("train-speed-cpu", payload, page(payload))
    print(page(payload))


def sweep_reg_epochs() -> float:
    import json

    path = ROOT / "docs" / "runs" / "mnist-full.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else []
    reg = [r["epochs"]["regularize"] for r in runs if r["method"] == "art-hs" and r["sparsity"] == 0.985
           and r.get("epochs")]
    return statistics.mean(reg) if reg else 100.0


def page(p: dict) -> str:
    ph, plain = p["phases"], p["plain_epoch_seconds"]
    lines = ["# CPU training speed: LeNet-300-100 on MNIST, batch 64\n",
             f"{p['threads']} threads, 55,000 training images per epoch (5,000 held out for validation); medians "
             "over the epochs of each phase (the first epoch of each phase left out).\n",
             "| loop | seconds per epoch | of which training and validation | scoring the pruned copy | statistics | vs plain |",
             "|---|---:|---:|---:|---:|---:|",
             f"| plain PyTorch `DataLoader` loop (training only) | {plain:.2f} | {plain:.2f} | - | - | 1.00x |"]
    for phase, label in (("warmup", "hypersparse, dense warm-up"), ("regularize", "hypersparse, ART regularization"),
                         ("finetune", "hypersparse, fine-tuning (masked)")):
        r = ph[phase]
        training = r["seconds"] - r["measure_seconds"] - r["stats_seconds"]
        lines.append(f"| {label} | {r['seconds']:.2f} | {training:.2f} | {r['measure_seconds']:.2f} | "
                     f"{r['stats_seconds']:.2f} | {plain / r['seconds']:.2f}x |")
    reg = ph["regularize"]
    share = (reg["measure_seconds"] + reg["stats_seconds"]) / reg["seconds"]
    if p.get("note"):
        lines += ["", p["note"]]
    lines += ["", f"Per regularization epoch, scoring the pruned copy and the statistics cost {share:.1%} of the epoch"
              + (" (more than 5 %: see the note in docs/results.md)." if share > 0.05 else "."),
              f"\nTime to a 98 % sparse model at the authors' full schedule (60 warm-up, "
              f"{p['full_schedule_reg_epochs']:.0f} regularization — the mean the full-schedule sweep measured at "
              f"98.5 % — and 160 fine-tuning epochs), from these per-epoch figures: "
              f"**{p['full_schedule_seconds'] / 60:.1f} min** on {p['threads']} threads."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
