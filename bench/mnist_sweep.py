"""MNIST results: ART (HyperSparse, L1, L2) against one-shot, GMP, SNIP and RigL, LeNet-300-100 and LeNet-5.

Regenerates docs/results.md (MNIST section), docs/mnist_error_vs_sparsity.png and
docs/runs/mnist-sweep.json. Every run uses the same shortened schedule
(--epochs-scale, default 0.05: 3 warm-up and 8 fine-tuning epochs, eta**20 per
epoch). LeNet-5 differs in two settings (OVERRIDES): its epochs visit a fresh
random tenth of the training set, so that the whole sweep fits in about 2 hours
on 2 cores, and its learning rate is 0.01 (at 0.1 its warm-up diverges). Fair
budget: each baseline (and the dense reference) gets exactly as many epochs
between warm-up and fine-tuning as the ART-HyperSparse run of the
same model, sparsity and seed spent regularizing. Models are chosen on the
validation split; test error is reported as mean +- std over seeds.

    python bench/mnist_sweep.py             # the full sweep (2 models x 4 sparsities x 7 methods x 3 seeds)
    python bench/mnist_sweep.py --quick     # one seed of lenet300 at two sparsities, a few minutes
    python bench/mnist_sweep.py --models lenet300   # what fits in ~1 hour on 2 CPU cores
    python bench/mnist_sweep.py --models lenet5 --merge docs/runs/mnist-sweep.json   # add a model to a published sweep
    python bench/mnist_sweep.py --methods rigl --merge docs/runs/mnist-sweep.json    # add a method to it (its
                      # budgets are the published ART + HyperSparse runs'; runs of the same cells are replaced)
    python bench/mnist_sweep.py --quick --methods rigl --sparsities 0.98 --dry-run  # list the runs, train nothing
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import mean_std, provenance, rerun_note  # noqa: E402

METHODS = [("art", "hs"), ("art", "l1"), ("art", "l2"), ("oneshot", None), ("gmp", None), ("snip", None),
           ("rigl", None)]
LABELS = {"art-hs": "ART + HyperSparse", "art-l1": "ART + L1", "art-l2": "ART + L2", "oneshot": "one-shot magnitude",
          "gmp": "GMP (Zhu & Gupta)", "snip": "SNIP (Lee et al.)", "rigl": "RigL (Evci et al.)"}
DENSE = "dense"  # the dense reference: one-shot at sparsity 0, at the median ART + HyperSparse budget
# per-model departures from the schedule, stated on the page: a full MNIST epoch of LeNet-5 costs ~23 s on one
# core, and at lr 0.1 (no batch norm) its loss became nan in the first epoch for seeds 0 and 1
OVERRIDES = {"lenet300": {}, "lenet5": {"epoch_fraction": 0.1, "lr": 0.01}}
ANCHORS = {  # cited, not rerun: (source, sparsity, test error %)
    "lenet300": [("Han et al. 2015", 0.92, 1.59), ("Sparse VD (Molchanov et al. 2017)", 0.985, 1.92)],
    "lenet5": [("Han et al. 2015", 0.92, 0.77), ("Sparse VD (Molchanov et al. 2017)", 0.9964, 0.75)],
}


def key(method, reg):
    from hypersparse.run_read import run_label

    return run_label({"sparsity": {"method": method}, "art": {"reg": reg}})


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)  # two runs side by side on the two cores
    from hypersparse.config import TrainConfig
    from hypersparse.engine import train
    from hypersparse.schedule import ARTDidNotConverge

    cfg = TrainConfig.from_dict(job["config"])
    t0 = time.perf_counter()
    try:
        summary = train(cfg, job["run_dir"], progress=False, out=open(os.devnull, "w"))
        result = {"test_error": 100 * (1 - summary["sparse"]["test_acc"]), "val_acc": summary["sparse"]["val_acc"],
                  "sparsity": summary["sparse"]["sparsity"], "epochs": summary["epochs"], "dense": summary["dense"]}
    except ARTDidNotConverge as exc:
        result = {"test_error": None, "failed": str(exc)}
    result.update(job["meta"], wall_seconds=time.perf_counter() - t0)
    return result


def make_job(model, sparsity, seed, method, reg, root, scale, data_dir, prune_epochs=None):
    config = dict(dataset="mnist", data_dir=data_dir, model=model, sparsity=sparsity, seed=seed, method=method,
                  epochs_scale=scale)
    if method == "art":  # the rule the published table was measured with
        config.update(reg=reg, criterion="paper")
    config.update(OVERRIDES[model])
    if prune_epochs is not None:
        config["prune_epochs"] = round(prune_epochs / scale)
    name = key(method, reg) if sparsity > 0 else "dense"
    return {"config": config, "run_dir": str(Path(root) / f"{model}-{sparsity}-{name}-{seed}"),
            "meta": {"model": model, "sparsity": sparsity, "seed": seed, "method": name,
                     "overrides": OVERRIDES[model]}}


def fmt(values):
    if not values:
        return "not run"
    failed = sum(v is None for v in values)
    return mean_std(values) + (f" ({failed} of {len(values)} n/c)" if 0 < failed < len(values) else "")


def cell_key(r: dict) -> tuple:
    return r["model"], r["sparsity"], r["method"], r["seed"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--epochs-scale", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default="lenet300,lenet5",
                    help="comma-separated; lenet5 costs ~19 s per epoch on 2 cores")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--from-json", help="rebuild the page and plot from a saved runs JSON, without training")
    ap.add_argument("--merge", help="a sweep JSON whose runs are kept beside the new ones (those of the cells run "
                    "again are replaced)")
    ap.add_argument("--methods", help="comma-separated, of " + ", ".join([*LABELS, DENSE]) + " (default: all); without "
                    "art-hs the budgets come from the --merge JSON's art-hs runs")
    ap.add_argument("--sparsities", help="comma-separated (default: 0.9,0.98,0.995,0.998; --quick: 0.98,0.998)")
    ap.add_argument("--seeds", help="comma-separated (default: 0,1,2; --quick: 0)")
    ap.add_argument("--dry-run", action="store_true", help="list the runs it would train, and train nothing")
    args = ap.parse_args()
    if args.from_json:
        payload = json.loads(Path(args.from_json).read_text())
        return publish(payload, Path(args.out))
    models = ["lenet300"] if args.quick else args.models.split(",")
    sparsities = [float(k) for k in args.sparsities.split(",")] if args.sparsities else \
        [0.98, 0.998] if args.quick else [0.9, 0.98, 0.995, 0.998]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [0] if args.quick else [0, 1, 2]
    methods = args.methods.split(",") if args.methods else [*LABELS, DENSE]
    unknown = [m for m in methods if m not in [*LABELS, DENSE]]
    if unknown:
        ap.error(f"--methods: unknown {', '.join(unknown)}; choose among {', '.join([*LABELS, DENSE])}")
    started = time.time()
    args.provenance = provenance(seed=seeds[0])  # at the start: the code that ran
    args.previous = json.loads(Path(args.merge).read_text()) if args.merge else None
    new = {(m, k, meth, s) for m in models for s in seeds
           for k, meth in [(k, x) for k in sparsities for x in methods if x != DENSE]
           + [(0.0, DENSE)] * (DENSE in methods)}
    kept = [r for r in (args.previous["runs"] if args.previous else []) if cell_key(r) not in new]
    args.planned = len(new) + len(kept)
    args.replaced = len(args.previous["runs"]) - len(kept) if args.previous else 0
    budgets = {(r["model"], r["sparsity"], r["seed"]) for r in kept if r["method"] == "art-hs"}
    if "art-hs" not in methods:
        missing = [(m, k, s) for m in models for k in sparsities for s in seeds if (m, k, s) not in budgets]
        if missing:
            ap.error(f"--methods without art-hs takes the budgets of the --merge JSON's art-hs runs; it has none for "
                     f"{', '.join(f'{m} {k} seed {s}' for m, k, s in missing[:4])}")
    if args.dry_run:
        for m, k, meth, s in sorted(new, key=str):
            print(f"{m} {k} {meth} seed {s}" + (" (budget: the art-hs run)" if meth not in ("art-hs",) else ""))
        print(f"{len(new)} runs to train; {len(kept)} kept from {args.merge or 'nothing'}, {args.replaced} replaced")
        return
    with tempfile.TemporaryDirectory() as root, ProcessPoolExecutor(args.workers) as pool:
        first = [make_job(m, k, s, "art", "hs", root, args.epochs_scale, args.data_dir)
                 for m in models for k in sparsities for s in seeds] if "art-hs" in methods else []
        results = kept
        for r in pool.map(run_one, first):
            results.append(r)
            report(r, len(results), args.planned)
        reg_epochs = {(r["model"], r["sparsity"], r["seed"]):
                      r["epochs"].get("regularize", 0) if r.get("epochs") else 20
                      for r in results if r["method"] == "art-hs"}
        rest = [make_job(m, k, s, meth, reg, root, args.epochs_scale, args.data_dir, reg_epochs[(m, k, s)])
                for m in models for k in sparsities for s in seeds for meth, reg in METHODS[1:]
                if key(meth, reg) in methods]
        rest += [make_job(m, 0.0, s, "oneshot", None, root, args.epochs_scale, args.data_dir,
                          round(statistics.median(reg_epochs[(m, k, s)] for k in sparsities)))
                 for m in models for s in seeds if DENSE in methods]
        for r in pool.map(run_one, rest):
            results.append(r)
            report(r, len(results), args.planned)
            save(payload_of(results, args, seeds, time.time() - started), Path(args.out))  # progress survives a crash
    publish(payload_of(results, args, seeds, time.time() - started), Path(args.out))


def report(r: dict, done: int, planned: int) -> None:
    print(f"{done}/{planned} {r['model']} {r['sparsity']} {r['method']} seed {r['seed']}: {r['test_error']} "
          f"({r['wall_seconds']:.0f}s)", flush=True)


def payload_of(results, args, seeds, wall):
    payload = {"provenance": args.provenance, "epochs_scale": args.epochs_scale, "quick": args.quick,
               "wall_seconds": wall, "planned_runs": args.planned, "runs": results}
    if args.previous:  # the merged sweep's runs, provenance and time stay on record
        prev = args.previous
        payload["planned_runs"] += max(0, prev.get("planned_runs", len(prev["runs"])) - len(prev["runs"]))
        payload["wall_seconds"] += prev["wall_seconds"]
        payload["merged_from"] = (prev.get("merged_from", [])
                                  + [dict(prev["provenance"], wall_seconds=prev["wall_seconds"])])
    return payload


def save(payload, out: Path) -> str:
    name = "mnist-sweep-quick" if payload["quick"] else "mnist-sweep"
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    return name


def publish(payload, out: Path) -> None:
    """Write the plot and the page: docs/results.md's MNIST section (full sweep) or docs/mnist-sweep-quick.md."""
    runs = payload["runs"]
    if "planned_runs" not in payload:  # a JSON from before the count was recorded
        n_models = len({r["model"] for r in runs})
        n_sparse = len({r["sparsity"] for r in runs if r["sparsity"] > 0})
        n_seeds = len({r["seed"] for r in runs})
        payload["planned_runs"] = n_models * n_seeds * (n_sparse * len(METHODS) + 1)
    name = save(payload, out)
    models = [m for m in ("lenet300", "lenet5") if any(r["model"] == m for r in runs)]
    sparsities = sorted({r["sparsity"] for r in runs if r["sparsity"] > 0})
    plot(runs, models, sparsities, out / f"{name}.png")
    text = page(payload, models, sparsities, f"{name}.png", name)
    if payload["quick"]:
        (out / f"{name}.md").write_text(text)
        print(f"wrote {out / (name + '.md')}")
        return
    results_md = out / "results.md"
    begin, end = "<!-- mnist-sweep:begin -->", "<!-- mnist-sweep:end -->"
    old = results_md.read_text() if results_md.exists() else f"# Results\n\n{begin}\n{end}\n"
    head, _, rest = old.partition(begin)
    _, _, tail = rest.partition(end)
    results_md.write_text(f"{head}{begin}\n{text}\n{end}{tail}")
    print(f"wrote the MNIST section of {results_md}")


