"""Mask or starting weights: which one carries GMP's lead over ART + HyperSparse on the CIFAR-10-JPEG75 MLP?

bench/beyond_mnist.py finds ART + HyperSparse behind GMP on LeNet-300-100's MLP on CIFAR-10-JPEG75 (a lossy JPEG-75
copy of CIFAR-10), and no default of ours closes the gap. When fine-tuning starts, the two differ in two things: the
mask (which weights are kept) and the kept weights' values. This bench separates them. Per sparsity and seed, at
the sweep's quarter schedule and settings (bench/beyond_setup.py):

* ``art-stop``: ART + HyperSparse with the defaults, up to its stop (no fine-tuning): its pruned copy at the stop,
  the network its fine-tuning starts from; ``auto-stop`` the same with λ_0 auto;
* ``gmp-stop``: GMP at that ART run's budget, up to the end of its pruning epochs; ``gmp-auto-stop`` the same at the
  λ_0 auto run's budget;
* ``warmup``: the dense warm-up alone (15 epochs, once per seed): the weights both methods start from;
* six fine-tunings of 40 epochs (LR ×0.1 after 20 and 30) under a fixed mask, from ``art-own`` (ART's own start),
  ``gmp-own`` (GMP's own start), and the warm-up's weights under ART's, GMP's, λ_0 auto's and GMP's at λ_0 auto's
  budget masks (``warmup-art-mask``, ``warmup-gmp-mask``, ``warmup-auto-mask``, ``warmup-gmp-auto-mask``).

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
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from beyond_setup import EXPERIMENTS, SCHEDULE, VARIANTS, budget, reg_epochs  # noqa: E402
from common import mean_std, provenance  # noqa: E402
from sweep import copy_out, load_results, published, run_sweep  # noqa: E402

DOCS = ROOT / "docs"
EXPERIMENT = "mlp-cifar10jpeg75"
#: the fine-tunings: where each starts, as (run whose weights, run whose mask)
ARMS = {"art-own": ("art-stop", "art-stop"), "gmp-own": ("gmp-stop", "gmp-stop"),
        "warmup-art-mask": ("warmup", "art-stop"), "warmup-gmp-mask": ("warmup", "gmp-stop"),
        "warmup-auto-mask": ("warmup", "auto-stop"), "warmup-gmp-auto-mask": ("warmup", "gmp-auto-stop")}
STOPS = {"art-stop": VARIANTS["art-hs"], "auto-stop": VARIANTS["art-hs-auto"]}


def name(exp: str, sparsity: float, arm: str, seed: int) -> str:
    return f"{exp}-{sparsity:g}-{arm}-s{seed}" if arm != "warmup" else f"{exp}-warmup-s{seed}"


def plan_for(sparsities: list[float], seeds: list[int], store: Path, exp: str = EXPERIMENT):
    """Seed by seed: the warm-up, ART's stops, GMP at ART's budget, λ_0 auto's stops, then each fine-tuning once its
    inputs' model files are in the store."""
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
            for k in sparsities:  # GMP at λ_0 auto's own budget: its mask against auto's at equal epochs
                auto = results.get(name(exp, k, "auto-stop", seed))
                if auto is not None and auto["test_error"] is not None:
                    yield job(k, "gmp-auto-stop", seed, sparsity=k, method="gmp",
                              prune_epochs=budget(reg_epochs(auto)), finetune_epochs=0)
            for k in sparsities:
                for arm, (weights, mask) in ARMS.items():
                    w, m = (model(results, name(exp, k, run, seed)) for run in (weights, mask))
                    if w is None or m is None:
                        continue
                    pretrained = store / "starts" / f"{name(exp, k, arm, seed)}.pt"
                    yield dict(job(k, arm, seed, sparsity=k, method="oneshot", prune_epochs=0,
                                   pretrained=str(pretrained)), start={"weights": str(w), "mask": str(m)})
    return plan


#: the four fine-tunings the split needs, seed by seed
SPLIT_ARMS = ("art-own", "gmp-own", "warmup-art-mask", "warmup-gmp-mask")


