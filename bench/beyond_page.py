"""The sections of docs/results.md that bench/beyond_mnist.py writes: for one experiment, its table, the budget, and
where ART + HyperSparse trails, the measured story of why (read from each run's trace and per-layer record)."""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from beyond_setup import (
    ACTS_FROM,
    AGAIN,
    ARTS,
    AUTO_BUDGET,
    CAUSES,
    EXPERIMENTS,
    FROM_START,
    LABELS,
    LR_CHECK,
    LR_SUSPECT,
    SCHEDULE,
    SHORT,
    UNTESTED,
    behind_cells,
    cell,
    defaults_behind,
    finished,
    name,
    reg_epochs,
)
from common import every_run, mean_std
from mask_swap import EXPERIMENT as SWAPPED
from mask_swap import Split, verdict

#: what was decided where the mask carries ART's gap
MASK_DECISION = (" This is the measured cause. No default tried changes the mask enough to close the gap (each "
                 "suspect above, one alternative at seed 0, and the learning rate; a stop reference frozen at the "
                 "first regularization epoch was not run): on this MLP and data ART + HyperSparse's mask is worse than "
                 "GMP's, and ART + HyperSparse is behind GMP.")


def shown_config(exp: str) -> dict:
    """The experiment's settings, without this machine's data path."""
    return {k: v for k, v in (EXPERIMENTS[exp]["config"] | SCHEDULE).items() if k != "data_dir"}


def section(exp: str, runs: list[dict], sparsities: list[float], seeds: list[int], machine: dict,
            lr_checked: str | None = None, swaps: list[dict] = ()) -> str:
    """One experiment's section: provenance, settings and budget, the table, and where ART trails, why.
    ``lr_checked`` is the learning-rate check on record for it (bench/lr_check.py), if any; ``swaps`` the runs of
    bench/mask_swap.py (mask against starting weights), where it measured this experiment."""
    commits = sorted({r["commit"] for r in runs}) or ["-"]
    planned = [name(exp, k, v, s) for s in seeds for k in sparsities for v in LABELS] + \
        [name(exp, 0.0, "dense", s) for s in seeds]
    missing = [n for n in planned if n not in {r["name"] for r in runs}]
    walls = [r["wall_seconds"] for r in runs if "wall_seconds" in r]
    lines = [f"## {EXPERIMENTS[exp]['title']}\n",
             f"Made by `python bench/beyond_mnist.py` (runs at commit{'s' if len(commits) > 1 else ''} "
             f"{', '.join(f'`{c}`' for c in commits)}) on {hosts(runs, machine)}, torch {machine['torch']}, two runs "
             "side by side, one thread each. " + commit_notes(commits)
             + (f"**{len(missing)} of {len(planned)} planned runs {'has' if len(missing) == 1 else 'have'} not "
                "finished yet** (cells 'not run').\n"
                if missing else "Every planned run finished.\n"),
             f"Config: `{json.dumps(shown_config(exp))}` — whole epochs (every training image once per epoch; "
             f"augmentation: {EXPERIMENTS[exp]['augment']}), 15 warm-up epochs, ART with η = 1.05⁴ per epoch "
             "(at most 75 regularization epochs), 40 fine-tuning epochs (LR ×0.1 after 20 and 30), SGD momentum "
             "0.9, wd 1e-4, batch 64. Test error in % (mean ± std over seeds; the model is chosen on the validation "
             "split). **Budget**: GMP, RigL and one-shot get as many epochs between warm-up and "
             "fine-tuning as default ART spent regularizing in the same cell and seed; dense trains for the same "
             "total, taking the median of default ART's regularization epochs over the seed's sparsities."
             + (f" Learning rate: {LR_CHECK[exp]}." if exp in LR_CHECK else "")
             + (f" The check on record: {lr_checked}." if lr_checked else "")
             + (f" Mean wall time per run {statistics.mean(walls) / 60:.1f} min." if walls else "") + "\n",
             "| sparsity | " + " | ".join(LABELS.values()) + " | ART regularization epochs (defaults; auto) |",
             "|---|" + "---:|" * (len(LABELS) + 1)]
    for k in sparsities:
        means = {m: statistics.mean(cell(runs, exp, k, m)) for m in LABELS if cell(runs, exp, k, m)}
        best = min(means, key=means.get) if means else None
        row = [f"{100 * k:g} %"]
        for m in LABELS:
            vals = cell(runs, exp, k, m)
            n = f" (n={len(vals)})" if vals and len(vals) < len(seeds) else ""
            text = mean_std(vals) + n if vals else "not run"
            row.append(f"**{text}**" if m == best else text)
        reg = ["/".join(str(reg_epochs(r)) for r in sorted(runs, key=lambda r: r["seed"])
                        if r["sparsity"] == k and r["method"] == m) or "-" for m in ARTS]
        row.append(" ; ".join(reg))
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", dense_line(runs, exp, sparsities, len(seeds)),
              "**Where ART + HyperSparse is behind** a baseline by more than one standard deviation (of the two "
              "cells, the larger; cells with two seeds or more): " + behind(runs, exp, sparsities) + "\n",
              *diagnosis(runs, exp, sparsities),
              *where_finetuning_starts(runs, exp, sparsities),
              *layers(runs, exp, sparsities),
              *causes(runs, exp, sparsities),
              *explain(runs, exp, sparsities, swaps),
              *drift_note(runs, exp),
              *every_run(runs)]
    lines += ["\n</details>\n", f"Raw results: [runs/beyond/](runs/beyond/) (`{exp}-*.json`).\n"]
    return "\n".join(lines)


