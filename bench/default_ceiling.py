"""The default per-layer ceiling (1 - (1 - sparsity) / 10) against none, on MNIST cells at a shortened schedule.

Each cell is trained twice at the same seed: with the default (``max_layer_sparsity`` unset) and with
``max_layer_sparsity=1`` (no ceiling, the behaviour before the default existed). The page reports both test errors,
their difference, and the sparsest layer of each model (whether the ceiling bound at all). Shortened: the schedule
is scaled by ``--epochs-scale`` (default 0.05: 3 warm-up and 8 fine-tuning epochs) and each epoch visits a random
``--epoch-fraction`` of the training set (default 0.25); the baselines' pruning phase is their default 20 epochs,
scaled. ``--workers`` runs at a time (default 2), one thread each.

    python bench/default_ceiling.py [--models lenet300] [--sparsities 0.99,0.998] [--methods art,oneshot,snip] \
        [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))
from common import mean_std, provenance, write_results  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "mnist"
OVERRIDES = {"lenet300": {}, "lenet5": {"lr": 0.01}}  # as bench/mnist_sweep.py (LeNet-5 diverges at lr 0.1)


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from hypersparse.config import TrainConfig
    from hypersparse.engine import train
    from hypersparse.masks import sparsity_report
    from hypersparse.run_read import model_from_run

    t0 = time.perf_counter()
    summary = train(TrainConfig.from_dict(job["config"]), job["run_dir"], progress=False, out=open(os.devnull, "w"))
    report = sparsity_report(model_from_run(job["run_dir"]))
    top = max(report.layers, key=lambda layer: layer.sparsity)
    return {**job["meta"], "test_error": 100 * (1 - summary["sparse"]["test_acc"]),
            "sparsity": summary["sparse"]["sparsity"], "sparsest_layer": top.name,
            "sparsest_layer_sparsity": top.sparsity, "dead_layers": report.dead_layers, "epochs": summary["epochs"],
            "seconds": time.perf_counter() - t0}


def page(payload: dict) -> str:
    rows = payload["runs"]
    a = payload["args"]
    lines = ["# The default per-layer ceiling", "",
             f"MNIST, seeds {a['seeds']} (mean ± std over them), schedule shortened: "
             f"`--epochs-scale {a['epochs_scale']}`, each epoch a random "
             f"{a['epoch_fraction']:g} of the training set; ART with HyperSparse and the default (matched) stop rule. "
             "\"default\": each layer keeps at least `1 - (1 - sparsity) / 10` of its weights' share "
             "(`max_layer_sparsity` unset); \"none\": `max_layer_sparsity=1`. Test error in %; difference = default "
             "minus none, per seed; the sparsity of the sparsest layer of the final models (their maximum over "
             "seeds), in %.", "",
             "| model | sparsity | method | test error, default | test error, none | difference | sparsest layer, "
             "default | sparsest layer, none | emptied layers, none |", "|---|---|---|---|---|---|---|---|---|"]
    cells = sorted({(r["model"], r["sparsity_target"], r["method"]) for r in rows})
    for cell in cells:
        runs = {c: sorted((r for r in rows if (r["model"], r["sparsity_target"], r["method"]) == cell
                           and r["ceiling"] == c), key=lambda r: r["seed"]) for c in ("default", "none")}
        d, n = runs["default"], runs["none"]
        diff = [x["test_error"] - y["test_error"] for x, y in zip(d, n)]
        top = {c: max(r["sparsest_layer_sparsity"] for r in runs[c]) for c in runs}
        dead = sorted({name for r in n for name in r["dead_layers"]})
        lines.append(f"| {cell[0]} | {cell[1]} | {cell[2]} | {mean_std([r['test_error'] for r in d])} | "
                     f"{mean_std([r['test_error'] for r in n])} | {mean_std(diff)} | {100 * top['default']:.3f} | "
                     f"{100 * top['none']:.3f} | {', '.join(dead) or '-'} |")
    total = sum(r["seconds"] for r in rows)
    workers = payload.get("args", {}).get("workers", 2)
    at_once = "one at a time" if workers == 1 else f"{workers} at a time"
    lines += ["", f"{len(rows)} runs, {total / 60:.1f} minutes of wall time summed over them (one thread each, "
              f"{at_once}, on a machine other jobs shared)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet300")
    parser.add_argument("--sparsities", default="0.99,0.998")
    parser.add_argument("--methods", default="art,oneshot,snip")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs-scale", type=float, default=0.05)
    parser.add_argument("--epoch-fraction", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", default=str(DATA))
    parser.add_argument("--name", default="default-ceiling-cpu")
    parser.add_argument("--from-json", help="write the page again from this results JSON, without running")
    args = parser.parse_args()
    if args.from_json:
        import json

        payload = json.loads(Path(args.from_json).read_text())
        _, md = write_results(args.name, payload, page(payload))
        print(md.read_text())
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    prov = provenance(seed=seeds[0])
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for model in args.models.split(","):
            for sparsity in [float(s) for s in args.sparsities.split(",")]:
                for method, seed in [(m, s) for m in args.methods.split(",") for s in seeds]:
                    for ceiling in ("default", "none"):
                        config = dict(dataset="mnist", data_dir=args.data_dir, model=model, sparsity=sparsity,
                                      method=method, seed=seed, epochs_scale=args.epochs_scale,
                                      epoch_fraction=args.epoch_fraction, **OVERRIDES[model])
                        if ceiling == "none":
                            config["max_layer_sparsity"] = 1.0
                        name = f"{model}-{sparsity}-{method}-{ceiling}-s{seed}"
                        jobs.append({"config": config, "run_dir": str(Path(tmp) / name),
                                     "meta": {"model": model, "sparsity_target": sparsity, "method": method,
                                              "ceiling": ceiling, "seed": seed}})
        with ProcessPoolExecutor(args.workers) as pool:
            runs = []
            for result in pool.map(run_one, jobs):
                print({k: result[k] for k in ("model", "sparsity_target", "method", "ceiling", "seed", "test_error",
                                              "sparsest_layer_sparsity", "seconds")}, flush=True)
                runs.append(result)
    payload = {"provenance": prov, "args": vars(args), "runs": runs}
    _, md = write_results(args.name, payload, page(payload))
    print(md.read_text())


if __name__ == "__main__":
    main()
