"""Sweeps that survive being stopped: one JSON per finished run, a killed run resumes from its checkpoint.

A sweep is a *store* folder and a *plan*. The store holds ``results/<name>.json`` for every finished run and
``runs/<name>/`` (the run's own folder: config, checkpoint, metrics) for every started one. ``run_sweep`` asks the
plan which runs are ready (a plan may depend on finished results, e.g. a baseline given as many epochs as ART took),
skips those with a result, resumes those with a checkpoint and starts the rest, ``workers`` at a time in the plan's
order. Started again with the same plan it carries on where it stopped, any number of times. A job may carry
``"start": {"weights": <model.pt>, "mask": <model.pt>}`` (two finished runs' models): its config's ``pretrained``
file is then written first, the one model's weights under the other's zeros, and its result says whether the run
ended with exactly those zeros (``kept_start_mask``).

    results = run_sweep(plan, Path("sweeps/mnist-full"), workers=2)
"""
from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable

from common import code_commit, machine

Plan = Callable[[dict], Iterable[dict]]  # finished results by name -> jobs {"name", "config", "meta"} ready to run


class SweepError(Exception):
    """The store holds something the plan does not match (a result or run made with other settings)."""


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)  # a kill mid-write leaves the old file or none, never half of one


def _outcome(summary: dict) -> dict:
    return {"test_error": 100 * (1 - summary["sparse"]["test_acc"]), "val_acc": summary["sparse"]["val_acc"],
            "sparsity": summary["sparse"]["sparsity"], "epochs": summary["epochs"], "dense": summary["dense"],
            "wall_seconds": sum(summary["phase_seconds"].values())}


def _same_config(run_dir: Path, config: dict) -> bool:
    from hypersparse.config import TrainConfig

    stored = json.loads((run_dir / "config.json").read_text())
    return TrainConfig.from_dict(stored).to_dict() == TrainConfig.from_dict(config).to_dict()


def run_job(job: dict) -> dict:
    """Finish one run in ``job["store"]/runs/<name>``: reuse its summary, resume its checkpoint, or start it."""
    import torch

    torch.set_num_threads(job.get("threads", 1))
    from hypersparse.config import TrainConfig
    from hypersparse.engine import resume, train
    from hypersparse.errors import RunDiverged
    from hypersparse.schedule import ARTDidNotConverge

    store, name = Path(job["store"]), job["name"]
    run_dir = store / "runs" / name
    if run_dir.exists() and (run_dir / "config.json").exists() and not _same_config(run_dir, job["config"]):
        raise SweepError(f"{run_dir} was started with other settings; delete it to rerun {name} with the plan's")
    quiet = open(os.devnull, "w")
    resumed = False
    try:
        if (run_dir / "summary.json").exists():
            summary = json.loads((run_dir / "summary.json").read_text())
        elif (run_dir / "checkpoint.pt").exists():
            summary, resumed = resume(run_dir, progress=False, out=quiet), True
        else:
            shutil.rmtree(run_dir, ignore_errors=True)  # killed before its first checkpoint: start over
            if "start" in job:
                write_start(job["start"], Path(job["config"]["pretrained"]))
            summary = train(TrainConfig.from_dict(job["config"]), run_dir, progress=False, out=quiet)
        result = _outcome(summary)
        if job.get("diagnose"):
            result.update(_diagnostics(run_dir))
        if "start" in job:
            result["kept_start_mask"] = same_mask(Path(job["config"]["pretrained"]), run_dir / "model.pt")
    except (ARTDidNotConverge, RunDiverged) as exc:  # an outcome to report, not a reason to stop the sweep
        result = {"test_error": None, "failed": str(exc)}
    result.update(job["meta"], name=name, config=job["config"], commit=job["commit"], resumed=resumed)
    if "machine" in job:  # a sweep that spans sessions runs on several hosts: each result names its own
        result["machine"] = job["machine"]
    _write_json(store / "results" / f"{name}.json", result)
    return result


def _prunable(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith("weight") and v.dim() >= 2}  # Conv and Linear weights


def write_start(start: dict, out: Path) -> None:
    """A run's starting state_dict: ``start["weights"]``'s model with every prunable weight zeroed where
    ``start["mask"]``'s model has a zero (the weights of one run under the mask of another; both state_dicts)."""
    import torch

    weights = torch.load(start["weights"], map_location="cpu", weights_only=True)
    mask = _prunable(torch.load(start["mask"], map_location="cpu", weights_only=True))
    if set(mask) != set(_prunable(weights)):
        raise SweepError(f"{start['mask']} and {start['weights']} hold different prunable layers")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({k: v * (mask[k] != 0) if k in mask else v for k, v in weights.items()}, tmp)
    os.replace(tmp, out)


def same_mask(start: Path, model: Path) -> bool:
    """Whether a run ended with exactly the zeros it started from (fine-tuning under a fixed mask keeps them)."""
    import torch

    a, b = (_prunable(torch.load(p, map_location="cpu", weights_only=True)) for p in (start, model))
    return set(a) == set(b) and all(torch.equal(a[k] != 0, b[k] != 0) for k in a)


