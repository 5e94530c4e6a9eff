"""``hypersparse report RUN_DIR [RUN_DIR ...]``: figures (PNG) and one self-contained HTML page.

Reads only what a run wrote (config.json, metrics.jsonl, stats.jsonl,
summary.json). Figures, after the paper's investigations:

(a) gradient.png — the regularizer's gradient against the sorted weight index at several epochs;
(b) exploration.png — the share of the kept set exchanged per epoch, one line per run (HS vs L1 vs L2);
(c) layers.png — per-layer sparsity of the final model, as bars;
(d) histograms.png — weight-magnitude histograms (log axis) at the end of warm-up, at the cut, after fine-tuning;
(e) curves.png — dense/pruned training accuracy, validation accuracy, the share of the L1 norm the
    pruned copy drops, and lambda, phases shaded;
(f) per_class.png — per-class accuracy of the pruned copy through ART.
"""
from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import warnings
from pathlib import Path

from hypersparse.checkpoint import atomic_write, output_file, output_folder
from hypersparse.errors import UserError, first_line
from hypersparse.run_read import Run, load_run
from hypersparse.run_write import refuse_if_written
from hypersparse.stats import HIST_EDGES

PHASE_COLOURS = {"warmup": "#dddddd", "regularize": "#ffe2b3", "prune": "#ffe2b3", "train": "#e8e8ff",
                 "finetune": "#d6f0d6"}
FIGURES = ["gradient", "exploration", "layers", "histograms", "curves", "per_class"]


def _shade(ax, metrics):
    start = 0
    for i, m in enumerate(metrics + [None]):
        if m is None or m["phase"] != metrics[start]["phase"]:
            ax.axvspan(metrics[start]["epoch"] - 0.5, metrics[i - 1]["epoch"] + 0.5,
                       color=PHASE_COLOURS.get(metrics[start]["phase"], "#eeeeee"), alpha=0.6, lw=0)
            start = i


def _fig_gradient(plt, runs, path):
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs[:1]:
        # regularization epochs before the cut (after it the model is pruned and the gradient is that of a sparse net)
        rows = [s for s in run.stats if s.get("sorted_gradient") and s.get("event") == "regularize"] or \
               [s for s in run.stats if s.get("sorted_gradient")]
        picks = rows if len(rows) <= 5 else [rows[round(i * (len(rows) - 1) / 4)] for i in range(5)]
        for s in picks:
            g = [max(abs(v), 1e-12) for v in s["sorted_gradient"]]
            ax.plot([100 * i / max(1, len(g) - 1) for i in range(len(g))], g, label=f"epoch {s['epoch']}")
        kappa = run.config.get("sparsity", {}).get("sparsity", 0)
        ax.axvline(100 * kappa, color="k", ls="--", lw=1, label=f"cut at kappa = {kappa:g}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=1e-12)
    ax.set_xlabel("weights sorted by magnitude (percentile)")
    ax.set_ylabel("|regularizer gradient|")
    ax.set_title(f"(a) {runs[0].label}: gradient against sorted weight index")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def _fig_exploration(plt, runs, path):
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        pts = [(s["epoch"], (s["entered"] + s["left"]) / 2 / max(1, s["kept"])) for s in run.stats if "entered" in s]
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker=".", label=run.label)
    _shade(ax, runs[0].metrics)
    ax.set_xlabel("epoch")
    ax.set_ylabel("kept set exchanged (%)")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(bottom=0)
    ax.set_title("(b) exploration: kept set exchanged since the previous logged epoch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def _fig_layers(plt, runs, path):
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(runs)
    names = list(runs[0].stats[-1]["layer_zeros"])
    for i, run in enumerate(runs):
        zeros = run.stats[-1]["layer_zeros"]
        ax.bar([j + i * width for j in range(len(names))], [100 * zeros.get(n, 0) for n in names], width,
               label=run.label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))])
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("zero weights (%)")
    ax.set_title("(c) per-layer sparsity of the final model")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def _moments(run):
    stats = run.stats
    chosen = {}
    warm = [s for s in stats if s["phase"] == "warmup"]
    if warm:
        chosen["end of warm-up"] = warm[-1]
    cut = [s for s in stats if s.get("event") == "stop"]
    if cut:
        chosen["at the cut"] = cut[0]
    chosen["after fine-tuning"] = stats[-1]
    return chosen