def hosts(runs: list[dict], machine: dict) -> str:
    """The machines the runs ran on: each run's own where it recorded one, else the sweep's record of where it
    started (a sweep spanning sessions runs on another host in each)."""
    named = sorted({r["machine"] for r in runs if r.get("machine")})
    unnamed = sum(not r.get("machine") for r in runs)
    if not unnamed:
        return ", ".join(named) or "?"
    started = str(machine.get("commit", "?"))[:7]
    which = "its runs" if not named else f"{unnamed} of its {len(runs)} runs"
    text = (f"{machine['machine']} (the host recorded when the sweep started, at `{started}`; the sweep spanned "
            f"sessions, each on another host, and {which} did not record their own")
    return text + (f"; the others ran on {', '.join(named)})" if named else ")")


#: commits that runs name but this repository's history does not hold
LOST_COMMITS = {"519ad27": "a commit rewritten before it landed; the runs' settings are in their JSON"}


def _sparsity_label(r: dict) -> str:
    return f" {100 * r['sparsity']:g} %" if r["sparsity"] else ""


def drift_note(runs: list[dict], exp: str) -> list[str]:
    """The runs whose warm-up differs from the rest of their seed's, named, and what that means for comparisons."""
    odd = drifted(runs, exp)
    if not odd:
        return ["Every run of a seed warmed up exactly alike (same training and validation accuracy in each warm-up "
                "epoch), so runs of one seed differ by their method alone.\n"]
    names = ", ".join(f"`{r['method']}`{_sparsity_label(r)} seed {r['seed']} (`{r['commit']}`)"
                      for r in sorted(odd, key=lambda r: (r["seed"], r["sparsity"], r["method"])))
    return [f"**Runs that did not warm up like the rest of their seed**: {names}. Runs of a seed share their "
            "initialization and data order, but these differ from the first epoch on: " + DRIFT
            + (f" {DRIFT_FACTS[exp]}" if exp in DRIFT_FACTS else "") + " Their results "
            "are used like the others' in the tables (a sample of the seed's spread); a comparison that needs the "
            "same warm-up (the dense run at ART's stop, a cause changed alone) leaves them out or says so.\n"]


#: why runs of one seed can differ: float-level differences grow into another trajectory
DRIFT = ("float-level differences in training (another order of float operations in the code, or another machine: "
         "sessions run on different hosts) grow into a different trajectory.")
#: what was measured about it, per experiment
DRIFT_FACTS = {"mlp-cifar10jpeg75": "Every such run here was started after commit `d18c7f8`, which moved SGD's step "
                                    "into C, and the runs started before it agree with each other; the code of "
                                    "`0ae0281`, run again on a later session's machine, gave a third first epoch "
                                    "(33.09 % training, 39.04 % validation accuracy at seed 0, against 33.10 % and "
                                    "38.96 %), so the machine matters too."}


def commit_notes(commits: list[str]) -> str:
    """What a reader cannot see in the commit labels: which are missing from history, and what -dirty means."""
    notes = [f"`{c}` is not in this repository's history ({LOST_COMMITS[c]}). " for c in commits if c in LOST_COMMITS]
    if any(c.endswith("-dirty") for c in commits):
        notes.append("A `-dirty` commit ran with uncommitted changes in the sweep's checkout; until `a7b9d32` the "
                     "sweep's own copies of its results under docs/runs counted as such, so the label alone does "
                     "not say that other code ran. ")
    return "".join(notes)


def dense_line(runs: list[dict], exp: str, sparsities: list[float], seeds: int = 3) -> str:
    """The dense model's test error, and where sparse models beat it, how it ends training (so a weak dense
    reference is visible, not hidden)."""
    dense = cell(runs, exp, 0.0, "dense")
    if not dense:
        return "Dense, same total epochs: not run.\n"
    n = f" (n={len(dense)})" if len(dense) < seeds else ""
    text = f"Dense, same total epochs: **{mean_std(dense)} %**{n} test error."
    beaters = {k: [m for m in LABELS if cell(runs, exp, k, m)
                   and statistics.mean(cell(runs, exp, k, m)) < statistics.mean(dense)] for k in sparsities}
    beaten = [f"{100 * k:g} %" for k in sparsities if beaters[k]]

    def ends(rs):
        last = [r["trace"][-1] for r in rs if r.get("trace")]
        return (f"{100 * statistics.mean(t['train_acc'] for t in last):.1f} % training and "
                f"{100 * statistics.mean(t['val_acc'] for t in last):.1f} % validation accuracy") if last else None
    dense_end = ends(finished(runs, exp, 0.0, "dense"))
    if beaten and dense_end:
        k = next(k for k in sparsities if f"{100 * k:g} %" == beaten[0])
        best = min((m for m in LABELS if cell(runs, exp, k, m)), key=lambda m: statistics.mean(cell(runs, exp, k, m)))
        who = "; ".join(f"{100 * k:g} %: {', '.join(LABELS[m] for m in ms)}" for k, ms in beaters.items() if ms)
        text += (f" Sparse models beat it here ({who}). It ends training at {dense_end}; "
                 f"{LABELS[best]} at {100 * k:g} % ends at {ends(finished(runs, exp, k, best))}: the dense model "
                 "fits its training images more closely and does worse on validation (why was not measured "
                 "further).")
    return text + "\n"


def behind(runs: list[dict], exp: str, sparsities: list[float]) -> str:
    found = [f"{LABELS[v]} behind {LABELS[m]} at {100 * k:g} % ({statistics.mean(cell(runs, exp, k, m)):.2f} "
             f"against {statistics.mean(cell(runs, exp, k, v)):.2f})"
             for k, v, m, provisional in behind_cells(runs, exp, sparsities) if not provisional]
    return ("; ".join(found) + ".") if found else "nowhere in this table."


def _first(r: dict, phase: str) -> dict | None:
    return next((t for t in r.get("trace") or [] if t["phase"] == phase), None)


