"""ART without hand tuning: stop rule (paper / matched) x initial strength (the authors' fixed 5e-6 / auto).

For each model, sparsity and seed this trains ART + HyperSparse four times and records how long the
regularization phase ran, the lambda_0 it started from, and the final test error of the model chosen on
the validation split. lambda grows by the authors' eta = 1.05 per epoch (no --epochs-scale), so phase
lengths are directly comparable with the authors' schedule; only warm-up and fine-tuning are shortened
(3 and 8 epochs, LR x0.1 after 4 and 6), the same for every row.

Regenerates the "ART settings" section of docs/methods.md and docs/runs/art-settings.json.

    python bench/art_settings.py                    # digits MLP + MNIST LeNet-300-100, kappa 0.98/0.995, 3 seeds
    python bench/art_settings.py --models mnist:lenet5 --seeds 0      # LeNet-5 (slow on CPU)
    python bench/art_settings.py --models mnist:lenet5 --settings paper/auto,matched/auto   # its short runs only
    python bench/art_settings.py --settings matched/auto-adapt,matched/auto-low-adapt   # eta adapted; a 0.02 start
    python bench/art_settings.py --settings matched/auto-adapt --equal-epochs --merge docs/runs/art-settings.json
    python bench/art_settings.py --quick            # digits, one seed, one sparsity: about a minute
    python bench/art_settings.py --from-json docs/runs/art-settings.json   # rebuild the section only
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import mean_std as fmt  # noqa: E402
from common import provenance  # noqa: E402

# lambda settings: the stored "lambda" of a run -> its label and the config it sets (5e-6 = the authors' fixed value)
ADAPT_TARGET, LOW_FRACTION, PUSH = 30, 0.02, 0.02
# auto calibrated on the task gradient (the first auto; --lambda-auto-push 0 until 2bdedd7). The refactor removed that
# calibration and its three flags: its rows on the page are measurements of commit 2bdedd7 and earlier, kept, not rerun
RETIRED = "2bdedd7"
RATIO = {"retired": RETIRED}
VARIANTS = {
    5e-6: ("fixed 5e-6", {"lambda_init": 5e-6}),
    "auto": ("auto", {"lambda_init": "auto", **RATIO}),
    # eta adapted to end the phase in about ADAPT_TARGET epochs (--reg-epochs-target)
    "auto-adapt": (f"auto, η adapted (target {ADAPT_TARGET})",
                   {"lambda_init": "auto", **RATIO, "reg_epochs_target": ADAPT_TARGET}),
    # a gentler start: regularizer gradient norm LOW_FRACTION x the task's instead of 0.1 x
    "auto-low": (f"auto {LOW_FRACTION:g}", {"lambda_init": "auto", **RATIO, "lambda_auto_fraction": LOW_FRACTION}),
    "auto-low-adapt": (f"auto {LOW_FRACTION:g}, η adapted (target {ADAPT_TARGET})",
                       {"lambda_init": "auto", **RATIO, "lambda_auto_fraction": LOW_FRACTION,
                        "reg_epochs_target": ADAPT_TARGET}),
    # the 0.1 divided by sqrt(steps per epoch / 25) (--lambda-auto-per epoch): 0.11 on digits, 0.017 on MNIST
    "auto-epoch": ("auto per epoch", {"lambda_init": "auto", **RATIO, "lambda_auto_per": "epoch"}),
    "auto-epoch-adapt": (f"auto per epoch, η adapted (target {ADAPT_TARGET})",
                         {"lambda_init": "auto", **RATIO, "lambda_auto_per": "epoch",
                          "reg_epochs_target": ADAPT_TARGET}),
    # the same with lambda_0 measured on 64 batches instead of 4 (digits has 21 per epoch: all of them)
    "auto-epoch-adapt-64": (f"auto per epoch on 64 batches, η adapted (target {ADAPT_TARGET})",
                            {"lambda_init": "auto", **RATIO, "lambda_auto_per": "epoch", "lambda_auto_batches": 64,
                             "reg_epochs_target": ADAPT_TARGET}),
    # lambda_0 from the weights: the regularizer alone shrinks the weight at the cut by P per epoch
    # (--lambda-auto-push P)
    **{f"auto-push{'' if p == PUSH else f'-{p:g}'}{'-adapt' if t else ''}":
       (f"auto push {p:g}" + (f", η adapted (target {t})" if t else ""),
        {"lambda_init": f"auto:{p:g}", **({"reg_epochs_target": t} if t else {})})
       for p in (PUSH, 0.03, 0.04, 0.06) for t in (0, ADAPT_TARGET)},
}
AUTO = [v for v in VARIANTS if v != 5e-6]
# with --equal-epochs: an auto setting again, fine-tuning lengthened to the fixed-lambda run's total epochs
EQUAL = "-equal"
# with --equal-epochs warmup: the spare epochs go to warm-up instead (for settings with a deadline, which bounds the
# phase)
EQUAL_WARMUP = "-equal-warmup"
SETTINGS = [("paper", 5e-6), ("paper", "auto"), ("matched", 5e-6), ("matched", "auto")]  # the default sweep
ORDER = [(c, lam) for c in ("paper", "matched")
         for lam in [5e-6] + [x for v in AUTO for x in (v, v + EQUAL, v + EQUAL_WARMUP)]]
SCHEDULE = dict(warmup_epochs=3, finetune_epochs=8, lr_steps="4,6", max_reg_epochs=150)
MODEL_LR = {"lenet5": 0.01}  # no batch norm: at the default 0.1 its MNIST warm-up diverges (bench/mnist_sweep.py)
BEGIN, END = "<!-- art-settings:begin -->", "<!-- art-settings:end -->"


def variant(lam):
    """The VARIANTS key of a stored "lambda" (an equal-epochs rerun shares its auto setting's)."""
    return lam if lam == 5e-6 else str(lam).removesuffix(EQUAL_WARMUP).removesuffix(EQUAL)


def at_deadline(run: dict) -> bool:
    """Whether --reg-epochs-target ended the phase before the stop rule held."""
    return (run.get("stop") or {}).get("stop_reason") == "deadline"


def label(criterion, lam) -> str:
    equal = {EQUAL: ", equal epochs", EQUAL_WARMUP: ", equal epochs by a longer warm-up"}
    return f"{criterion} / {VARIANTS[variant(lam)][0]}{next((v for k, v in equal.items() if str(lam).endswith(k)), '')}"


def run_one(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    from hypersparse.config import TrainConfig
    from hypersparse.engine import train
    from hypersparse.run_read import METRICS, read_jsonl
    from hypersparse.schedule import ARTDidNotConverge

    cfg = TrainConfig.from_dict(job["config"])
    t0 = time.perf_counter()
    result = dict(job["meta"])
    try:
        summary = train(cfg, job["run_dir"], progress=False, out=open(os.devnull, "w"))
        rows = read_jsonl(Path(job["run_dir"]) / METRICS)
        reg = [r for r in rows if r["phase"] == "regularize"]
        result.update(
            test_error=100 * (1 - summary["sparse"]["test_acc"]), val_acc=summary["sparse"]["val_acc"],
            sparsity=summary["sparse"]["sparsity"], epochs=summary["epochs"], dense=summary["dense"],
            lambda_init=reg[0]["lambda_init"] if reg else None, lambda_end=reg[-1]["lambda"] if reg else None,
            stop=reg[-1] if reg else None,
        )
    except ARTDidNotConverge as exc:
        result.update(test_error=None, failed=str(exc))
    result["wall_seconds"] = time.perf_counter() - t0
    return result


def jobs_for(args, root) -> list[dict]:
    jobs = []
    for spec in args.models.split(","):
        dataset, model = spec.split(":")
        data_dir = None if dataset == "digits" else str(Path(args.data_root) / dataset)
        for kappa in args.sparsities:
            for seed in args.seeds:
                for criterion, lam in args.settings:
                    if "retired" in VARIANTS[variant(lam)][1]:
                        raise SystemExit(f"setting {lam}: the task-gradient calibration was removed after commit "
                                         f"{RETIRED}; check that commit out to rerun it")
                    config = dict(dataset=dataset, data_dir=data_dir, model=model, sparsity=kappa, seed=seed,
                                  criterion=criterion, **SCHEDULE, **VARIANTS[variant(lam)][1])
                    if model in MODEL_LR:
                        config["lr"] = MODEL_LR[model]
                    if str(lam).endswith(EQUAL_WARMUP):
                        config.update(equal_warmup(args.previous, dataset, model, kappa, seed, criterion,
                                                   variant(lam)))
                    elif str(lam).endswith(EQUAL):
                        config.update(equal_schedule(args.previous, dataset, model, kappa, seed, criterion,
                                                                 variant(lam)))
                    name = f"{dataset}-{model}-{kappa}-{seed}-{criterion}-{lam}"
                    jobs.append({"config": config, "run_dir": str(Path(root) / name), "threads": args.threads,
                                 "meta": {"dataset": dataset, "model": model, "kappa": kappa, "seed": seed,
                                          "criterion": criterion, "lambda": lam}})
    # the long (fixed-lambda or equal-epochs, MNIST) runs first, so the two workers finish together
    return sorted(jobs, key=lambda j: (j["meta"]["dataset"] == "digits",
                                       j["meta"]["lambda"] != 5e-6 and EQUAL not in str(j["meta"]["lambda"])))


def find_run(runs: list[dict], dataset, model, kappa, seed, criterion, lam) -> dict:
    for r in runs:
        if (r["dataset"], r["model"], r["kappa"], r["seed"], r["criterion"], r["lambda"]) == \
                (dataset, model, kappa, seed, criterion, lam) and r["test_error"] is not None:
            return r
    raise SystemExit(f"--equal-epochs: no finished {criterion}/{lam} run for {dataset} {model} {kappa} seed {seed}")


def equal_warmup(runs: list[dict], dataset, model, kappa, seed, criterion, auto_setting) -> dict:
    """Warm-up long enough that the run, whose phase the deadline ends by ADAPT_TARGET epochs, trains at most as
    many epochs in all as the fixed-lambda run (fine-tuning as in SCHEDULE)."""
    if "reg_epochs_target" not in VARIANTS[auto_setting][1]:
        raise SystemExit(f"--equal-epochs warmup needs a setting with a deadline (η adapted), not {auto_setting}")
    fixed = find_run(runs, dataset, model, kappa, seed, criterion, 5e-6)
    return {"warmup_epochs": sum(fixed["epochs"].values()) - ADAPT_TARGET - SCHEDULE["finetune_epochs"]}


def equal_schedule(runs: list[dict], dataset, model, kappa, seed, criterion, auto_setting="auto") -> dict:
    """Fine-tuning long enough that the auto run trains as many epochs in all as the fixed-lambda run.

    The auto run's regularization length is taken from its earlier run: runs are deterministic for a seed
    (the rerun's own length is recorded and checked on the page).
    """
    fixed = find_run(runs, dataset, model, kappa, seed, criterion, 5e-6)
    auto = find_run(runs, dataset, model, kappa, seed, criterion, auto_setting)
    finetune = sum(fixed["epochs"].values()) - auto["epochs"]["warmup"] - auto["epochs"]["regularize"]
    return {"finetune_epochs": finetune, "lr_steps": f"{round(finetune / 2)},{round(3 * finetune / 4)}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="digits:mlp,mnist:lenet300", help="comma-separated dataset:model pairs")
    ap.add_argument("--sparsities", default="0.98,0.995")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--settings", default="paper/fixed,paper/auto,matched/fixed,matched/auto",
                    help="which rule/lambda pairs to run (a slow model can run its short auto runs first)")
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--quick", action="store_true",
                    help="digits, seed 0, kappa 0.98 only; writes docs/art-settings-quick.md")
    ap.add_argument("--merge", help="a runs JSON whose runs are kept beside the new ones (another model, more seeds)")
    ap.add_argument("--equal-epochs", nargs="?", const="finetune", choices=("finetune", "warmup"),
                    help="rerun the auto settings among --settings at the fixed runs' total epochs: with fine-tuning "
                    "lengthened (LR x0.1 at 1/2 and 3/4 of it), or with 'warmup' the warm-up (η-adapted settings "
                    f"only: the deadline bounds the phase at {ADAPT_TARGET} epochs, so the total is at most the fixed "
                    "run's); needs --merge with the first sweep's JSON")
    ap.add_argument("--from-json", help="rebuild the docs section from saved runs JSON, without training; several "
                    "comma-separated files (sweeps run side by side) are combined, each run counted once")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    out = Path(args.out)
    if args.from_json:
        publish(combine([json.loads(Path(f).read_text()) for f in args.from_json.split(",")]), out)
        return
    if args.quick:
        args.models, args.sparsities, args.seeds = "digits:mlp", "0.98", "0"
    args.sparsities = [float(k) for k in args.sparsities.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    by_name = {f"{c}/{'fixed' if lam == 5e-6 else lam}": (c, lam) for c in ("paper", "matched") for lam in VARIANTS}
    unknown = [s for s in args.settings.split(",") if s not in by_name]
    if unknown:
        ap.error(f"unknown --settings {', '.join(unknown)}; choose from {', '.join(by_name)}")
    args.settings = [by_name[s] for s in args.settings.split(",")]
    if args.equal_epochs:  # the auto settings again, at the fixed runs' total epochs
        suffix = EQUAL_WARMUP if args.equal_epochs == "warmup" else EQUAL
        args.settings = [(c, lam + suffix) for c, lam in args.settings if lam != 5e-6]
    payload = {"provenance": provenance(seed=args.seeds[0]), "quick": args.quick, "schedule": SCHEDULE,
               "threads_per_run": args.threads, "workers": args.workers, "runs": [], "wall_seconds": {}}
    if args.equal_epochs and not args.merge:
        ap.error("--equal-epochs needs --merge docs/runs/art-settings.json")
    if args.merge:
        payload = combine([payload, json.loads(Path(args.merge).read_text())])
    args.previous = payload["runs"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root, ProcessPoolExecutor(args.workers) as pool:
        jobs = jobs_for(args, root)
        for i, r in enumerate(pool.map(run_one, jobs), 1):
            payload["runs"] = [x for x in payload["runs"] if key(x) != key(r)] + [r]  # a rerun replaces a merged run
            print(f"{i}/{len(jobs)} {r['dataset']} {r['model']} {r['kappa']} seed {r['seed']} "
                  f"{label(r['criterion'], r['lambda'])}: reg {r.get('epochs', {}).get('regularize')} epochs, "
                  f"test error {r['test_error']} ({r['wall_seconds']:.0f}s)", flush=True)
            payload["wall_seconds"][args.models] = time.perf_counter() - started
            save(payload, out)  # progress survives a crash
    publish(payload, out)


def key(run: dict) -> tuple:
    return run["dataset"], run["model"], run["kappa"], run["seed"], run["criterion"], str(run["lambda"])


def combine(payloads: list[dict]) -> dict:
    """The first payload with the others' runs and provenance added; a run present in several counts once."""
    out = dict(payloads[0], runs=list(payloads[0]["runs"]), merged_from=list(payloads[0].get("merged_from", [])))
    seen = {key(r) for r in out["runs"]}
    origins = {(p["commit"], p["command"]) for p in out["merged_from"] + [out["provenance"]]}
    for other in payloads[1:]:
        out["runs"] += [r for r in other["runs"] if key(r) not in seen]
        seen |= {key(r) for r in other["runs"]}
        for prov in other.get("merged_from", []) + [other["provenance"]]:
            if (prov["commit"], prov["command"]) not in origins:
                out["merged_from"].append(prov)
                origins.add((prov["commit"], prov["command"]))
    return out


def save(payload: dict, out: Path) -> Path:
    path = out / "runs" / ("art-settings-quick.json" if payload["quick"] else "art-settings.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def section(payload: dict) -> str:
    runs, prov = payload["runs"], payload["provenance"]
    sched = payload["schedule"]
    lines = [
        "## ART settings: stop rule and initial strength\n",
        f"Generated by `{prov['command']}` (commit `{prov['commit']}`, {prov['date']}; {prov['machine']}; "
        f"torch {prov['torch']}; runs side by side: {payload['workers']}, {payload['threads_per_run']} thread each)"
        + "".join(f"; merged with `{p['command']}` (commit `{p['commit']}`, {p['machine']})"
                  for p in payload.get("merged_from", []))
        + ". A seed's run repeats bit for bit on one CPU model, not across models: their kernels round differently "
        "(the machines are named above).\n",
        f"ART + HyperSparse, λ × 1.05 per regularization epoch (the authors' η, not shortened); warm-up "
        f"{sched['warmup_epochs']} and fine-tuning {sched['finetune_epochs']} epochs (LR ×0.1 after "
        f"{sched['lr_steps'].replace(',', ' and ')}), shortened from the authors' 60 and 160 and the same for every "
        f"row; at most {sched['max_reg_epochs']} regularization epochs ('n/c' = not converged). "
        "*fixed* is the authors' λ_0 = 5e-6; *auto* is `--lambda-init auto --lambda-auto-push 0` (regularizer gradient "
        "norm = 0.1 × task gradient norm at the first regularization step; auto's calibration before the push one). "
        "Test error in % of the model chosen on the validation split, "
        "mean ± std over seeds; 'reg. epochs' is the length of the regularization phase. *equal epochs* reruns an "
        "auto setting with fine-tuning lengthened so that each run trains as many epochs in all as the fixed-λ run of "
        "the same seed and rule (LR ×0.1 at 1/2 and 3/4 of fine-tuning); *equal epochs by a longer warm-up* instead "
        f"lengthens warm-up to the fixed run's total minus {ADAPT_TARGET} (the deadline) minus fine-tuning, so the "
        "run trains at most as many epochs as the fixed one unless its phase runs past the deadline. "
        "The dense column is the model at the end of warm-up, the point where ART starts, not a fully trained dense "
        f"network. *η adapted* adds `--reg-epochs-target {ADAPT_TARGET}`: once half of those epochs are spent, after "
        "each epoch λ's log-growth is "
        "scaled by the pace the gap between dense accuracy and buffer mean needs (gap / epochs left) over the pace it "
        "had (its slope over the last 4 epochs), between ×1.05 and ×1.5 per epoch; and if the stop rule has not held "
        f"by epoch {ADAPT_TARGET}, the buffer's middle model is kept anyway once the pruned copy has come half-way to "
        "the dense accuracy (a *deadline* stop, counted in the reg. "
        "epochs column and marked † in the list of runs; runs made before the deadline existed ran on). "
        f"*auto {LOW_FRACTION:g}* is auto with `--lambda-auto-fraction {LOW_FRACTION:g}` (a 5× gentler start). "
        "*auto per epoch* is auto with `--lambda-auto-per epoch` (the 0.1 divided by √(steps per epoch / 25)); "
        "*on 64 batches* adds `--lambda-auto-batches 64` (the task gradient norm averaged over 64 batches, not 4). "
        "*auto push P* is auto with `--lambda-auto-push P`: λ_0 such that the regularizer alone would shrink the "
        "weight at the pruning cut by the fraction P of itself per epoch (read from the weights, not the task "
        "gradient)."
        + "".join(f" {m} trains at lr {lr:g}, not 0.1, which diverges." for m, lr in MODEL_LR.items()
                  if any(r.get("model") == m for r in runs)) + "\n",
    ]
    groups = sorted({(r["dataset"], r["model"], r["kappa"]) for r in runs}, key=lambda g: (g[0] != "digits", g))
    lines += ["| data | model | κ | setting | reg. epochs | total epochs | λ_0 | test error % "
              "| dense after warm-up, test error % | seeds |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for dataset, model, kappa in groups:
        for criterion, lam in ORDER:
            cell = [r for r in runs if (r["dataset"], r["model"], r["kappa"], r["criterion"], r["lambda"])
                    == (dataset, model, kappa, criterion, lam)]
            if not cell:
                continue
            ok = [r for r in cell if r["test_error"] is not None]
            reg = fmt([r["epochs"].get("regularize") for r in ok], 1)
            deadline = sum(1 for r in ok if at_deadline(r))
            reg += f" ({deadline} deadline)" if deadline else ""
            total = fmt([sum(r["epochs"].values()) for r in ok], 1)
            lam0 = "5e-6" if not str(lam).startswith("auto") else (
                " – ".join(f"{v:.2g}"
                           for v in sorted({min(r["lambda_init"] for r in ok), max(r["lambda_init"] for r in ok)}))
                if ok else "-")
            dense = fmt([100 * (1 - r["dense"]["test_acc"]) for r in ok if r.get("dense")])
            failed = len(cell) - len(ok)
            lines.append(f"| {dataset} | {model} | {kappa:g} | {label(criterion, lam)} | {reg} | {total} | {lam0} | "
                         f"{fmt([r['test_error'] for r in ok])}{f' ({failed} n/c)' if failed else ''} | {dense} | "
                         f"{len(cell)} |")
    lines += ["", "<details><summary>every run</summary>\n",
              "| data | model | κ | seed | setting | reg. epochs | λ_0 | λ at stop | test error % | wall s |",
              "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (r["dataset"], r["model"], r["kappa"], r["criterion"], str(r["lambda"]),
                                         r["seed"])):
        ok = r["test_error"] is not None
        head = (f"| {r['dataset']} | {r['model']} | {r['kappa']:g} | {r['seed']} | "
                f"{label(r['criterion'], r['lambda'])} | ")
        lines.append(head + f"{r['epochs'].get('regularize')}{' †' if at_deadline(r) else ''} | "
                     f"{r['lambda_init']:.2g} | {r['lambda_end']:.2g} | " if ok else
                     head + "n/c | - | - | ")
        lines[-1] += f"{r['test_error']:.2f} | {r['wall_seconds']:.0f} |" if ok else f"n/c | {r['wall_seconds']:.0f} |"
    lines += ["\n</details>\n", "Raw results: [runs/art-settings.json](runs/art-settings.json).\n"]
    return "\n".join(lines)


def publish(payload: dict, out: Path) -> None:
    save(payload, out)
    text = section(payload)
    if payload["quick"]:
        (out / "art-settings-quick.md").write_text(text)
        print(f"wrote {out / 'art-settings-quick.md'}")
        return
    page = out / "methods.md"
    old = page.read_text() if page.exists() else ""
    if BEGIN not in old:
        old += f"\n{BEGIN}\n{END}\n"
    head, _, rest = old.partition(BEGIN)
    _, _, tail = rest.partition(END)
    page.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"wrote the ART settings section of {page}")


if __name__ == "__main__":
    main()
