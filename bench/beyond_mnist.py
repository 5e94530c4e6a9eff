"""Evidence beyond MNIST's MLP: LeNet-5 on MNIST and an MLP on CIFAR-10-JPEG75, ART + HyperSparse against GMP,
RigL, one-shot and dense, each at a quarter of the authors' schedule.

Both experiments run ``--epochs-scale 0.25``: 15 warm-up epochs, ART with eta = 1.05**4 per epoch (at most 75
regularization epochs), 40 fine-tuning epochs with LR x0.1 after 20 and 30; whole epochs, SGD momentum 0.9, wd 1e-4,
batch 64, one thread per run, seeds 0-2, sparsity 98 % and 99.5 %.

* ``lenet5-mnist``: LeNet-5 (Caffe variant) on MNIST at lr 0.01 (lr 0.1 diverges in LeNet-5's warm-up, and so did
  0.03 here: the loss became NaN in warm-up epoch 8 of seed 0; see LR_CHECK).
* ``mlp-cifar10jpeg75``: LeNet-300-100's shape with 3,072 inputs on **CIFAR-10-JPEG75, a lossy JPEG (quality 75)
  copy of CIFAR-10, not CIFAR-10**; random crops and flips; lr 0.01 (see LR_CHECK for the short check on
  validation and why its best rate was not taken).

ART + HyperSparse runs with the project's defaults and with ``--lambda-init auto``. GMP, RigL and one-shot get as many
epochs between warm-up and fine-tuning as the default ART run of the same cell and seed spent regularizing; dense
trains for the same total (the median over the seed's sparsities); where λ_0 auto trails a baseline, that baseline runs
again at λ_0 auto's own epochs. Models are chosen on the validation split.

Each result keeps the run's epoch trace (ART's lambda, pruned and dense accuracy, stop reason) and its final per-layer
sparsity and live units, which the page's diagnosis reads. The store continues after a stop (bench/sweep.py), and
each finished result is copied into docs/runs/beyond/ as it comes, so that work spanning sessions is committed (the
store is seeded from there when a sweep starts). This file plans and runs the sweep; bench/beyond_setup.py holds the
experiments' settings and how a cell is read, bench/beyond_page.py writes the page.

    python bench/beyond_mnist.py                       # both experiments (~18 CPU-hours, 2 workers)
    python bench/beyond_mnist.py --experiments lenet5-mnist --seeds 0
    python bench/beyond_mnist.py --publish-only        # the page from docs/runs/beyond/ alone
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from beyond_page import changed_alone, section  # noqa: E402
from beyond_setup import (  # noqa: E402
    AGAIN,
    AUTO_BUDGET,
    CAUSES,
    EXPERIMENTS,
    LR_SUSPECT,
    SCHEDULE,
    VARIANTS,
    auto_behind,
    budget,
    defaults_behind,
    name,
    reg_epochs,
)
from common import provenance  # noqa: E402
from lr_check import checked, summary  # noqa: E402
from sweep import copy_out, load_results, run_sweep  # noqa: E402
from sweep import published as committed  # noqa: E402

DOCS = ROOT / "docs"


def plan_for(experiments: list[str], sparsities: list[float], seeds: list[int]):
    """For each seed and experiment: each sparsity's ART runs, then its baselines, then the seed's dense model; and
    where ART trails (GMP at seed 0 on validation, or a baseline in the table), each suspected cause changed alone
    (first, once that is known); last, where λ_0 auto trails a baseline, that baseline at auto's own epochs."""

    def job(exp, sparsity, variant, seed, **extra):
        config = dict(EXPERIMENTS[exp]["config"], **SCHEDULE, sparsity=sparsity, seed=seed,
                      **VARIANTS.get(variant, {}), **extra)
        return {"name": name(exp, sparsity, variant, seed), "config": config, "diagnose": True,
                "meta": {"experiment": exp, "sparsity": sparsity, "method": variant, "seed": seed}}

    def trails(results: dict, exp: str, k: float) -> bool:
        """ART behind GMP at seed 0 (validation accuracy, known first), or behind a baseline in the published table
        (test error, by more than one std over two seeds or more): only then are the suspected causes worth their
        runs. Each cause is still judged on validation."""
        art, gmp = results.get(name(exp, k, "art-hs", 0)), results.get(name(exp, k, "gmp", 0))
        if art is not None and gmp is not None and gmp["val_acc"] > art["val_acc"]:
            return True
        return defaults_behind(list(results.values()), exp, k)

    def confounded(results: dict, exp: str, k: float) -> bool:
        """Whether a cell the table shows ART's defaults behind in has a cause run that trained unlike the defaults'
        run before its change could act (another session's float drift): then the defaults and every cause are run
        again together, so that each is the change alone."""
        runs = list(results.values())
        if not defaults_behind(runs, exp, k):
            return False
        default = results.get(name(exp, k, "art-hs", 0))
        done = [results.get(name(exp, k, c, 0)) for c in CAUSES]
        return default is not None and any(r is not None and r["test_error"] is not None
                                           and not changed_alone(r, default) for r in done)

    def plan(results: dict):
        if 0 in seeds:
            for exp in experiments:
                for k in sparsities:
                    if not trails(results, exp, k):
                        continue
                    for variant, (_, change) in CAUSES.items():
                        yield job(exp, k, variant, 0, **VARIANTS["art-hs"], **change)
                    slow = results.get(name(exp, k, "art-hs-slow-lambda", 0))
                    if slow is not None:  # the slower growth regularizes longer: GMP given as many epochs
                        yield job(exp, k, "gmp-slow-budget", 0, method="gmp", prune_epochs=budget(reg_epochs(slow)))
                    if exp in LR_SUSPECT:
                        lr = LR_SUSPECT[exp]
                        yield job(exp, k, "art-hs-lr", 0, **VARIANTS["art-hs"], lr=lr)
                        fast = results.get(name(exp, k, "art-hs-lr", 0))
                        if fast is not None:
                            yield job(exp, k, "gmp-lr", 0, method="gmp", lr=lr, prune_epochs=budget(reg_epochs(fast)))
            for exp in experiments:  # after every cell's first cause runs: these need them, and cost four runs
                for k in sparsities:
                    if confounded(results, exp, k):
                        yield job(exp, k, "art-hs" + AGAIN, 0, **VARIANTS["art-hs"])
                        for variant, (_, change) in CAUSES.items():
                            yield job(exp, k, variant + AGAIN, 0, **VARIANTS["art-hs"], **change)
        for seed in seeds:
            for exp in experiments:
                for k in sparsities:
                    yield job(exp, k, "art-hs", seed)
                    art = results.get(name(exp, k, "art-hs", seed))
                    if art is not None:
                        yield job(exp, k, "gmp", seed, prune_epochs=budget(reg_epochs(art)))
                    yield job(exp, k, "art-hs-auto", seed)
                    if art is not None:
                        yield job(exp, k, "rigl", seed, prune_epochs=budget(reg_epochs(art)))
                        yield job(exp, k, "oneshot", seed, prune_epochs=budget(reg_epochs(art)))
                arts = [results.get(name(exp, k, "art-hs", seed)) for k in sparsities]
                if all(arts):
                    epochs = round(statistics.median(reg_epochs(a) for a in arts))
                    yield job(exp, 0.0, "dense", seed, method="oneshot", prune_epochs=budget(epochs))
        for exp in experiments:  # last, once the table is in: a baseline λ_0 auto trails, at auto's own epochs
            for k in sparsities:
                for m in auto_behind(list(results.values()), exp, k):
                    for seed in seeds:
                        auto = results.get(name(exp, k, "art-hs-auto", seed))
                        if auto is not None:
                            yield job(exp, k, m + AUTO_BUDGET, seed, **VARIANTS[m],
                                      prune_epochs=budget(reg_epochs(auto)))
    return plan