def start_of_finetuning(r: dict) -> float | None:
    """Validation accuracy of the sparse network fine-tuning starts from: ART's pruned copy chosen at the stop, or
    the network after a baseline's last pruning epoch (None for one-shot, which prunes when fine-tuning starts)."""
    story = art_story(r)
    if story:
        return story.get("pruned_val")
    middle = [t for t in r.get("trace") or [] if t["phase"] not in ("warmup", "finetune")]
    return middle[-1]["val_acc"] if middle else None


def after_first_finetuning_epoch(r: dict) -> float | None:
    row = _first(r, "finetune")
    return row["val_acc"] if row else None


def dense_at(runs: list[dict], exp: str, art: dict) -> float | None:
    """The plain dense run's validation accuracy after the epoch of ART's stop (same seed and warm-up), if it trained
    that epoch at the same learning rate: what the dense model would have had then without the regularizer."""
    stop = art_story(art)
    for r in finished(runs, exp, 0.0, "dense", seed=art["seed"]):
        if not same_warmup(r, art):
            continue
        row = next((t for t in r.get("trace") or [] if t["epoch"] == stop["stop_epoch"]), None)
        if row is not None and row["lr"] == stop["stop_lr"]:
            return row["val_acc"]
    return None


def plain_dense(runs: list[dict], exp: str, arts: list[dict], digits: int = 1) -> tuple[float | None, str]:
    """The plain dense run at ART's stop (:func:`dense_at`), averaged over the seeds that have one; when that is not
    every seed of ``arts``, a note naming those seeds and ART's dense model at the stop on them (the mean over every
    seed would compare other seeds)."""
    pairs = [(r, dense_at(runs, exp, r)) for r in arts]
    found = [(r, v) for r, v in pairs if v is not None]
    if not found:
        return None, ""
    note = "" if len(found) == len(pairs) else (
        f" (seed{'s' if len(found) > 1 else ''} {', '.join(str(r['seed']) for r, _ in found)}, where ART's dense "
        f"model had {_pct(statistics.mean(art_story(r)['stop_val'] for r, _ in found), digits)} at the stop)")
    return statistics.mean(v for _, v in found), note


def _warmup(r: dict) -> list[tuple[float, float]]:
    rows = [t for t in r.get("trace") or [] if t["phase"] == "warmup"]
    return [(t["train_acc"], t["val_acc"]) for t in rows]


def same_warmup(a: dict, b: dict) -> bool:
    """Whether two runs of a seed trained alike up to the shorter warm-up (same initialization, data order and float
    results): a run made with code or on a machine whose float results differ drifts from the first epoch."""
    wa, wb = _warmup(a), _warmup(b)
    n = min(len(wa), len(wb))
    return n > 0 and wa[:n] == wb[:n]


def changed_alone(r: dict, default: dict) -> bool:
    """Whether a cause run trained exactly like the defaults' run of its seed until its change could first act
    (ACTS_FROM): otherwise other code or another machine changed it too, and its move is not the change's alone."""
    mine, theirs = art_story(r), art_story(default)
    if not mine or not theirs:
        return same_warmup(r, default)
    if ACTS_FROM.get(r["method"].removesuffix(AGAIN)) == "first":
        last = min(_first(r, "regularize")["epoch"], _first(default, "regularize")["epoch"])
    else:
        last = min(mine["stop_epoch"], theirs["stop_epoch"])

    def rows(x):
        return {t["epoch"]: (t["train_acc"], t["val_acc"]) for t in x["trace"] if t["epoch"] <= last}
    return rows(r) == rows(default)


def drifted(runs: list[dict], exp: str) -> list[dict]:
    """The runs whose warm-up differs from that of most runs of their seed (all runs of a seed share their
    initialization and data order, so they should warm up alike)."""
    out = []
    for seed in sorted({r["seed"] for r in runs if r["experiment"] == exp}):
        mine = [r for r in runs if r["experiment"] == exp and r["seed"] == seed and _warmup(r)
                and r["method"] not in FROM_START  # these change the warm-up by design
                and not r["method"].endswith(AGAIN)]  # run in another session, compared among themselves
        groups: list[list[dict]] = []
        for r in mine:
            home = next((g for g in groups if same_warmup(g[0], r)), None)
            (home.append(r) if home is not None else groups.append([r]))
        groups.sort(key=len, reverse=True)
        out += [r for g in groups[1:] for r in g]
    return out


def _lower(sentence: str) -> str:
    """A sentence that follows a colon."""
    return sentence[0].lower() + sentence[1:]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _pct(v: float | None, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f} %" if v is not None else "-"


def val_lead(theirs: list[dict], ours: list[dict]) -> float:
    """How far ``theirs`` leads ``ours`` in mean validation accuracy (a fraction; negative where it trails)."""
    return statistics.mean(r["val_acc"] for r in theirs) - statistics.mean(r["val_acc"] for r in ours)


def _spread(*groups: list[float]) -> float | None:
    """The larger of the groups' standard deviations (None unless each has two values or more)."""
    if any(len(g) < 2 for g in groups):
        return None
    return max(statistics.stdev(g) for g in groups)


@dataclass
class Trail:
    """One cell where an ART variant trails a baseline, as measured: test error means, the gap on validation and the
    seeds' spread there, and the validation accuracy each method starts fine-tuning from."""
    k: float
    v: str
    m: str
    provisional: bool
    arts: list[dict]
    base: list[dict]
    ours: float
    theirs: float
    gap_val: float
    spread: float | None
    who: str
    art_mid: float | None
    base_mid: float | None

    @property
    def behind_on_val(self) -> bool:
        return self.gap_val > 0 and (self.spread is None or self.gap_val > self.spread)

    @classmethod
    def measure(cls, runs: list[dict], exp: str, k: float, v: str, m: str, provisional: bool) -> Trail:
        arts, base = finished(runs, exp, k, v), finished(runs, exp, k, m)
        art_val, base_val = [r["val_acc"] for r in arts], [r["val_acc"] for r in base]
        return cls(k, v, m, provisional, arts, base,
                   ours=statistics.mean(cell(runs, exp, k, v)), theirs=statistics.mean(cell(runs, exp, k, m)),
                   gap_val=val_lead(base, arts), spread=_spread(art_val, base_val),
                   who="ART" if v == "art-hs" else "ART (λ_0 auto)",
                   art_mid=_mean(map(start_of_finetuning, arts)), base_mid=_mean(map(start_of_finetuning, base)))


