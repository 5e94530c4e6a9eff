"""A short check of learning rates on validation, before a sweep picks one (issue 35 asked for "lr 0.03, or better
if a short check on validation shows it"): a dense model of one of bench/beyond_mnist.py's experiments, seed 0, a
few epochs at a constant rate each, scored on the validation split after every epoch. No test data is read to choose.

The results go to docs/runs/lr-check/ (one JSON per rate, with the epoch trace); bench/beyond_mnist.py's page quotes
them beside the rate its sweep used. Resumable like every sweep here (bench/sweep.py).

    python bench/lr_check.py --experiments lenet5-mnist --rates 0.003,0.01,0.02 --epochs 6
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from beyond_setup import EXPERIMENTS  # noqa: E402
from sweep import load_results, published, run_sweep  # noqa: E402

FOLDER = ROOT / "docs" / "runs" / "lr-check"


def name(exp: str, lr: float, epochs: int) -> str:
    return f"{exp}-dense-{epochs}ep-lr{lr:g}"


def plan_for(experiments: list[str], rates: list[float], epochs: int):
    """One dense run per experiment and rate: ``epochs`` warm-up epochs at that rate, no pruning, no fine-tuning."""
    def plan(results: dict):
        for exp in experiments:
            for lr in rates:
                config = dict(EXPERIMENTS[exp]["config"], method="oneshot", sparsity=0.0, seed=0, lr=lr,
                              warmup_epochs=epochs, prune_epochs=0, finetune_epochs=0)
                yield {"name": name(exp, lr, epochs), "config": config, "diagnose": True,
                       "meta": {"experiment": exp, "lr": lr}}
    return plan


def checked(folder: Path = FOLDER) -> list[dict]:
    """The finished checks under docs/runs/lr-check/."""
    return list(published(folder).values())


def summary(exp: str, runs: list[dict]) -> str | None:
    """'dense, seed 0, 6 epochs at a constant rate, validation accuracy after the last: lr 0.003 98.1 %, ...', or
    None where the experiment has no check on record."""
    mine = sorted((r for r in runs if r["experiment"] == exp), key=lambda r: r["lr"])
    if not mine:
        return None
    epochs = sorted({r["config"]["warmup_epochs"] for r in mine})
    rates = ", ".join(f"{r['lr']:g} " + (f"{100 * r['trace'][-1]['val_acc']:.2f} %"
                                         if r.get("trace") and r["test_error"] is not None else "diverged")
                      for r in mine)
    return (f"a short check on validation (bench/lr_check.py: dense, seed 0, {'/'.join(map(str, epochs))} epochs at a "
            f"constant rate, validation accuracy after the last; runs/lr-check/): lr {rates}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", default="lenet5-mnist")
    ap.add_argument("--rates", default="0.003,0.01,0.02")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default=str(ROOT / "bench" / "store" / "lr-check"))
    args = ap.parse_args()
    experiments = [e for e in args.experiments.split(",") if e]
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        ap.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    store = Path(args.store)
    run_sweep(plan_for(experiments, [float(x) for x in args.rates.split(",")], args.epochs), store, args.workers)
    FOLDER.mkdir(parents=True, exist_ok=True)
    for run, result in load_results(store).items():
        (FOLDER / f"{run}.json").write_text(json.dumps(result, indent=2) + "\n")
    for exp in experiments:
        print(f"{exp}: {summary(exp, checked())}")


if __name__ == "__main__":
    main()