def published(docs: Path = DOCS) -> dict[str, dict]:
    """The results already committed under docs/runs/beyond/."""
    return committed(docs / "runs" / "beyond")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS))
    ap.add_argument("--sparsities", default="0.98,0.995")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default=str(ROOT / "bench" / "store" / "beyond"),
                    help="the sweep's state (results and run folders); keep it to continue later")
    ap.add_argument("--docs", default=str(DOCS), help="the docs folder: runs/beyond/ holds the finished results")
    ap.add_argument("--publish-only", action="store_true",
                    help="write the pages from docs/runs/beyond/ alone (train nothing, read no store)")
    ap.add_argument("--dry-run", action="store_true", help="list the runs that are ready, train nothing")
    args = ap.parse_args()
    experiments = [e for e in args.experiments.split(",") if e]
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        ap.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    sparsities = [float(k) for k in args.sparsities.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    plan = plan_for(experiments, sparsities, seeds)
    store, docs = Path(args.store), Path(args.docs)
    if args.dry_run:
        done = {**published(docs), **load_results(store)}
        for job in plan(done):
            print(("done  " if job["name"] in done else "ready ") + job["name"])
        return
    if not args.publish_only:
        # results committed by an earlier session count as finished: seed the store with them
        (store / "results").mkdir(parents=True, exist_ok=True)
        for run, result in published(docs).items():
            target = store / "results" / f"{run}.json"
            if not target.exists():
                target.write_text(json.dumps(result, indent=2) + "\n")
        record = docs / "runs" / "beyond-provenance.json"  # the machine the sweep runs on, for the pages
        record.write_text(json.dumps(provenance(seed=seeds[0]), indent=2) + "\n")
        folder = docs / "runs" / "beyond"
        run_sweep(plan, store, args.workers, say=lambda line: (print(line, flush=True), copy_out(store, folder)))
        copy_out(store, folder)
    publish(docs, experiments, sparsities, seeds)


def publish(docs: Path, experiments: list[str], sparsities: list[float], seeds: list[int]) -> None:
    """One section of docs/results.md per experiment, from docs/runs/beyond/ alone (so the page regenerates
    byte-identical from what is committed)."""
    runs = list(published(docs).values())
    swaps = list(committed(docs / "runs" / "mask-swap").values())
    record = docs / "runs" / "beyond-provenance.json"
    machine = json.loads(record.read_text()) if record.exists() else {"machine": "?", "torch": "?"}
    results_md = docs / "results.md"
    text = results_md.read_text()
    for exp in experiments:
        begin, end = f"<!-- beyond-{exp}:begin -->", f"<!-- beyond-{exp}:end -->"
        if begin not in text:
            text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        body = section(exp, [r for r in runs if r["experiment"] == exp], sparsities, seeds, machine,
                       summary(exp, checked(docs / "runs" / "lr-check")), swaps=swaps)
        text = f"{head}{begin}\n{body}\n{end}{tail}"
    results_md.write_text(text)
    print(f"wrote {len(experiments)} section(s) of {results_md} from {len(runs)} runs")


if __name__ == "__main__":
    main()
