"""Cost of scoring the pruned copy each ART epoch, and whether a training subset stops ART where the full set does.

For each problem and seed, two otherwise identical runs: the pruned copy scored
on a fixed subset of the training set (``--pruned-eval-size 5000``, the
default) and on the whole training set (``0``). Reports the epoch at which ART
stops in each, and the share of each regularization epoch spent measuring.

    python bench/pruned_eval.py [--seeds 0,1,2] [--mnist ../shared/data/mnist]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from hypersparse.config import TrainConfig
from hypersparse.engine import train
from hypersparse.run_read import METRICS, read_jsonl

from common import provenance, write_results

PROBLEMS = {
    "synthetic": dict(dataset="synthetic", model="mlp", sparsity=0.9, epochs_scale=0.1, lambda_init=1e-4),
    "mnist": dict(dataset="mnist", model="lenet300", sparsity=0.98, epochs_scale=0.1),
}


def one_run(problem: dict, seed: int, subset: int, root: Path) -> dict:
    cfg = TrainConfig.from_dict(dict(**problem, seed=seed, pruned_eval_size=subset, criterion="paper"))  # as published
    summary = train(cfg, root / f"{cfg.data.dataset}-{seed}-{subset}", progress=False, out=open(os.devnull, "w"))
    rows = [r for r in read_jsonl(root / f"{cfg.data.dataset}-{seed}-{subset}" / METRICS) if r["phase"] == "regularize"]
    stop = next(r["epoch"] for r in rows if r["event"] == "stop")
    return {
        "stop_epoch": stop,
        "reg_epochs": len(rows),
        "measure_share": sum(r["measure_seconds"] for r in rows) / sum(r["seconds"] for r in rows),
        "test_acc": summary["sparse"]["test_acc"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--mnist", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    prov = provenance(seed=seeds[0])  # at the start: the code that ran
    PROBLEMS["mnist"]["data_dir"] = args.mnist
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, problem in PROBLEMS.items():
            for seed in seeds:
                sub = one_run(problem, seed, 5000, Path(tmp))
                full = one_run(problem, seed, 0, Path(tmp))
                rows.append({"problem": name, "seed": seed, "subset": sub, "full": full,
                             "stop_difference": sub["stop_epoch"] - full["stop_epoch"]})
                print(rows[-1], flush=True)
    md = [
        "# Scoring the pruned copy on a training subset (5,000 images) vs the whole training set\n",
        "| problem | seed | stop epoch (subset) | stop epoch (full) | difference "
        "| measuring share of epoch (subset) | (full) | test acc (subset) | (full) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s, f = r["subset"], r["full"]
        md.append(
            f"| {r['problem']} | {r['seed']} | {s['stop_epoch']} | {f['stop_epoch']} | {r['stop_difference']:+d} | "
            f"{s['measure_share']:.1%} | {f['measure_share']:.1%} | {s['test_acc']:.2%} | {f['test_acc']:.2%} |"
        )
    worst = max(abs(r["stop_difference"]) for r in rows)
    share = statistics.median(r["subset"]["measure_share"] for r in rows)
    md.append(
        f"\nLargest stop difference: {worst} epoch(s) (target: at most 1). Median share of a regularization epoch "
        f"spent scoring the pruned copy on the subset: {share:.1%} (target: at most 15 %). Shortened schedule: "
        "`--epochs-scale 0.1` (6 warm-up and 16 fine-tuning epochs; eta**10 per epoch). synthetic: mlp, kappa 0.9, "
        "lambda_0 1e-4; MNIST: lenet300, kappa 0.98, the authors' lambda_0 5e-6."
    )
    payload = {"provenance": prov, "rows": rows, "max_stop_difference": worst,
               "median_measure_share": share}
    write_results("pruned-eval-cpu", payload, "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
