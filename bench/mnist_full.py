"""MNIST LeNet-300-100 at the authors' full schedule: ART + HyperSparse against GMP, one-shot and dense.

Every run has 60 warm-up and 160 fine-tuning epochs (LR x0.1 after 80 and 120), SGD 0.1, momentum 0.9, wd 1e-4,
batch 64, one thread. ART + HyperSparse runs twice: with the project's defaults (lambda_0 = 5e-6, eta = 1.05, the
matched stop rule) and with ``--lambda-init auto``. GMP and one-shot get as many epochs between warm-up and
fine-tuning as the default ART run of the same sparsity and seed spent regularizing; the dense model trains for the
same total (the median over that seed's sparsities). Models are chosen on the validation split.

The sweep keeps its state in ``--store`` (one JSON per finished run, each run's folder with its checkpoint), so it can
be stopped at any moment and started again with the same arguments; it then skips what is done and resumes the rest.
Seeds come first in the plan, so a stopped sweep has whole seeds rather than a little of everything.

    python bench/mnist_full.py                       # 0.985 and 0.995, seeds 0-2 (~7 CPU-hours, 2 workers)
    python bench/mnist_full.py --sparsities 0.985,0.995,0.998
    python bench/mnist_full.py --publish-only        # rebuild the page from what the store holds
    python bench/mnist_full.py --publish-only --merge other.json   # with the runs of another saved sweep
    python bench/mnist_full.py --from-json docs/runs/mnist-full.json   # the page again from its JSON
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import every_run, mean_std, provenance, rerun_note  # noqa: E402
from mnist_sweep import ANCHORS  # noqa: E402
from sweep import add_grid_arguments, grid, merge, run_sweep  # noqa: E402

LABELS = {"art-hs": "ART + HyperSparse (defaults)", "art-hs-auto": "ART + HyperSparse, λ_0 auto",
          "gmp": "GMP (Zhu & Gupta)", "oneshot": "one-shot magnitude"}
VARIANTS = {"art-hs": {"method": "art", "reg": "hs"},
            "art-hs-auto": {"method": "art", "reg": "hs", "lambda_init": "auto"},
            "gmp": {"method": "gmp"}, "oneshot": {"method": "oneshot"}}
MAX_REG = 300  # ART's default limit: a run that never met its criterion spent this many epochs
BEGIN, END = "<!-- mnist-full:begin -->", "<!-- mnist-full:end -->"


def name(sparsity: float, variant: str, seed: int) -> str:
    return f"lenet300-{sparsity:g}-{variant}-s{seed}"


def reg_epochs(result: dict) -> int:
    return result["epochs"].get("regularize", 0) if result.get("epochs") else MAX_REG


def plan_for(sparsities: list[float], seeds: list[int], data_dir: str):
    """The plan: for each seed, each sparsity's two ART runs, then its baselines, then the seed's dense model."""
    base = {"dataset": "mnist", "data_dir": data_dir, "model": "lenet300"}

    def job(sparsity, variant, seed, **extra):
        config = dict(base, sparsity=sparsity, seed=seed, **VARIANTS.get(variant, {}), **extra)
        return {"name": name(sparsity, variant, seed), "config": config,
                "meta": {"sparsity": sparsity, "method": variant, "seed": seed}}

    def plan(results: dict):
        for seed in seeds:
            for k in sparsities:
                yield job(k, "art-hs", seed)
                yield job(k, "art-hs-auto", seed)
                art = results.get(name(k, "art-hs", seed))
                if art is not None:
                    yield job(k, "gmp", seed, prune_epochs=reg_epochs(art))
                    yield job(k, "oneshot", seed, prune_epochs=reg_epochs(art))
            arts = [results.get(name(k, "art-hs", seed)) for k in sparsities]
            if all(arts):
                epochs = round(statistics.median(reg_epochs(a) for a in arts))
                yield job(0.0, "dense", seed, method="oneshot", prune_epochs=epochs)
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grid_arguments(ap, ROOT / "bench" / "store" / "mnist-full", "0.985,0.995", ROOT / "docs")
    ap.add_argument("--publish-only", action="store_true", help="write the page from the store, train nothing")
    ap.add_argument("--merge", nargs="*", default=[], help="saved sweep JSONs whose runs join the page")
    args = ap.parse_args()
    if args.from_json:
        return publish(json.loads(Path(args.from_json).read_text()), Path(args.out))
    sparsities, seeds = grid(args)
    prov = provenance(seed=seeds[0])
    plan = plan_for(sparsities, seeds, args.data_dir)
    results = run_sweep(lambda r: [], Path(args.store)) if args.publish_only else \
        run_sweep(plan, Path(args.store), args.workers)
    planned = ([name(k, v, s) for s in seeds for k in sparsities for v in LABELS]
               + [name(0.0, "dense", s) for s in seeds])
    runs = merge({"runs": list(results.values())}, *(json.loads(Path(p).read_text()) for p in args.merge))
    publish({"provenance": prov, "planned": planned, "runs": runs}, Path(args.out))


def cell(runs, sparsity, method):
    return [r["test_error"] for r in runs if r["sparsity"] == sparsity and r["method"] == method]


def publish(payload: dict, out: Path) -> None:
    """docs/runs/mnist-full.json, docs/mnist-full.png and the full-schedule section of docs/results.md."""
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / "mnist-full.json").write_text(json.dumps(payload, indent=2) + "\n")
    runs = payload["runs"]
    sparsities = sorted({r["sparsity"] for r in runs if r["sparsity"] > 0})
    if runs:
        plot(runs, sparsities, out / "mnist-full.png")
    results_md = out / "results.md"
    old = results_md.read_text() if results_md.exists() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in old:
        old = old.replace("<!-- mnist-sweep:begin -->", f"{BEGIN}\n{END}\n\n<!-- mnist-sweep:begin -->")
    head, _, rest = old.partition(BEGIN)
    _, _, tail = rest.partition(END)
    results_md.write_text(f"{head}{BEGIN}\n{page(payload, sparsities)}\n{END}{tail}")
    print(f"wrote the full-schedule section of {results_md}")


def plot(runs, sparsities, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, label in LABELS.items():
        pts = [(100 * (1 - k), [v for v in cell(runs, k, method) if v is not None]) for k in sparsities]
        pts = [(x, v) for x, v in pts if v]
        if pts:
            ax.errorbar([x for x, _ in pts], [statistics.mean(v) for _, v in pts],
                        yerr=[statistics.stdev(v) if len(v) > 1 else 0 for _, v in pts], marker="o", capsize=3,
                        label=label)
    dense = [v for v in cell(runs, 0.0, "dense") if v is not None]
    if dense:
        ax.axhline(statistics.mean(dense), color="k", ls="--", lw=1, label="dense (same epochs)")
    for src, k, err in ANCHORS["lenet300"]:
        ax.scatter([100 * (1 - k)], [err], marker="*", s=120, color="gray", zorder=5)
        ax.annotate(src.split(" (")[0], (100 * (1 - k), err), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("weights kept (%), log scale")
    ax.set_ylabel("test error (%)")
    ax.set_title("LeNet-300-100 on MNIST, the authors' full schedule")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def page(payload: dict, sparsities: list[float]) -> str:
    runs, prov = payload["runs"], payload["provenance"]
    commits = sorted({r["commit"] for r in runs})
    missing = [n for n in payload["planned"] if n not in {r["name"] for r in runs}]
    lines = [
        "## MNIST LeNet-300-100 at the authors' full schedule\n",
        f"Generated by `{prov['command']}` on {prov['machine']} (torch {prov['torch']}; two runs side by side, one "
        f"thread each). Runs made at commit{'s' if len(commits) > 1 else ''} {', '.join(f'`{c}`' for c in commits)} "
        "(each run's commit is in the raw JSON); "
        + (f"{len(missing)} planned runs have not finished yet (cells 'not run').\n" if missing else
           "every planned run finished.\n"),
        "Every run: 60 warm-up epochs, 160 fine-tuning epochs (LR ×0.1 after 80 and 120), SGD 0.1, momentum 0.9, "
        "wd 1e-4, batch 64, seeds as listed; the model is chosen on the validation split (5,000 training images set "
        "aside by the seed) and only its test error is reported (mean ± std over seeds). ART + HyperSparse runs with "
        "the project's defaults (λ_0 = 5e-6, η = 1.05, `--criterion matched`) and with `--lambda-init auto`. **Equal "
        "budget**: GMP and one-shot get as many epochs between warm-up and fine-tuning as the default ART run of the "
        "same sparsity and seed spent regularizing; the dense model trains for the same total epochs.\n",
        "![test error against sparsity, full schedule](mnist-full.png)\n",
        "| sparsity | " + " | ".join(LABELS.values()) + " | ART regularization epochs, per seed (defaults; auto) | "
        "wall min per run (ART defaults) |",
        "|---|" + "---:|" * (len(LABELS) + 2)]
    for k in sparsities:
        means = {m: statistics.mean([v for v in cell(runs, k, m) if v is not None] or [1e9]) for m in LABELS}
        best = min(means, key=means.get)
        row = [f"{100 * k:g} %"]
        for m in LABELS:
            vals, text = cell(runs, k, m), mean_std(cell(runs, k, m)) if cell(runs, k, m) else "not run"
            row.append(f"**{text}**" if m == best and vals else text)
        reg = ["/".join(str(reg_epochs(r)) for r in runs if r["sparsity"] == k and r["method"] == m) or "-"
               for m in ("art-hs", "art-hs-auto")]
        wall = [r["wall_seconds"] / 60 for r in runs if r["sparsity"] == k and r["method"] == "art-hs"
                and "wall_seconds" in r]
        row += [" ; ".join(reg), f"{statistics.mean(wall):.1f}" if wall else "-"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "**Where ART + HyperSparse (defaults) is behind** a baseline by more than one standard deviation "
              "(of the two cells, the larger):"]
    behind = []
    for k in sparsities:
        ours = [v for v in cell(runs, k, "art-hs") if v is not None]
        for m in ("gmp", "oneshot"):
            theirs = [v for v in cell(runs, k, m) if v is not None]
            if len(ours) > 1 and len(theirs) > 1:
                spread = max(statistics.stdev(ours), statistics.stdev(theirs))
                if statistics.mean(theirs) + spread < statistics.mean(ours):
                    behind.append(f"{LABELS[m]} at {100 * k:g} % ({statistics.mean(theirs):.2f} against "
                                  f"{statistics.mean(ours):.2f})")
    lines.append(("; ".join(behind) + ".") if behind else "nowhere in this table.")
    dense = cell(runs, 0.0, "dense")
    lines += ["", f"Dense, same total epochs: **{mean_std(dense) if dense else 'not run'} %** test error.\n",
              "Anchors (cited, not rerun), against ART + HyperSparse with defaults at the nearest sparsity at or "
              "above:\n"]
    for src, k_ref, err in ANCHORS["lenet300"]:
        ours_k = min([k for k in sparsities if k >= k_ref - 1e-9], default=None)
        vals = [v for v in cell(runs, ours_k, "art-hs") if v is not None] if ours_k else []
        ours = f"ours {statistics.mean(vals):.2f} % at {100 * ours_k:g} %" if vals else "no comparable row here"
        lines.append(f"- {src}: {err:.2f} % at {100 * k_ref:g} % sparsity; {ours}.")
    lines += ["- The authors' own code has not been run on this data yet.\n",
              "Wall times are of runs that shared the 2 cores with another run and, at times, with the test suite; "
              "the [training-speed page](../bench/results/train-speed-cpu.md) measures an epoch on an idle machine.\n",
              *every_run(runs)]
    lines += ["\n</details>\n", *rerun_note(payload), "Raw results: [runs/mnist-full.json](runs/mnist-full.json).\n"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