def explain(runs: list[dict], exp: str, sparsities: list[float], swaps: list[dict] = ()) -> list[str]:
    """The measured story of each cell where an ART variant trails a baseline: the dense model during
    regularization against the same model trained plainly, what the stop compared, the network each method starts
    fine-tuning from, live units per layer, each cause changed alone, and the mask against the starting weights
    (bench/mask_swap.py's ``swaps``, where it ran). Numbers only from training and validation data (test error is
    what the cell compares)."""
    cells = behind_cells(runs, exp, sparsities)
    if not cells:
        return []
    lines = ["**Why ART trails where it does** (measured; training and validation data only):\n"]
    for k, v, m, provisional in cells:
        t = Trail.measure(runs, exp, k, v, m, provisional)
        text = measured(runs, exp, t)
        swapped = swaps and exp == SWAPPED and m == "gmp"
        if v == "art-hs":
            sentences = verdict(swaps, k, v, table_gap=100 * t.gap_val) if swapped else None
            split = (sentences, Split.measure(swaps, k).carrier) if sentences else None
            text += defaults_decision(runs, exp, t, split)
        else:
            same = finished(runs, exp, k, m + AUTO_BUDGET)
            lead = 100 * val_lead(same, t.arts) if same else None
            split = verdict(swaps, k, v, table_gap=lead) if swapped else None
            text += auto_decision(runs, exp, t, defaults_trail_too=any(c[0] == k and c[1] == "art-hs" for c in cells),
                                  split=split)
        lines.append(text)
    return lines + [""]


def measured(runs: list[dict], exp: str, t: Trail) -> str:
    """The cell's gap, then what was measured on its runs: the dense model and the stop, where fine-tuning starts,
    the units alive."""
    them = SHORT[t.m]
    if t.behind_on_val:
        val = f"and {100 * t.gap_val:.1f} points behind on validation"
    else:
        state = "ahead" if t.spread is not None and -t.gap_val > t.spread else "level"
        val = (f"though on validation, which selects the model, {t.who} is {state} ("
               f"{'ahead' if t.gap_val < 0 else 'behind'} by {100 * abs(t.gap_val):.2f} points"
               + (f", the seeds' spread ±{100 * t.spread:.2f}" if t.spread is not None else "") + ")")
    text = (f"- {100 * t.k:g} %, {them} ahead of {t.who}{' (one seed so far: provisional)' if t.provisional else ''}"
            f": {t.theirs:.2f} against {t.ours:.2f} % test error, {val}.")
    stories = [s for s in map(art_story, t.arts) if s]
    if stories:
        text += story_sentences(stories, runs, exp, t.arts, t.who)
    art_ft = _mean(map(after_first_finetuning_epoch, t.arts))
    base_ft = _mean(map(after_first_finetuning_epoch, t.base))
    if t.art_mid is not None:
        text += f" Fine-tuning started from the pruned copy of {t.who} at {_pct(t.art_mid)} validation accuracy"
        text += (f", from {them}'s network after its pruning epochs at {_pct(t.base_mid)}"
                 if t.base_mid is not None else "")
        if art_ft is not None and base_ft is not None:
            text += f"; after the first fine-tuning epoch {_pct(art_ft)} against {_pct(base_ft)}"
        text += "."
    return text + units_sentence(t.arts, t.base, t.who, them)


def auto_decision(runs: list[dict], exp: str, t: Trail, defaults_trail_too: bool, split: str | None = None) -> str:
    """Where λ_0 auto trails: the budget its baseline had (and the baseline at auto's own, where it ran), its mask
    against the baseline's from equal weights (``split``, bench/mask_swap.py), and why no cause was changed for an
    option."""
    them = SHORT[t.m]
    text = ""
    theirs_epochs = _mean(r["epochs"].get("prune") for r in t.base if r.get("epochs"))
    ours_epochs = _mean(reg_epochs(r) for r in t.arts)
    if theirs_epochs is not None and ours_epochs is not None and theirs_epochs != ours_epochs:
        text += (f" {them}'s budget is the defaults' regularization epochs: it trained {theirs_epochs:.1f} epochs "
                 f"between warm-up and fine-tuning where {t.who} regularized {ours_epochs:.1f} (mean over seeds), so "
                 "this cell does not compare equal epochs")
        same = finished(runs, exp, t.k, t.m + AUTO_BUDGET)
        text += equal_budget(same, t) if same else f", and {them} at {t.who}'s budget was not run."
    if split is not None:
        text += f" Mask against starting weights (bench/mask_swap.py, the section below): {_lower(split)}"
    if defaults_trail_too:
        return text + (" The suspected causes were changed from the defaults (the paragraph on the defaults, and the "
                       "table above); λ_0 auto is an option, not a default, so none was changed for it.")
    text += (f" No cause run was made at {100 * t.k:g} %: causes are changed from the defaults, which are not behind "
             f"{them} here by more than one standard deviation (λ_0 auto is an option, not a default). ")
    if not t.behind_on_val:
        return text + (f"On validation, which chooses models and settings, {t.who} is level with {them}, so the test "
                       "gap is no ground to change anything: nothing was changed.")
    return text + (f"Nothing was changed: λ_0 auto stays an option, and the measurements above are what this page has "
                   f"on why it trails {them} here.")


