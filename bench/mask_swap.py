"""Mask or starting weights: which one carries GMP's lead over ART + HyperSparse on the CIFAR-10-JPEG75 MLP?

bench/beyond_mnist.py finds ART + HyperSparse behind GMP on LeNet-300-100's MLP on CIFAR-10-JPEG75 (a lossy JPEG-75
copy of CIFAR-10), and no default of ours closes the gap. When fine-tuning starts, the two differ in two things: the
mask (which weights are kept) and the kept weights' values. This bench separates them. Per sparsity and seed, at
the sweep's quarter schedule and settings (bench/beyond_setup.py):

* ``art-stop``: ART + HyperSparse with the defaults, up to its stop (no fine-tuning): its pruned copy at the stop,
  the network its fine-tuning starts from; ``auto-stop`` the same with λ_0 auto;
* ``gmp-stop``: GMP at that ART run's budget, up to the end of its pruning epochs;
* ``warmup``: the dense warm-up alone (15 epochs, once per seed): the weights both methods start from;
* five fine-tunings of 40 epochs (LR ×0.1 after 20 and 30) under a fixed mask, from ``art-own`` (ART's own start),
  ``gmp-own`` (GMP's own start), and the warm-up's weights under ART's, GMP's and λ_0 auto's masks
  (``warmup-art-mask``, ``warmup-gmp-mask``, ``warmup-auto-mask``).

From equal weights, the masks alone differ: (warmup-gmp-mask) - (warmup-art-mask) is the mask's effect; each own
start against the warm-up under the same mask is the starting weights' effect. Everything is read on validation.
The store resumes after a stop (bench/sweep.py); finished results are copied into docs/runs/mask-swap/ as they come.
A fine-tuning needs its inputs' model files, so the store (bench/store/mask-swap/) must be kept until the sweep ends.

    python bench/mask_swap.py                  # CIFAR-10-JPEG75 MLP, 98 % and 99.5 %, seeds 0-2 (2 workers)
    python bench/mask_swap.py --publish-only   # the page section from docs/runs/mask-swap/ alone
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from beyond_setup import EXPERIMENTS, SCHEDULE, VARIANTS, reg_epochs  # noqa: E402
from common import mean_std, provenance  # noqa: E402
from sweep import load_results, run_sweep  # noqa: E402

DOCS = ROOT / "docs"
FOLDER = DOCS / "runs" / "mask-swap"
EXPERIMENT = "mlp-cifar10jpeg75"
#: the fine-tunings: where each starts, as (run whose weights, run whose mask)
ARMS = {"art-own": ("art-stop", "art-stop"), "gmp-own": ("gmp-stop", "gmp-stop"),
        "warmup-art-mask": ("warmup", "art-stop"), "warmup-gmp-mask": ("warmup", "gmp-stop"),
        "warmup-auto-mask": ("warmup", "auto-stop")}
STOPS = {"art-stop": VARIANTS["art-hs"], "auto-stop": VARIANTS["art-hs-auto"]}


def name(exp: str, sparsity: float, arm: str, seed: int) -> str:
    return f"{exp}-{sparsity:g}-{arm}-s{seed}" if arm != "warmup" else f"{exp}-warmup-s{seed}"


def budget(epochs: int) -> int:
    """``prune_epochs`` for ``epochs`` epochs between warm-up and fine-tuning (the engine scales every phase)."""
    return round(epochs / SCHEDULE["epochs_scale"])


def plan_for(sparsities: list[float], seeds: list[int], store: Path, exp: str = EXPERIMENT):
    """Seed by seed: the warm-up, ART's stops, GMP at ART's budget, then each fine-tuning once its inputs' model files
    are in the store (equal-weight arms first)."""
    base = dict(EXPERIMENTS[exp]["config"], **SCHEDULE)

    def model(results: dict, run: str) -> Path | None:
        path = store / "runs" / run / "model.pt"
        return path if run in results and results[run]["test_error"] is not None and path.exists() else None

    def job(k: float, arm: str, seed: int, **config) -> dict:
        return {"name": name(exp, k, arm, seed), "config": dict(base, seed=seed, **config), "diagnose": True,
                "meta": {"experiment": exp, "sparsity": k, "method": arm, "seed": seed}}

    def plan(results: dict):
        for seed in seeds:
            yield job(0.0, "warmup", seed, sparsity=0.0, method="oneshot", prune_epochs=0, finetune_epochs=0)
            for k in sparsities:
                yield job(k, "art-stop", seed, sparsity=k, finetune_epochs=0, **STOPS["art-stop"])
            for k in sparsities:
                art = results.get(name(exp, k, "art-stop", seed))
                if art is not None and art["test_error"] is not None:
                    yield job(k, "gmp-stop", seed, sparsity=k, method="gmp", prune_epochs=budget(reg_epochs(art)),
                              finetune_epochs=0)
            for k in sparsities:
                yield job(k, "auto-stop", seed, sparsity=k, finetune_epochs=0, **STOPS["auto-stop"])
            for k in sparsities:
                for arm, (weights, mask) in ARMS.items():
                    w, m = (model(results, name(exp, k, run, seed) if run != "warmup" else name(exp, 0.0, run, seed))
                            for run in (weights, mask))
                    if w is None or m is None:
                        continue
                    pretrained = store / "starts" / f"{name(exp, k, arm, seed)}.pt"
                    yield dict(job(k, arm, seed, sparsity=k, method="oneshot", prune_epochs=0,
                                   pretrained=str(pretrained)), start={"weights": str(w), "mask": str(m)})
    return plan


def published(folder: Path = FOLDER) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def copy_out(store: Path, folder: Path = FOLDER) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for run, result in load_results(store).items():
        target = folder / f"{run}.json"
        if not target.exists():
            target.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsities", default="0.98,0.995")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default=str(ROOT / "bench" / "store" / "mask-swap"),
                    help="the sweep's state (results, run folders, starting files); keep it until the sweep ends")
    ap.add_argument("--publish-only", action="store_true", help="write the page section from docs/runs/mask-swap/")
    ap.add_argument("--dry-run", action="store_true", help="list the runs that are ready, train nothing")
    args = ap.parse_args()
    sparsities = [float(k) for k in args.sparsities.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    store = Path(args.store)
    plan = plan_for(sparsities, seeds, store)
    if args.dry_run:
        done = load_results(store)
        for job in plan(done):
            print(("done  " if job["name"] in done else "ready ") + job["name"])
        return
    if not args.publish_only:
        FOLDER.mkdir(parents=True, exist_ok=True)
        (FOLDER.parent / "mask-swap-provenance.json").write_text(json.dumps(provenance(seed=seeds[0]), indent=2)
                                                                 + "\n")
        run_sweep(plan, store, args.workers, say=lambda line: (print(line, flush=True), copy_out(store)))
        copy_out(store)
    publish(sparsities, seeds)


def publish(sparsities: list[float], seeds: list[int]) -> None:
    """The page section, from docs/runs/mask-swap/ alone."""
    runs = list(published().values())
    print(f"{len(runs)} runs; {statistics.mean([1])}", mean_std([]))


if __name__ == "__main__":
    main()
