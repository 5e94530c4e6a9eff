"""``--compare oneshot,gmp,snip,rigl``: after a run, other methods at the same seed and epoch budget.

Each trains in ``<run>/compare-<method>/`` with the run's warm-up, as many epochs between warm-up and fine-tuning as
the run had (ART: as many as it regularized), and the run's fine-tuning (so every model gets the same number of
epochs), and is added to the run's final table and ``summary.json``. A stopped comparison resumes with the run's
``--resume``.

:func:`train` and :func:`resume` are the engine's, with the comparison after the run (inside its lock); the engine
itself knows nothing of baselines.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from hypersparse import engine
from hypersparse.checkpoint import own_folder, write_json
from hypersparse.config import TrainConfig
from hypersparse.errors import RunStopped
from hypersparse.run_read import CHECKPOINT, SUMMARY, read_json
from hypersparse.run_write import RunFiles, format_summary


def baseline_config(cfg: TrainConfig, method: str, reg_epochs: int) -> TrainConfig:
    """``method`` with the run ``cfg``'s phases, in epochs as they ran (no further scaling); ``reg_epochs``: the run's
    epochs between warm-up and fine-tuning."""
    schedule = replace(cfg.schedule, epochs_scale=1.0, warmup_epochs=cfg.warmup, finetune_epochs=cfg.finetune,
                       lr_steps=",".join(str(m) for m in cfg.milestones) or "0")
    cfg = cfg.with_sections(sparsity=replace(cfg.sparsity, method=method), schedule=schedule,
                            baseline=replace(cfg.baseline, prune_epochs=max(1, reg_epochs)),
                            run=replace(cfg.run, compare=None, run_dir=None))
    return replace(cfg, given=frozenset())


def train(cfg: TrainConfig, run_dir: str | Path | None = None, progress: bool | None = None, out=None) -> dict:
    """:func:`hypersparse.engine.train`, then the baselines ``cfg.run.compare`` names (``hypersparse train``)."""
    target = run_dir or cfg.run.run_dir
    if target:  # before the run, not after it: a planted link is refused before anything is trained or written
        for method in _methods(cfg):
            _folder(Path(target), method)
    return engine.train(cfg, run_dir, progress, out or sys.stdout, then=_comparison(progress))  # stdout as it is now


def resume(run_dir: str | Path, progress: bool | None = None, out=None, trust_code: bool = False,
           confirmed: dict | None = None) -> dict:
    """:func:`hypersparse.engine.resume`, then the baselines the run's ``run.compare`` names (``--resume``)."""
    for folder in Path(run_dir).glob("compare-*"):  # every baseline's folder, before the run goes on
        if folder.is_symlink():  # (a user's compare-notes.txt is none of ours: left alone)
            _folder(Path(run_dir), folder.name.removeprefix("compare-"))
    return engine.resume(run_dir, progress, out or sys.stdout, trust_code, confirmed, then=_comparison(progress))


def _methods(cfg: TrainConfig) -> list[str]:
    return [m.strip() for m in (cfg.run.compare or "").split(",") if m.strip()]


def _folder(run_dir: Path, method: str) -> Path:
    """``<run>/compare-<method>``, where that baseline runs: UserError if it is a symbolic link (or not a folder)."""
    return own_folder(run_dir / f"compare-{method}", f"the folder of --compare {method}")


def _comparison(progress: bool | None) -> engine.Then:
    def then(cfg: TrainConfig, files: RunFiles, summary: dict) -> dict:
        if not cfg.run.compare:
            files.say(format_summary(summary))
            return summary
        return compare_baselines(cfg, files, summary, progress)

    return then


def compare_baselines(cfg: TrainConfig, files: RunFiles, summary: dict, progress: bool | None) -> dict:
    """Train (or resume, or read back) each baseline of ``cfg.run.compare``; return ``summary`` with ``compare``."""
    run_dir = files.path
    reg_epochs = max(0, sum(summary["epochs"].values()) - cfg.warmup - cfg.finetune)  # ART's: its regularization
    results = {}
    for method in _methods(cfg):
        folder = _folder(run_dir, method)
        done = read_json(folder / SUMMARY)
        if done is None:
            files.say(f"comparing with {method} at the same seed and budget ({cfg.warmup} warm-up + {reg_epochs} "
                      f"pruning-phase + {cfg.finetune} fine-tuning epochs) in {folder}")
            out = files.out if files.main else open(os.devnull, "w")
            try:
                done = engine.resume(folder, progress, out, trust_code=True, quiet=True, label=method) \
                    if (folder / CHECKPOINT).exists() else \
                    engine.train(baseline_config(cfg, method, reg_epochs), folder, progress, out, quiet=True,
                                 label=method)
            except RunStopped as exc:  # the advice names the run, whose --resume finishes every comparison
                what = str(exc).split(";")[0]
                raise RunStopped(f"{what} while comparing with {method}; continue with hypersparse train --resume "
                                 f"{shlex.quote(str(run_dir))} (it finishes the comparison)", exc.code) from None
        results[method] = {"run_dir": folder.name, **done["sparse"]}
    summary = {**summary, "compare": results}
    if files.main:
        files.check_still_ours()
        write_json(run_dir / SUMMARY, summary)
    files.say(format_summary(summary))
    return summary