def equal_budget(same: list[dict], t: Trail) -> str:
    """The baseline given λ_0 auto's own epochs, seed by seed, against λ_0 auto: on validation, and whether the test
    gap the table flags stays at equal epochs."""
    them, seeds = SHORT[t.m], sorted(same, key=lambda r: r["seed"])
    epochs = "/".join(str(r["epochs"].get("prune", "?")) for r in seeds)
    val, auto_val = [r["val_acc"] for r in same], [r["val_acc"] for r in t.arts]
    errs, auto_errs = [r["test_error"] for r in same], [r["test_error"] for r in t.arts]
    lead_val, spread_val = val_lead(same, t.arts), _spread(val, auto_val)
    lead_test, spread_test = statistics.mean(auto_errs) - statistics.mean(errs), _spread(errs, auto_errs)
    state = "ahead" if lead_val > 0 else "behind"
    if spread_val is not None and abs(lead_val) <= spread_val:
        state = f"level: {state}"
    n = f" ({len(same)} of {len(t.arts)} seeds so far)" if len(same) < len(t.arts) else ""
    text = (f". Given {t.who}'s own epochs instead, seed by seed ({epochs}){n}, {them} reaches "
            f"{_pct(statistics.mean(val), 2)} validation accuracy against {t.who}'s "
            f"{_pct(statistics.mean(auto_val), 2)} "
            f"({state} by {100 * abs(lead_val):.2f} points"
            + (f", the seeds' spread ±{100 * spread_val:.2f}" if spread_val is not None else "")
            + f") and {mean_std(errs)} % test error against {mean_std(auto_errs)} %")
    if spread_test is None or spread_val is None:
        return text + " (too few seeds to weigh the gap)."
    test = ("stays ahead in test error by more than one standard deviation" if lead_test > spread_test else
            f"is no longer ahead in test error by more than one standard deviation ({lead_test:+.2f} points, the "
            f"seeds' spread ±{spread_test:.2f})")
    if not t.behind_on_val:  # flagged on test alone: validation, which decides, has no gap to explain
        moved = val_lead(same, t.base)
        return text + (f": at equal epochs {them} {test}. On validation, which decides, the table had no gap to "
                       f"explain, and the shorter budget moved {them}'s validation accuracy by {100 * moved:+.2f} "
                       "points.")
    if lead_val > spread_val:
        return text + (f": at equal epochs {them} stays ahead on validation by more than the seeds' spread (and it "
                       f"{test}), so the unequal budget does not explain the gap.")
    return text + (f": at equal epochs {them}'s lead on validation is within the seeds' spread (and it {test}), so "
                   f"the gap comes with the unequal budget, the {theirs_more(t, same):.1f} more epochs {them} had "
                   "there.")


def theirs_more(t: Trail, same: list[dict]) -> float:
    """How many more epochs the baseline had in the table than at λ_0 auto's budget (mean over seeds)."""
    return statistics.mean(r["epochs"]["prune"] for r in t.base) - statistics.mean(r["epochs"]["prune"] for r in same)


def defaults_decision(runs: list[dict], exp: str, t: Trail, split: tuple[str, str] | None = None) -> str:
    """Where the defaults trail: each cause's move (from the reruns once they are all in), then the decision: none
    needed (level on validation), a change that closes the gap, the learning rate, or what carries the gap where
    bench/mask_swap.py measured it (``split``), else that the cause was not found."""
    default = next((r for r in t.arts if r["seed"] == 0), None)
    changed = [(CAUSES[c][0], r) for c in CAUSES for r in finished(runs, exp, t.k, c, seed=0)]
    slow = next((r for _, r in changed if r["method"] == "art-hs-slow-lambda"), None)
    again = again_group(runs, exp, t.k)
    if again is not None:  # the defaults and every cause run together: each move is the change alone
        default, changed = again
    if default is None or not changed:
        return ""
    text = cause_moves(default, changed, again is not None, t)
    if not t.behind_on_val:
        return text + (". Validation, which chooses models and defaults here, does not show ART behind, so the gap "
                       "in test error is no ground to change a default (that would choose on the test set): none was "
                       "changed.")
    text += f", against the {100 * t.gap_val:.1f}-point gap."
    longer = next(iter(finished(runs, exp, t.k, "gmp-slow-budget", seed=0)), None)
    if longer is not None and slow is not None:  # the slower growth's first run set GMP's budget
        text += (f" Given the slower growth's {reg_epochs(slow)} epochs too, GMP reaches "
                 f"{100 * longer['val_acc']:.1f} % validation accuracy against the slower ART's "
                 f"{100 * slow['val_acc']:.1f} %.")
    lr_art = next(iter(finished(runs, exp, t.k, "art-hs-lr", seed=0)), None)
    lr_gmp = next(iter(finished(runs, exp, t.k, "gmp-lr", seed=0)), None)
    seed0 = [next((r for r in rs if r["seed"] == 0), None) for rs in (t.arts, t.base)]
    text += lr_sentence(exp, lr_art, lr_gmp, *seed0)
    lr_gap = lr_gmp["val_acc"] - lr_art["val_acc"] if lr_art and lr_gmp else None
    closes = [what for what, r in changed if r["val_acc"] - default["val_acc"] >= t.gap_val]
    if closes:
        return text + (f" On validation at seed 0 the gap closes with {' and with '.join(closes)}: a default to weigh "
                       "on every dataset (this page changes none).")
    if lr_gap is not None and lr_gap <= (t.spread or 0):
        return text + (f" At that rate GMP's lead on validation is {100 * lr_gap:+.1f} points"
                       + (f", within the seeds' spread (±{100 * t.spread:.1f})" if t.spread is not None else "")
                       + ": the gap comes with the experiment's learning rate, a setting of this sweep and not a "
                       "library default, so no default was changed (seed 0 only: the other seeds were not run at "
                       "that rate).")
    return text + not_closed(exp, default, changed, t, lr_tested=lr_gap is not None, split=split)