def arms_of(runs: list[dict], k: float, complete: bool = False) -> dict[str, dict[int, dict]]:
    """The finished fine-tunings at sparsity ``k``, by arm and seed; with ``complete``, only the seeds where all four
    of the split's arms finished."""
    out: dict[str, dict[int, dict]] = {arm: {} for arm in ARMS}
    for r in runs:
        if r["sparsity"] == k and r["method"] in ARMS and r["test_error"] is not None:
            out[r["method"]][r["seed"]] = r
    if complete:
        seeds = set.intersection(*(set(out[arm]) for arm in SPLIT_ARMS))
        out = {arm: {s: r for s, r in by.items() if s in seeds or arm not in SPLIT_ARMS} for arm, by in out.items()}
    return out


def paired(arms: dict[str, dict[int, dict]], a: str, b: str, at_start: bool = False) -> list[float]:
    """Validation accuracy of arm ``a`` minus arm ``b``, seed by seed (seeds where both finished), in points: of the
    chosen model, or with ``at_start`` of the network fine-tuning started from."""
    def acc(r):
        return r["dense"]["val_acc"] if at_start else r["val_acc"]
    return [100 * (acc(arms[a][s]) - acc(arms[b][s])) for s in sorted(arms[a]) if s in arms[b]]


def signed(values: list[float]) -> str:
    """A difference in points, 'mean ± std' with its sign."""
    return mean_std(values, sign=True)


@dataclass
class Split:
    """GMP's lead over ART at one sparsity, split in two: the masks' from equal (warm-up) weights, and the starting
    weights' (each method's own start against the warm-up's weights under its mask); points of validation accuracy,
    seed by seed."""
    k: float
    gap: list[float]
    mask: list[float]
    art_weights: list[float]
    gmp_weights: list[float]
    auto_mask: list[float]

    @classmethod
    def measure(cls, runs: list[dict], k: float) -> Split:
        arms = arms_of(runs, k, complete=True)
        return cls(k, gap=paired(arms, "gmp-own", "art-own"), mask=paired(arms, "warmup-gmp-mask", "warmup-art-mask"),
                   art_weights=paired(arms, "art-own", "warmup-art-mask"),
                   gmp_weights=paired(arms, "gmp-own", "warmup-gmp-mask"),
                   auto_mask=paired(arms, "warmup-gmp-auto-mask", "warmup-auto-mask"))

    @property
    def rest(self) -> list[float]:
        """The starting weights' part of the gap, seed by seed: GMP's own weights' effect minus ART's."""
        return [g - m for g, m in zip(self.gap, self.mask)]

    @property
    def share(self) -> float | None:
        """The masks' part as a share of the gap (mean over seeds); None without a gap."""
        gap = statistics.mean(self.gap) if self.gap else 0.0
        return statistics.mean(self.mask) / gap if gap > 0 and self.mask else None

    @property
    def carrier(self) -> str | None:
        """Which part carries the gap: 'the mask' where the masks' part stands beyond its seeds' spread and is at
        least three quarters of the gap, 'the starting weights' the same way round, 'both' where a part stands beyond
        its spread but neither is three quarters, 'neither', or 'one seed' (undecided); None until measured."""
        if not self.gap or not self.mask:
            return None
        if len(self.mask) < 2:
            return "one seed"
        mask = statistics.mean(self.mask) > statistics.stdev(self.mask)
        rest = abs(statistics.mean(self.rest)) > statistics.stdev(self.rest)
        share = self.share
        if mask and share is not None and share >= MOST:
            return "the mask"
        if rest and share is not None and 1 - share >= MOST:
            return "the starting weights"
        return "both" if mask or rest else "neither"


#: the share of the gap a part must carry to be named its carrier
MOST = 0.75
#: the split's conclusion, by carrier (after a colon; ``{share}`` the masks' share of the gap)
CARRIES = {"the mask": "the mask carries the gap (the masks' part stands beyond its seeds' spread and is {share} of "
                       "the gap)",
           "the starting weights": "the starting weights carry the gap, not the mask (the masks' part is {share} of "
                                   "it)",
           "both": "the mask and the starting weights each carry part of the gap (the masks' part is {share} of it)",
           "neither": "neither part stands beyond its seeds' spread",
           "one seed": "one seed so far, too few to say which part carries the gap"}