def cell(results, model, sparsity, method):
    return [r["test_error"] for r in results
            if r["model"] == model and r["sparsity"] == sparsity and r["method"] == method]


def plot(results, models, sparsities, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for method in shown_methods(results):
            xs, ys, es = [], [], []
            for k in sparsities:
                vals = [v for v in cell(results, model, k, method) if v is not None]
                if vals:
                    xs.append(100 * (1 - k))
                    ys.append(statistics.mean(vals))
                    es.append(statistics.stdev(vals) if len(vals) > 1 else 0)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=LABELS[method])
        dense = [v for v in cell(results, model, 0.0, "dense") if v is not None]
        if dense:
            ax.axhline(statistics.mean(dense), color="k", ls="--", lw=1, label="dense (same budget)")
        for src, k, err in ANCHORS[model]:
            ax.scatter([100 * (1 - k)], [err], marker="*", s=120, color="gray", zorder=5)
            ax.annotate(src.split(" (")[0], (100 * (1 - k), err), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights kept (%), log scale")
        ax.set_yscale("log")
        ax.set_ylabel("test error (%), log scale")
        ax.set_title(f"{model} on MNIST")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def shown_methods(runs) -> list[str]:
    """The methods with runs in the sweep, in LABELS' order (a method added later shows once it has run)."""
    return [m for m in LABELS if any(r["method"] == m for r in runs)]


def overrides_text(runs, models) -> str:
    """The per-model departures from the schedule (OVERRIDES at the time of the run), as a sentence."""
    why = {"epoch_fraction": "each epoch visits a fresh random {:.0%} of the training set, to fit the time budget",
           "lr": "learning rate {:g}, because at 0.1 its warm-up diverged (nan loss in the first epoch)"}
    parts = []
    for m in models:
        over = next((r.get("overrides", {}) for r in runs if r["model"] == m), {})
        if over:
            parts.append(f"{m}: " + "; ".join(why[k].format(v) + f" (`--{k.replace('_', '-')} {v}`)"
                                              for k, v in over.items()))
    if not parts:
        return ""
    return "**Per model**, for every method of that model: " + ". ".join(parts) + ". "


def page(payload, models, sparsities, png, name):
    runs = payload["runs"]
    prov = payload["provenance"]
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        "## MNIST, shortened schedule: ART + HyperSparse against L1/L2 and the standard pruning baselines\n",
        f"Generated by `{prov['command']}` "
        f"(commit `{prov['commit']}`, {prov['date']}; {prov['machine']}; torch {prov['torch']}, "
        f"two runs side by side with 1 thread each; total wall time {payload['wall_seconds'] / 60:.0f} min; "
        f"{len(runs)} of {payload.get('planned_runs', len(runs))} planned runs completed"
        f"{'' if len(runs) >= payload.get('planned_runs', 0) else ': cells marked not run are missing'}).\n"
        + (f"\n{prov['note']}\n" if prov.get("note") else "")
        + "".join(f"\nMerged with the runs of `{p['command']}` (commit `{p['commit']}`, {p['date']}, "
                  f"{p['wall_seconds'] / 60:.0f} min){': ' + p['note'].rstrip('.') if p.get('note') else ''}.\n"
                  for p in payload.get("merged_from", [])),
        f"Test error in % (mean ± std over seeds {', '.join(map(str, seeds))}), each model chosen on the validation "
        "split "
        "(5,000 training images set aside by the seed); the test set is only reported.\n",
        f"**Shortened schedule, the same for every method**: `--epochs-scale {payload['epochs_scale']}`, i.e. "
        f"{max(1, round(60 * payload['epochs_scale']))} warm-up epochs, {max(1, round(160 * payload['epochs_scale']))} "
        f"fine-tuning epochs (LR ×0.1 after {max(1, round(80 * payload['epochs_scale']))} and "
        f"{max(1, round(120 * payload['epochs_scale']))}), η = 1.05^(1/scale) per epoch, λ_0 = 5e-6, SGD 0.1, "
        "momentum 0.9, "
        "wd 1e-4, batch 64, the authors' stop rule (`--criterion paper`). "
        + overrides_text(runs, models)
        + "**Fair budget**: every baseline gets as many epochs between warm-up and fine-tuning as the "
        "ART + HyperSparse run of the same model, sparsity and seed spent regularizing (GMP prunes over them; one-shot "
        "trains densely through them; SNIP trains its at-initialization mask through them"
        + ("; RigL sparse-trains through them from an ERK mask of the warm-up's largest weights, dropping the smallest "
           "kept weights and growing as many where the dense gradient is largest every 100 steps, drop fraction 0.3 "
           "decaying by a cosine to 0 at 75 % of those steps" if "rigl" in shown_methods(runs) else "")
        + "). ART + L1/L2 stop by their "
        "own criterion. 'n/c': ART did not meet its criterion within its epoch limit; 'not run': no run finished.\n",
        f"![test error against sparsity]({png})\n",
    ]
    shown = shown_methods(runs)
    for model in models:
        dense = cell(runs, model, 0.0, "dense")
        lines += [f"### {model}\n",
                  f"Dense reference, same budget and schedule: **{fmt(dense)} %** test error.\n",
                  "| sparsity | " + " | ".join(LABELS[m] for m in shown) + " | epochs (ART-HS) |",
                  "|---|" + "---:|" * (len(shown) + 1)]
        for k in sparsities:
            row = [f"{100 * k:g} %"]
            best = min((statistics.mean([v for v in cell(runs, model, k, m) if v is not None] or [1e9]), m)
                       for m in shown)
            for m in shown:
                text = fmt(cell(runs, model, k, m))
                row.append(f"**{text}**" if m == best[1] else text)
            ep = [sum(r["epochs"].values()) for r in runs
                  if r["model"] == model and r["sparsity"] == k and r["method"] == "art-hs" and r.get("epochs")]
            row.append(f"{statistics.mean(ep):.0f}" if ep else "-")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("\nAnchors (cited, not rerun), against our ART + HyperSparse at the nearest sparsity at or "
                     "above:\n")
        for src, k_ref, err in ANCHORS[model]:
            ours_k = min([k for k in sparsities if k >= k_ref - 1e-9], default=None)
            vals = [v for v in cell(runs, model, ours_k, "art-hs") if v is not None] if ours_k else []
            if not vals:
                lines.append(f"- {src}: {err:.2f} % at {100 * k_ref:g} % — no comparable row here.")
                continue
            mean = statistics.mean(vals)
            verdict = "**beat**" if mean < err else "**missed**"
            lines.append(f"- {src}: {err:.2f} % at {100 * k_ref:g} % sparsity; ours {mean:.2f} % at {100 * ours_k:g} % "
                         f"— {verdict} (with our shortened schedule).")
        lines.append("")
    lines += ["### Every run\n",
              "<details><summary>model, sparsity, method, seed, test error, epochs, wall time</summary>\n",
              "| model | sparsity | method | seed | test error % | epochs | wall s |",
              "|---|---:|---|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (r["model"], r["sparsity"], r["method"], r["seed"])):
        err = f"{r['test_error']:.2f}" if r["test_error"] is not None else "n/c"
        ep = sum(r["epochs"].values()) if r.get("epochs") else "-"
        lines.append(f"| {r['model']} | {r['sparsity']} | {r['method']} | {r['seed']} | {err} | {ep} | "
                     f"{r['wall_seconds']:.0f} |")
    lines += ["\n</details>\n", *rerun_note(payload), f"Raw results: [runs/{name}.json](runs/{name}.json).\n"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