def cause_moves(default: dict, changed: list[tuple[str, dict]], again: bool, t: Trail) -> str:
    """How far each change alone moved validation accuracy from the defaults' run of seed 0 (finer digits where ART
    is not behind: there is no gap to set the moves against)."""
    digits = 1 if t.behind_on_val else 2
    moves = "; ".join(f"{what}: {100 * (r['val_acc'] - default['val_acc']):+.{digits}f}"
                      + ("" if changed_alone(r, default) else " (trained unlike the defaults' run before the change "
                         "could act: not the change alone)")
                      for what, r in changed)
    if again:
        commits = ", ".join(f"`{c}`" for c in sorted({default["commit"], *(r["commit"] for _, r in changed)}))
        text = (" Run again together at seed 0 (cause runs made in earlier sessions drifted from the defaults' run "
                f"before their change could act, as the table marks; the reruns ran at {commits}), each changed "
                f"alone from the defaults' rerun, validation accuracy moved by ({moves}) points")
    else:
        text = f" Changed alone at seed 0, validation accuracy moved by ({moves}) points"
    if t.spread is not None:
        text += f" (the seeds' spread of validation accuracy in this cell: ±{100 * t.spread:.{digits}f})"
    return text


def lr_sentence(exp: str, lr_art: dict | None, lr_gmp: dict | None, art: dict | None = None,
                gmp: dict | None = None) -> str:
    """ART and GMP at the rate the short check preferred (seed 0), where they ran, beside their seed-0 runs at the
    experiment's rate."""
    if lr_art is None:
        return ""

    def at_rate(r):
        return f" ({100 * r['val_acc']:.1f} % at {EXPERIMENTS[exp]['config']['lr']:g})" if r is not None else ""
    return (f" At lr {LR_SUSPECT[exp]:g} (the rate the short check on validation preferred), ART reaches "
            f"{100 * lr_art['val_acc']:.1f} % validation accuracy{at_rate(art)}"
            + (f" and GMP, given that run's {reg_epochs(lr_art)} epochs, {100 * lr_gmp['val_acc']:.1f} %{at_rate(gmp)}"
               if lr_gmp is not None else " (GMP at that rate has not finished)") + ".")


def not_closed(exp: str, default: dict, changed: list[tuple[str, dict]], t: Trail, lr_tested: bool,
               split: tuple[str, str] | None = None) -> str:
    """No change tried closes the gap: whether float drift could hide one that would; if not, what carries the gap
    where the mask and the starting weights were separated (``split``), else that the cause was not found, with
    what was measured instead."""
    confounded = [r for _, r in changed if not changed_alone(r, default)]
    margin = min((t.gap_val - (r["val_acc"] - default["val_acc"]) for r in confounded), default=None)
    if margin is not None and t.spread is not None and margin <= t.spread:
        return (" No change closes the gap here, but a move marked 'not the change alone' also carries float drift of "
                "about the seeds' spread, and one comes within that spread of the gap: this cell cannot rule that "
                "change out, so no default was changed on its evidence.")
    if margin is not None and t.spread is not None:
        text = (" The moves marked 'not the change alone' also carry float drift, which moves a run by about the "
                "seeds' spread; none comes within that spread of closing the gap (the closest of them "
                f"{100 * margin:.1f} points short). No change tried closes the gap, so no default was changed")
    else:
        text = " No change tried closes the gap, so no default was changed"
    if split is not None:  # (the split's sentences, what carries the gap)
        sentences, carrier = split
        return (f"{text}. Mask against starting weights (bench/mask_swap.py, the section below): {_lower(sentences)}"
                + (MASK_DECISION if carrier == "the mask" else " No default was changed on this evidence."))
    not_found = exp in UNTESTED or lr_tested
    if lr_tested:
        text += ". The cause of this gap was not found among the suspects run, the learning rate included"
    elif exp in UNTESTED:
        text += f". The cause of this gap was not found: {UNTESTED[exp]} was not tested"
    if t.art_mid is not None and t.base_mid is not None and t.base_mid > t.art_mid:
        them = SHORT[t.m]
        text += (f"{'; what was measured instead' if not_found else ''}: {them} trains the sparse network itself "
                 "through its pruning epochs, ART trains the dense model until it fixes the mask, and fine-tuning "
                 f"starts {100 * (t.base_mid - t.art_mid):.1f} points of validation accuracy behind {them}'s (the "
                 "difference measured between the two; no run changes it alone, so it is not shown to be the cause)")
    return text + "."


def story_sentences(stories: list[dict], runs: list[dict], exp: str, arts: list[dict], who: str) -> str:
    """The dense model while ART regularized (validation accuracy, against the same epoch trained plainly) and what
    the stop compared."""
    warm, at_stop = (_mean(s[key] for s in stories) for key in ("warm_val", "stop_val"))
    plain, which = plain_dense(runs, exp, [r for r in arts if art_story(r)])
    first, ref, buf = (_mean(s[key] for s in stories) for key in ("ref_first", "reference", "buffer_mean"))
    deadline = any(s["deadline"] for s in stories) or any(s["reason"] != "rule" for s in stories)
    text = (f" The dense model of {who} had {_pct(warm)} validation accuracy at the end of warm-up and "
            f"{_pct(at_stop)} at the stop")
    text += (f"; a dense model trained as long without the regularizer (same seed and warm-up) had "
             f"{_pct(plain)}{which}." if plain is not None else ".")
    if first is not None and ref is not None:
        text += (f" The stop compared the pruned copy with the dense model scored alike on training images: "
                 f"{_pct(first)} in the first regularization epoch, {_pct(ref)} at the stop; "
                 + frozen_reference(stories, who))
        text += (", and the pruned copy had " + ("not caught up: a deadline or the limit stopped it." if deadline else
                                                  f"caught up (buffer mean {_pct(buf)}; the rule stopped it, no "
                                                  "deadline)."))
    return text