def _fig_histograms(plt, runs, path):
    lo, hi, bins = HIST_EDGES
    centres = [lo + (hi - lo) * (i + 0.5) / (bins - 1) for i in range(bins - 1)]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, s in _moments(runs[0]).items():
        ax.step([10**c for c in centres], s["hist_log10"], where="mid",
                label=f"{name} (epoch {s['epoch']}, {s['exact_zeros']:,} exact zeros)")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("|w|")
    ax.set_ylabel("weights")
    ax.set_title(f"(d) {runs[0].label}: weight magnitudes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def _fig_curves(plt, runs, path):
    run = runs[0]
    m = run.metrics
    fig, ax = plt.subplots(figsize=(7, 4))
    _shade(ax, m)
    ep = [r["epoch"] for r in m]
    ax.plot(ep, [100 * r["train_acc"] for r in m], label="dense training acc (running)")
    ax.plot(ep, [100 * r["val_acc"] for r in m], label="validation acc")
    pr = [(r["epoch"], 100 * r["pruned_acc"]) for r in m if r.get("pruned_acc") is not None]
    if pr:
        ax.plot([p[0] for p in pr], [p[1] for p in pr], marker="o", label="pruned copy acc")
    mass = [(r["epoch"], 100 * r["pruned_mass"]) for r in m if r.get("pruned_mass") is not None]
    if mass:  # ART runs only
        ax.plot([p[0] for p in mass], [p[1] for p in mass], "--", label="L1 mass the pruned copy drops (%)")
    ax.set_xlabel("epoch (grey warm-up, orange regularize, green fine-tune)")
    ax.set_ylabel("accuracy, L1 share (%)")
    ax.legend(fontsize=7, loc="lower right")
    lam = [(r["epoch"], r["lambda"]) for r in m if r.get("lambda")]
    if lam:
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in lam], [p[1] for p in lam], "k:", label="lambda")
        ax2.set_yscale("log")
        ax2.set_ylabel("lambda (dotted)")
    ax.set_title(f"(e) {run.label}: training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def _fig_per_class(plt, runs, path):
    rows = [s for s in runs[0].stats if s.get("pruned_per_class")]
    fig, ax = plt.subplots(figsize=(7, 4))
    if rows:
        for c in range(min(len(s["pruned_per_class"]) for s in rows)):
            ax.plot([s["epoch"] for s in rows], [100 * s["pruned_per_class"][c] for s in rows], marker=".",
                    label=f"class {c}")
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "no regularization epochs in this run", ha="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("pruned copy accuracy (%)")
    ax.set_title(f"(f) {runs[0].label}: per-class accuracy of the pruned copy during ART")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")


def build_report(run_dirs: list[str | Path], out_dir: str | Path | None = None, plugin: str | None = None) -> Path:
    """Write the PNGs and ``report.html`` into ``out_dir`` (default: the first run's folder); returns the HTML path.

    The runs' files are read through their schemas, every figure is drawn in memory, and only then is anything
    written (each file atomically): a run whose logs cannot be drawn leaves no file behind."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UserError("the report needs matplotlib: pip install 'hypersparse[cli]'") from exc
    runs = [load_run(d, plugin) for d in run_dirs]
    for run in runs:
        _check_drawable(run)
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder")
    images = {name: _draw(plt, name, runs) for name in FIGURES}
    text = _html(runs, images)
    new_folder = out_dir is not None and not os.path.lexists(out_dir)
    out = output_folder(out_dir, "--out") if out_dir else runs[0].dir
    refuse_if_written(out, "write the report there")  # a run folder has one writer
    _check_ours(out)
    for path in [out / f"{name}.png" for name in FIGURES] + [out / "report.html"]:
        if path.is_dir():  # the user gave the folder: name what in it is in the way
            raise UserError(f"--out {out}: {path.name} there is a folder, where the report writes its {path.name}; "
                            "move it away or choose another --out")
    files = {output_file(out / f"{name}.png", "--out"): images[name] for name in FIGURES}
    page = output_file(out / "report.html", "--out")
    files[page] = text.encode()
    new = [path for path in files if not os.path.lexists(path)]
    try:
        for path, data in files.items():
            atomic_write(path, lambda f, data=data: f.write(data))
    except OSError:  # a full disk: no half report; what this call made goes (files that were there stay replaced)
        for path in new:
            path.unlink(missing_ok=True)
        if new_folder:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    _to_trackers(runs, out)
    return page


def _check_drawable(run: Run) -> None:
    """A run the figures can be drawn from: a finished epoch, and its statistics."""
    if not run.metrics:
        raise UserError(f"{run.dir} has no finished epoch in metrics.jsonl; train it for an epoch first")
    if not run.stats and (run.dir / "stats.jsonl").exists():  # there, but not one complete row in it
        raise UserError(f"{run.dir / 'stats.jsonl'} is empty or damaged (no complete line); rerun with statistics "
                        "for a report")
    if not run.stats:
        raise UserError(f"{run.dir} has no stats.jsonl (trained with --set run.stats=false?); rerun with "
                        "statistics for a report")


def _draw(plt, name: str, runs: list[Run]) -> bytes:
    """One figure as PNG bytes, drawn in memory; logs it cannot be drawn from are one line naming the figure."""
    makers = {"gradient": _fig_gradient, "exploration": _fig_exploration, "layers": _fig_layers,
              "histograms": _fig_histograms, "curves": _fig_curves, "per_class": _fig_per_class}
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib's notes (an empty log axis) would be lines on stderr
            makers[name](plt, runs, buffer)
    except (ValueError, KeyError, IndexError, TypeError, ZeroDivisionError) as exc:
        raise UserError(f"cannot draw {name}.png from the logs of {', '.join(str(r.dir) for r in runs)} "
                        f"({type(exc).__name__}: {first_line(exc, 120)}); the logs "
                        "are damaged or of another version") from None
    finally:
        plt.close("all")
    return buffer.getvalue()


def _html(runs: list[Run], images: dict[str, bytes]) -> str:
    """The report page: a summary table, the figures inline, and each run's settings."""
    parts = [f"<!doctype html><meta charset='utf-8'>{GENERATOR}",
             "<style>body{font-family:sans-serif;max-width:900px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}</style>",
             "<h1>hypersparse run report</h1>", "<h2>Summary</h2>",
             "<table><tr><th>run</th><th>method</th><th>sparsity</th><th>dense test</th><th>sparse val</th>"
             "<th>sparse test</th><th>epochs</th></tr>"]
    for run in runs:
        s = run.summary or {}
        sp, de = s.get("sparse") or {}, s.get("dense") or {}
        fmt = lambda v: f"{100 * v:.2f} %" if isinstance(v, (int, float)) else "-"  # noqa: E731
        parts.append(f"<tr><td>{html.escape(run.dir.name)}</td><td>{html.escape(run.label)}</td>"
                     f"<td>{fmt(sp.get('sparsity'))}</td><td>{fmt(de.get('test_acc'))}</td>"
                     f"<td>{fmt(sp.get('val_acc'))}</td><td>{fmt(sp.get('test_acc'))}</td>"
                     f"<td>{html.escape(_epochs(s.get('epochs')))}</td></tr>")
    parts.append("</table>")
    for name in FIGURES:
        data = base64.b64encode(images[name]).decode()
        parts.append(f"<h2>{name.replace('_', ' ')}</h2><img alt='{name}.png' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Settings</h2>")
    for run in runs:
        parts.append(f"<h3>{html.escape(run.dir.name)}</h3><pre>{html.escape(json.dumps(run.config, indent=1))}</pre>")
    return "\n".join(parts)


GENERATOR = "<title>hypersparse report</title>"  # every report.html begins with it: the mark of one


def _check_ours(out: Path) -> None:
    """UserError if ``out`` holds a file under a report's names (report.html, the figures) that no report wrote:
    a report replaces its own files, never a user's ``curves.png``. A report.html that begins as a report does
    vouches for the figures beside it."""
    page = out / "report.html"
    names = [page] + [out / f"{name}.png" for name in FIGURES]
    present = [p for p in names if p.exists() or p.is_symlink()]
    if not present:
        return
    try:
        ours = page.is_file() and not page.is_symlink() and GENERATOR.encode() in page.read_bytes()[:4096]
    except OSError:
        ours = False
    if not ours:
        raise UserError(f"--out {out} holds {present[0].name}, which no hypersparse report wrote; choose an empty "
                        "folder or another --out (a report writes report.html and its figures there)")


def _epochs(epochs) -> str:
    """The epochs column: ``warmup 60, regularize 103, finetune 160`` (``-`` for a run without a summary)."""
    if not isinstance(epochs, dict) or not epochs:
        return "-"
    return ", ".join(f"{phase} {n}" for phase, n in epochs.items())


def _to_trackers(runs, out: Path) -> None:
    """The figures into each run's tracker, for runs that log to one (``run.log``), at the run's last epoch."""
    from hypersparse.tracking import open_tracker

    for run in runs:
        kind = (run.config.get("run") or {}).get("log")
        if kind is None or not run.metrics:
            continue
        try:
            tracker = open_tracker(kind, run.dir, run.config)
        except UserError:  # the package is gone since training: the report itself is written all the same
            continue
        try:
            for name in FIGURES:
                tracker.log_image(f"report/{name}", out / f"{name}.png", run.metrics[-1]["epoch"])
        finally:
            tracker.close()