TRACE_KEYS = ("epoch", "phase", "event", "lr", "train_acc", "val_acc", "lambda", "dense_acc", "pruned_acc",
              "buffer_mean", "stop_reason", "chosen_epoch", "past_deadline", "val_acc_after_stop")


def _diagnostics(run_dir: Path) -> dict:
    """The run's epoch trace (ART's lambda, pruned and dense accuracy, the stop) and, per prunable layer of the chosen
    model, its weights kept and its live output units (rows or filters with a kept weight)."""
    import torch

    trace = [{k: row[k] for k in TRACE_KEYS if k in row}
             for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]
    state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    layers = []
    for layer, w in _prunable(state).items():
        nz = w != 0
        layers.append({"name": layer, "shape": list(w.shape), "numel": w.numel(), "kept": int(nz.sum()),
                       "alive_out": int(nz.flatten(1).any(1).sum()), "alive_in": int(nz.transpose(0, 1).flatten(1)
                                                                                     .any(1).sum())})
    return {"trace": trace, "layers": layers}


def load_results(store: Path) -> dict[str, dict]:
    """The finished results of a store, by run name."""
    folder = store / "results"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def published(folder: Path) -> dict[str, dict]:
    """The results committed in a docs folder (one JSON per run, as ``copy_out`` writes them), by run name."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} if folder.exists() else {}


def copy_out(store: Path, folder: Path) -> None:
    """Every finished result of the store into ``folder`` (under docs/runs, for the next commit); never overwrites."""
    folder.mkdir(parents=True, exist_ok=True)
    for run, result in load_results(store).items():
        target = folder / f"{run}.json"
        if not target.exists():
            target.write_text(json.dumps(result, indent=2) + "\n")


def merge(*payloads: dict) -> list[dict]:
    """The runs of several saved sweeps as one list; a run name present twice with different results is an error."""
    runs: dict[str, dict] = {}
    for payload in payloads:
        for r in payload["runs"]:
            if r["name"] in runs and runs[r["name"]] != r:
                raise SweepError(f"run {r['name']} appears twice with different results; merge disjoint sweeps")
            runs[r["name"]] = r
    return list(runs.values())


def run_sweep(plan: Plan, store: Path, workers: int = 2, say: Callable[[str], None] = print) -> dict[str, dict]:
    """Run every job the plan yields until it yields no unfinished one; ``workers=0`` runs them in this process."""
    store = Path(store)
    (store / "results").mkdir(parents=True, exist_ok=True)
    for stale in (store / "results").glob(".*.tmp"):
        stale.unlink()
    results = load_results(store)
    head, host = code_commit(short=True), machine()
    running: dict[str, Future] = {}
    pool = ProcessPoolExecutor(workers) if workers else None
    try:
        while True:
            for job in plan(results):
                if len(running) >= max(workers, 1):
                    break
                name = job["name"]
                if name in results or name in running:
                    if name in results and results[name]["config"] != job["config"]:
                        raise SweepError(f"{store / 'results' / name}.json was made with other settings; delete it "
                                         "(and its run folder) to rerun it")
                    continue
                job = dict(job, store=str(store), commit=head, machine=host)
                say(f"start {name}" + (" (resuming)" if (store / "runs" / name / "checkpoint.pt").exists() else ""))
                if pool is None:
                    results[name] = run_job(job)
                    _report(say, results[name], len(results))
                    break
                running[name] = pool.submit(run_job, job)
            else:
                if not running:
                    return results
            if pool is None:
                continue
            done, _ = wait(running.values(), return_when=FIRST_COMPLETED)
            for name in [n for n, f in running.items() if f in done]:
                results[name] = running.pop(name).result()
                _report(say, results[name], len(results))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _report(say: Callable[[str], None], r: dict, done: int) -> None:
    err = "n/c" if r["test_error"] is None else f"{r['test_error']:.2f} % test error"
    wall = f", {r['wall_seconds']:.0f} s" if "wall_seconds" in r else ""
    say(f"[{done} done] {r['name']}: {err}{wall} ({time.strftime('%H:%M:%S')})")


def add_grid_arguments(ap, store: Path, sparsities: str, docs: Path) -> None:
    """The flags every sweep script shares: data, the grid (sparsities x seeds), workers, store, page, --from-json."""
    ap.add_argument("--data-dir", default=str(docs.parent.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--sparsities", default=sparsities)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default=str(store),
                    help="the sweep's state (results and run folders); keep it to continue later")
    ap.add_argument("--out", default=str(docs))
    ap.add_argument("--from-json", help="rebuild the page from the JSON the script saved beside it")


def grid(args) -> tuple[list[float], list[int]]:
    """The sparsities and seeds of ``add_grid_arguments``' flags."""
    return [float(k) for k in args.sparsities.split(",")], [int(s) for s in args.seeds.split(",")]