def frozen_reference(stories: list[dict], who: str) -> str:
    """What a stop reference frozen at the first regularization epoch would have asked, seed by seed (not run): the
    rule stops once the buffer mean reaches the reference, so where every seed's pruned copy already had the first
    epoch's score at the stop, the frozen reference would have stopped no later."""
    short = [s["ref_first"] - s["buffer_mean"] for s in stories if s["buffer_mean"] < s["ref_first"]]
    if not short:
        return f"every seed's pruned copy had reached the first epoch's score by then, so a reference frozen there " \
               f"would have stopped {who} no later"
    if min(s["ref_first"] for s in stories) >= 0.9999:
        return ("a reference frozen there (100 %) could be met only by a pruned copy scoring 100 % on those images "
                "three epochs running (not run)")
    return (f"a reference frozen there would have asked the pruned copy for {100 * statistics.mean(short):.1f} points "
            f"more than it had on {len(short)} of {len(stories)} seeds (not run)")


def units_sentence(arts: list[dict], base: list[dict], who: str, them: str) -> str:
    """Units or filters alive per hidden layer (a kept incoming weight), and in brackets those the next layer reads
    where its inputs are those units: a unit with inputs that nothing reads is dead too."""
    def alive(rs):
        if not rs or not all(r.get("layers") for r in rs):
            return None
        lay = rs[0]["layers"]
        parts = []
        for i in range(len(lay) - 1):
            out = statistics.mean(r["layers"][i]["alive_out"] for r in rs)
            text = f"{out:.0f}"
            if lay[i + 1]["shape"][1] == lay[i]["shape"][0]:
                text += f" ({statistics.mean(r['layers'][i + 1]['alive_in'] for r in rs):.0f})"
            parts.append(text)
        return ", ".join(parts) + f" of {', '.join(str(x['shape'][0]) for x in lay[:-1])}"
    mine, theirs = alive(arts), alive(base)
    if mine is None or theirs is None:
        return ""
    return (f" Units or filters alive per hidden layer (a kept incoming weight; in brackets, those the next layer "
            f"reads): {who} {mine}; {them} {theirs}.")


def causes(runs: list[dict], exp: str, sparsities: list[float]) -> list[str]:
    """Each suspected cause changed alone from ART's defaults (seed 0), beside the defaults and GMP: validation
    accuracy (what decides) first, test error after it."""
    if not any(r["experiment"] == exp and r["method"] in CAUSES for r in runs):
        return []
    lines = ["Suspected causes, each changed alone from ART's defaults (seed 0; validation accuracy decides, test "
             "error is shown after it). They cost four runs per cell, so they run only where ART's defaults trail: "
             "behind GMP on validation at seed 0, or behind a baseline in the table above by more than one standard "
             "deviation (test error); which change would be kept is judged on validation alone:\n",
             "| sparsity | run | what changed | val. acc. % | test error % | regularization epochs |",
             "|---|---|---|---:|---:|---:|"]
    for k in sparsities:
        here = {r["method"]: r for r in runs if r["seed"] == 0 and r["sparsity"] == k}
        for m, what in [("art-hs", "nothing (defaults)"), *((c, CAUSES[c][0]) for c in CAUSES),
                        ("gmp", "GMP at the defaults' budget"),
                        ("gmp-slow-budget", "GMP at the slower growth's budget"),
                        ("art-hs-lr", f"the learning rate: {LR_SUSPECT.get(exp, '-')} instead of "
                                      f"{EXPERIMENTS[exp]['config']['lr']}, from the first epoch"),
                        ("gmp-lr", f"GMP at lr {LR_SUSPECT.get(exp, '-')}, at that ART run's budget"),
                        ("art-hs" + AGAIN, "nothing (defaults), run again with the three below"),
                        *((c + AGAIN, f"{CAUSES[c][0]}, run again") for c in CAUSES)]:
            r = here.get(m)
            if r is None or r["test_error"] is None:
                continue
            label = LABELS.get(m, f"`{m}`")
            default = here.get("art-hs" + AGAIN if m.endswith(AGAIN) else "art-hs")
            if default is not None and m.removesuffix(AGAIN) in CAUSES and not changed_alone(r, default):
                what += " (trained unlike the defaults' run before the change could act: not the change alone)"
            lines.append(f"| {100 * k:g} % | {label} | {what} | {100 * r['val_acc']:.2f} | {r['test_error']:.2f} | "
                         f"{r['epochs'].get('prune', '-') if m.startswith('gmp') else reg_epochs(r)} |")
    moot = [f"{100 * k:g} %" for k in sparsities if finished_causes(runs, exp, k)
            and not defaults_behind(runs, exp, k)]
    if moot:
        lines += ["", f"At {' and '.join(moot)} these runs were made when the runs finished by then had ART's defaults "
                  "behind; with every seed in, the defaults are not behind there by more than one standard deviation "
                  "(the table above), so those rows decide nothing."]
    return lines + [""]


def again_group(runs: list[dict], exp: str, k: float) -> tuple[dict, list[tuple[str, dict]]] | None:
    """The defaults' rerun and each cause's rerun (AGAIN) at seed 0, once all have finished: (default, [(what,
    run)])."""
    default = next(iter(finished(runs, exp, k, "art-hs" + AGAIN, seed=0)), None)
    changed = [(CAUSES[c][0], r) for c in CAUSES for r in finished(runs, exp, k, c + AGAIN, seed=0)]
    return (default, changed) if default is not None and len(changed) == len(CAUSES) else None