def units(r: dict) -> str:
    """The first prunable layer's output units with a kept weight, as 'alive/all'."""
    first = r["layers"][0]
    return f"{first['alive_out']}/{first['shape'][0]}"


def section(runs: list[dict], sparsities: list[float], machine: dict) -> str:
    """The page section: settings and provenance, every arm's accuracy, the split, and what it says."""
    commits = sorted({r["commit"] for r in runs}) or ["-"]
    seeds = sorted({r["seed"] for r in runs})
    lines = ["## Mask or starting weights: GMP's lead over ART + HyperSparse on the CIFAR-10-JPEG75 MLP\n",
             f"Made by `python bench/mask_swap.py` (runs at commit{'s' if len(commits) > 1 else ''} "
             f"{', '.join(f'`{c}`' for c in commits)}) on {machine['machine']}, torch {machine['torch']}, "
             f"{machine.get('workers', '?')} runs side by side, one thread each; "
             f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds)) or '-'}. "
             "The MLP of the section above "
             "on CIFAR-10-JPEG75 (a lossy JPEG-75 copy of CIFAR-10), its settings and quarter schedule. ART + "
             "HyperSparse (defaults, and λ_0 auto) runs to its stop and GMP through as many pruning epochs; the "
             "dense warm-up (15 epochs) runs alone. Then each arm fine-tunes 40 epochs (LR ×0.1 after 20 and 30) "
             "under a fixed mask, from one run's weights under one run's mask; the model is chosen on validation. "
             "From the warm-up's weights, two arms differ by their masks alone; each method's own start against the "
             "warm-up's weights under the same mask is the effect of the weights it starts from (weights "
             "that also trained through the middle phase's epochs). Validation "
             "accuracy decides; test error is shown after it (mean ± std over seeds; first-layer units alive seed by "
             "seed).\n"]
    kept = [r for r in runs if r["method"] in ARMS]
    if kept:
        lost = [r["name"] for r in kept if not r.get("kept_start_mask")]
        lines.append(("Every fine-tuning ended with exactly the zeros it started from. " if not lost else
                      f"**These fine-tunings did not keep their starting zeros**: {', '.join(lost)}. ")
                     + warmups(runs) + " " + stops(runs, sparsities) + "\n")
    lines += ["| sparsity | start of fine-tuning: weights × mask | validation accuracy at the start | validation "
              "accuracy, chosen model | test error % | first-layer units alive |", "|---|---|---:|---:|---:|---:|"]
    what = {"art-own": "ART's own (its pruned copy at the stop)", "gmp-own": "GMP's own (after its pruning epochs)",
            "warmup-art-mask": "warm-up × ART's mask", "warmup-gmp-mask": "warm-up × GMP's mask",
            "warmup-auto-mask": "warm-up × λ_0 auto's mask",
            "warmup-gmp-auto-mask": "warm-up × GMP's mask at λ_0 auto's budget"}
    for k in sparsities:
        for arm, by_seed in arms_of(runs, k).items():
            rs = [by_seed[s] for s in sorted(by_seed)]
            if not rs:
                continue
            lines.append(f"| {100 * k:g} % | {what[arm]} | {mean_std([100 * r['dense']['val_acc'] for r in rs])}"
                         f" | {mean_std([100 * r['val_acc'] for r in rs])} | "
                         f"{mean_std([r['test_error'] for r in rs])} | {', '.join(units(r) for r in rs)} |")
    lines += ["", "The split (points of validation accuracy of the chosen model, mean ± std over seeds, seed by seed "
              "paired):\n", "| sparsity | GMP's lead, own starts | masks alone (warm-up weights) | ART's own weights "
              "| GMP's own weights | GMP's mask over λ_0 auto's, both at λ_0 auto's budget (warm-up weights) "
              "| carried by |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for k in sparsities:
        s = Split.measure(runs, k)
        cols = [s.gap, s.mask, s.art_weights, s.gmp_weights, s.auto_mask]
        lines.append(f"| {100 * k:g} % | " + " | ".join(signed(c) if c else "-" for c in cols)
                     + f" | {s.carrier or 'not measured yet'} |")
    lines += ["", "GMP's lead between own starts is the masks' part plus GMP's own weights' part minus ART's. "
              + " ".join(filter(None, (verdict(runs, k) for k in sparsities))) + "\n",
              "Raw results: [runs/mask-swap/](runs/mask-swap/).\n"]
    return "\n".join(lines)


def verdict(runs: list[dict], k: float, variant: str = "art-hs", table_gap: float | None = None) -> str | None:
    """What the split says at sparsity ``k`` for an ART variant (``art-hs`` or ``art-hs-auto``), in sentences; None
    until measured. ``table_gap`` is GMP's lead on validation in bench/beyond_mnist.py's table (for λ_0 auto: at
    auto's own budget), in points, set beside the lead measured here."""
    s = Split.measure(runs, k)
    arms = arms_of(runs, k, complete=True)
    acc = {arm: statistics.mean(100 * r["val_acc"] for r in by_seed.values()) for arm, by_seed in arms.items()
           if by_seed}
    alive = {arm: statistics.mean(r["layers"][0]["alive_out"] for r in by_seed.values())
             for arm, by_seed in arms.items() if by_seed}
    if variant == "art-hs-auto":
        if not s.auto_mask:
            return None
        n, mean = len(s.auto_mask), statistics.mean(s.auto_mask)
        text = (f"At {100 * k:g} % ({n} seed{'s' if n > 1 else ''}), from the same warm-up weights, GMP's mask at λ_0 "
                f"auto's own budget reaches {acc['warmup-gmp-auto-mask']:.2f} % validation accuracy and λ_0 auto's "
                f"{acc['warmup-auto-mask']:.2f} % ({signed(s.auto_mask)} points; the starting weights' part was not "
                f"measured for λ_0 auto). λ_0 auto's mask keeps {alive['warmup-auto-mask']:.0f} first-layer units "
                f"alive, GMP's {alive['warmup-gmp-auto-mask']:.0f}.")
        if table_gap is None or table_gap <= 0:
            return text
        return text + (f" GMP's lead at that budget in the table is {table_gap:.2f} points on validation; the masks "
                       f"alone give {100 * mean / table_gap:.0f} % of it.")
    if s.carrier is None:
        return None
    n = len(s.mask)
    table = (f" (in the table, on validation: {table_gap:.2f}; its runs fine-tune on within the run that pruned, these "
             "start afresh from the saved network)" if table_gap is not None else "")
    start = paired(arms, "gmp-own", "art-own", at_start=True)
    text = (f"At {100 * k:g} % ({n} seed{'s' if n > 1 else ''}), GMP's own network starts fine-tuning "
            f"{signed(start)} points of validation accuracy ahead of ART's and ends {signed(s.gap)} ahead{table}; "
            f"from the same warm-up weights, GMP's mask reaches {acc['warmup-gmp-mask']:.2f} % and ART's "
            f"{acc['warmup-art-mask']:.2f} % ({signed(s.mask)} points), and starting from each method's own weights "
            f"instead, under the same mask, adds {signed(s.art_weights)} (ART) and {signed(s.gmp_weights)} (GMP): "
            + CARRIES[s.carrier].format(share=f"{100 * s.share:.0f} %" if s.share is not None else "-") + ".")
    shape = arms["warmup-art-mask"][min(arms["warmup-art-mask"])]["layers"][0]["shape"][0]
    return text + (f" ART's mask keeps {alive['warmup-art-mask']:.0f} of {shape} first-layer units alive, GMP's "
                   f"{alive['warmup-gmp-mask']:.0f}.")


def warmups(runs: list[dict]) -> str:
    """Whether every run of a seed warmed up alike (the validation accuracy of each warm-up epoch), as a sentence:
    the split pairs runs of one seed, so their shared warm-up is what makes the warm-up's weights theirs too."""
    differ, missing, epochs = [], [], set()
    for seed in sorted({r["seed"] for r in runs}):
        traces = {r["name"]: [row["val_acc"] for row in r.get("trace", []) if row.get("phase") == "warmup"]
                  for r in runs if r["seed"] == seed and r["method"] not in ARMS}
        reference = traces.get(name(EXPERIMENT, 0.0, "warmup", seed))
        if not reference:
            missing.append(str(seed))
            continue
        epochs.add(len(reference))
        differ += [n for n, t in traces.items() if t != reference]
    if missing:
        return f"**No warm-up run to check the others against for seed {', '.join(missing)}.**"
    if differ:
        return f"**These runs warmed up unlike their seed's warm-up run**: {', '.join(sorted(differ))}."
    return ("Every run of a seed that trains a warm-up (the warm-up alone, ART's and GMP's stops) warmed up alike: the "
            f"same validation accuracy after each of the {'/'.join(map(str, sorted(epochs)))} epochs.")


def stops(runs: list[dict], sparsities: list[float]) -> str:
    """The stops' regularization or pruning epochs, seed by seed: these runs are the table's ART and GMP runs made
    again up to the end of their middle phase, so they stop where they stop, not where the table's runs did."""
    parts = []
    for k in sparsities:
        by = {m: "/".join(str(reg_epochs(r)) for r in sorted(runs, key=lambda r: r["seed"])
                          if r["sparsity"] == k and r["method"] == m) for m in ("art-stop", "auto-stop")}
        if by["art-stop"]:
            parts.append(f"{100 * k:g} %: ART {by['art-stop']}, λ_0 auto {by['auto-stop'] or '-'}")
    return ("The stops are the table's ART runs made again up to the end of their middle phase, with their own "
            f"regularization epochs (seeds in order; {'; '.join(parts)}), and GMP given as many.") if parts else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparsities", default="0.98,0.995")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store", default=str(ROOT / "bench" / "store" / "mask-swap"),
                    help="the sweep's state (results, run folders, starting files); keep it until the sweep ends")
    ap.add_argument("--docs", default=str(DOCS), help="the docs folder: runs/mask-swap/ holds the finished results")
    ap.add_argument("--publish-only", action="store_true", help="write the page section from docs/runs/mask-swap/")
    ap.add_argument("--dry-run", action="store_true", help="list the runs that are ready, train nothing")
    args = ap.parse_args()
    sparsities = [float(k) for k in args.sparsities.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    store, docs = Path(args.store), Path(args.docs)
    plan = plan_for(sparsities, seeds, store)
    if args.dry_run:
        done = load_results(store)
        for job in plan(done):
            print(("done  " if job["name"] in done else "ready ") + job["name"])
        return
    if not args.publish_only:
        folder = docs / "runs" / "mask-swap"
        folder.mkdir(parents=True, exist_ok=True)
        record = dict(provenance(seed=seeds[0]), workers=args.workers)  # the page says how many ran side by side
        (folder.parent / "mask-swap-provenance.json").write_text(json.dumps(record, indent=2) + "\n")
        run_sweep(plan, store, args.workers, say=lambda line: (print(line, flush=True), copy_out(store, folder)))
        copy_out(store, folder)
    publish(sparsities, docs)


def publish(sparsities: list[float], docs: Path = DOCS) -> None:
    """The page section in docs/results.md, from docs/runs/mask-swap/ alone, right after the CIFAR-10-JPEG75 MLP's
    section of bench/beyond_mnist.py."""
    runs = list(published(docs / "runs" / "mask-swap").values())
    record = docs / "runs" / "mask-swap-provenance.json"
    machine = json.loads(record.read_text()) if record.exists() else {"machine": "?", "torch": "?"}
    results_md = docs / "results.md"
    text = results_md.read_text()
    begin, end = "<!-- mask-swap:begin -->", "<!-- mask-swap:end -->"
    if begin not in text:
        after = f"<!-- beyond-{EXPERIMENT}:end -->"
        head, found, tail = text.partition(after)
        text = (f"{head}{after}\n\n{begin}\n{end}{tail}" if found else
                text.rstrip("\n") + f"\n\n{begin}\n{end}\n")
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    text = f"{head}{begin}\n{section(runs, sparsities, machine)}\n{end}{tail}"
    results_md.write_text(text)
    print(f"wrote the mask-swap section of {results_md} from {len(runs)} runs")


if __name__ == "__main__":
    main()