def finished_causes(runs: list[dict], exp: str, k: float) -> list[dict]:
    """The cause runs of one cell (seed 0) that finished."""
    return [r for c in CAUSES for r in finished(runs, exp, k, c, seed=0)]


def art_story(r: dict) -> dict:
    """What ART's trace says, in validation accuracy (one measure throughout): the dense model at the end of
    warm-up and at the stop, the pruned copy chosen then; and the stop rule's
    reference (training images, scored like the pruned copy) in the first regularization epoch and at the stop."""
    trace = r.get("trace") or []
    warm = [t for t in trace if t["phase"] == "warmup"]
    reg = [t for t in trace if t["phase"] == "regularize"]
    if not warm or not reg:
        return {}
    stop = next((t for t in reg if t.get("stop_reason")), reg[-1])
    return {"warm_val": warm[-1]["val_acc"],
            "stop_val": stop["val_acc"], "stop_epoch": stop["epoch"], "stop_lr": stop["lr"],
            "pruned_val": stop.get("val_acc_after_stop"),
            "ref_first": reg[0].get("dense_acc"), "reference": stop.get("dense_acc"),
            "buffer_mean": stop.get("buffer_mean"), "reason": stop.get("stop_reason", "-"),
            "deadline": any("past_deadline" in t for t in reg)}


def diagnosis(runs: list[dict], exp: str, sparsities: list[float]) -> list[str]:
    """Per cell and ART variant: the dense model's validation accuracy before and at the end of regularization,
    against the same epoch trained without the regularizer, and what the stop compared."""
    lines = ["Diagnosis (mean over seeds; from each run's trace, validation accuracy unless named):\n",
             "| sparsity | ART variant | dense model: end of warm-up | at the stop | "
             "dense run, same epoch, no regularizer | stop reference (training images): first regularization epoch "
             "→ at the stop | pruned copy's buffer mean at the stop (training images) | stop reasons |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for k in sparsities:
        for m in ARTS:
            mine = [r for r in finished(runs, exp, k, m) if art_story(r)]
            if not mine:
                continue
            stories = [art_story(r) for r in mine]

            def avg(key):
                return _pct(_mean(s.get(key) for s in stories), 2)
            plain, which = plain_dense(runs, exp, mine, digits=2)
            reasons = ", ".join(sorted({s["reason"] for s in stories}))
            lines.append(f"| {100 * k:g} % | {LABELS[m]} | {avg('warm_val')} | "
                         f"{avg('stop_val')} | {_pct(plain, 2)}{which} | {avg('ref_first')} → {avg('reference')} | "
                         f"{avg('buffer_mean')} | {reasons} |")
    return lines + [""]


def where_finetuning_starts(runs: list[dict], exp: str, sparsities: list[float]) -> list[str]:
    """Each method's sparse network when fine-tuning starts, after its first fine-tuning epoch, and at the end
    (validation accuracy, mean over seeds)."""
    lines = ["Where fine-tuning starts (validation accuracy, mean over seeds): the sparse network at the end of the "
             "middle phase (ART: the pruned copy it chose at the stop; GMP, RigL: the network after their last "
             "pruning epoch; one-shot prunes when fine-tuning starts), after the first fine-tuning epoch, and the "
             "model chosen at the end:\n",
             "| sparsity | method | end of the middle phase | first fine-tuning epoch | chosen model |",
             "|---|---|---:|---:|---:|"]
    for k in sparsities:
        for m in LABELS:
            mine = finished(runs, exp, k, m)
            if not mine or not any(r.get("trace") for r in mine):
                continue
            lines.append(f"| {100 * k:g} % | {LABELS[m]} | {_pct(_mean(map(start_of_finetuning, mine)), 2)} | "
                         f"{_pct(_mean(map(after_first_finetuning_epoch, mine)), 2)} | "
                         f"{_pct(_mean(r['val_acc'] for r in mine), 2)} |")
    return lines + [""]


def layers(runs: list[dict], exp: str, sparsities: list[float]) -> list[str]:
    """Where each method's mask keeps its weights: per layer, the share kept, the inputs read and the output units
    or filters with a kept incoming weight."""
    lines = ["Where each method keeps its weights (per layer: share of weights kept; inputs read, i.e. input units, "
             "channels or features with a kept weight; output units or filters with a kept incoming weight; mean "
             "over seeds). A hidden unit works only if it has inputs and the next layer reads it, so where the next "
             "layer's inputs are this layer's units (not for a convolution feeding a Linear layer, whose inputs are "
             "positions of its filters), the smaller of this layer's 'out' and the next layer's 'in' bounds the units "
             "that work:\n"]
    for k in sparsities:
        layered = [r for r in runs if r["experiment"] == exp and r["sparsity"] == k and r.get("layers")]
        if not layered:
            continue
        names = [lay["name"] for lay in layered[0]["layers"]]
        lines += [f"| {100 * k:g} % | " + " | ".join(f"`{n}`" for n in names) + " |",
                  "|---|" + "---:|" * len(names)]
        for m in LABELS:
            mine = [r for r in layered if r["method"] == m]
            if not mine:
                continue
            cells = []
            for i in range(len(names)):
                shape = mine[0]["layers"][i]["shape"]
                kept = statistics.mean(r["layers"][i]["kept"] / r["layers"][i]["numel"] for r in mine)
                read = statistics.mean(r["layers"][i]["alive_in"] for r in mine)
                alive = statistics.mean(r["layers"][i]["alive_out"] for r in mine)
                cells.append(f"{100 * kept:.2f} %, in {read:.0f}/{shape[1]}, out {alive:.0f}/{shape[0]}")
            lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
