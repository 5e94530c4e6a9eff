"""``hypersparse tune``: search lambda_init and eta with Optuna, scored on the validation split, resumable.

The authors tuned these with SMAC; here a seeded TPE sampler proposes
``(lambda_init, eta)`` on log scales, each trial is a full ``hypersparse train``
run in ``STUDY_DIR/trial-<n>``, and its score is the final sparse model's
validation accuracy (the test set is never looked at). The study lives in
SQLite (``STUDY_DIR/study.db`` by default): running the same command again
continues it up to ``--trials`` finished trials, and a trial whose process was
killed is marked failed and tried again with the same values.
"""
from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from urllib.parse import quote

from hypersparse.checkpoint import output_folder, own_folder, write_json
from hypersparse.config import TrainConfig
from hypersparse.errors import RunDiverged, RunStopped, Terminated, UserError
from hypersparse.method import method_entry
from hypersparse.schedule import ARTDidNotConverge


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError('hypersparse tune needs Optuna: pip install "hypersparse[tune]"') from None
    return optuna


def parse_range(text: str, name: str) -> tuple[float, float]:
    """``"low,high"`` with ``0 < low < high``, or UserError naming the flag."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{name} must be two numbers 'low,high', got {text!r}") from None
    if not (0 < low < high and math.isfinite(high)):
        raise UserError(f"{name} needs 0 < low < high, got {text!r}")
    return low, high


def _check_storage(url: str) -> None:
    """UserError unless ``url`` is a database URL whose driver is installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
        raise UserError(f"--storage {url!r} is not a usable database URL ({exc}); e.g. sqlite:///study.db") from None


def tune(base: TrainConfig, study_dir: str | Path, trials: int = 20, lambda_range=(1e-7, 1e-3), eta_range=(1.01, 1.5),
         storage: str | None = None, out=sys.stdout) -> dict:
    """Run trials until ``trials`` have finished (counting those of earlier calls); returns the best one."""
    optuna = _optuna()
    from hypersparse.engine import train

    entry = method_entry(base.sparsity.method)
    if entry is None or not entry.tune:
        raise UserError(f"hypersparse tune searches ART's lambda_0 and eta; --method {base.sparsity.method} has neither")
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    base.validate()
    if storage:
        _check_storage(storage)
    study_dir = output_folder(study_dir, "--study-dir")
    for folder in study_dir.glob("trial-*"):  # a planted link would take a trial's run (and overwrites) elsewhere
        if re.fullmatch(r"trial-\d+", folder.name):
            own_folder(folder, "a trial's run folder")
    # quoted: a '?' or '#' in the folder name would otherwise end the path part of the URL
    storage = storage or f"sqlite:///{quote(str((study_dir / 'study.db').resolve()))}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="hypersparse", storage=storage, load_if_exists=True, direction="maximize")
    # seeded by the history, so a continued study proposes new values instead of replaying the first ones
    study.sampler = optuna.samplers.TPESampler(seed=base.run.seed * 100_003 + len(study.trials))
    state = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):  # a process killed mid-trial
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, state.FAIL)
        study.enqueue_trial(t.params)
        print(f"trial {t.number} was interrupted; its values are tried again", file=out)

    stopped: list[RunStopped] = []
    refused: list[UserError] = []

    def objective(trial) -> float:
        cfg = TrainConfig.from_dict({"art.lambda_init": trial.suggest_float("lambda_init", *lambda_range, log=True),
                                     "art.eta": trial.suggest_float("eta", *eta_range, log=True)}, base=base)
        run_dir = study_dir / f"trial-{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            own_folder(run_dir, "a trial's run folder")  # checked above; again now: one planted since then
        except UserError as exc:  # one line, as any bad input (raised here, Optuna would print a traceback)
            refused.append(exc)
            study.enqueue_trial(trial.params)  # its values are tried when the study continues, as a stopped one's
            study.stop()
            raise optuna.TrialPruned() from None
        try:
            with open(os.devnull, "w") as quiet:
                summary = train(cfg, run_dir, progress=False, out=quiet)
        except RunStopped as exc:  # Ctrl-C or SIGTERM: the same values are tried again when the study continues
            stopped.append(exc)
            study.enqueue_trial(trial.params)
            study.stop()
            raise optuna.TrialPruned() from None  # not counted as finished, and not logged as a failure
        trial.set_user_attr("test_acc", summary["sparse"]["test_acc"])  # recorded, never used to choose
        trial.set_user_attr("epochs", summary["epochs"])
        print(f"trial {trial.number}: lambda_init {cfg.art.lambda_init:.3g}, eta {cfg.art.eta:.4g} -> validation "
              f"{summary['sparse']['val_acc']:.2%} ({sum(summary['epochs'].values())} epochs)", file=out, flush=True)
        return summary["sparse"]["val_acc"]

    finished = sum(not t.user_attrs.get("interrupted")
                   for t in study.get_trials(deepcopy=False, states=(state.COMPLETE, state.FAIL)))
    if finished < trials:
        study.optimize(objective, n_trials=trials - finished, catch=(ARTDidNotConverge, RunDiverged))
    if refused:
        raise refused[0]
    if stopped:  # one line, as for any command: running it again continues the study
        raise Terminated() if stopped[0].code == 143 else KeyboardInterrupt()
    done = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    if not done:
        raise UserError("no trial finished (ART did not converge or diverged in all); widen --lambda-range/--eta-range")
    best = study.best_trial
    result = {"lambda_init": best.params["lambda_init"], "eta": best.params["eta"], "val_acc": best.value,
              "trial": best.number, "run_dir": best.user_attrs.get("run_dir"), "trials": len(study.trials),
              "storage": storage, "base_config": base.to_dict()}
    write_json(study_dir / "best.json", result)
    print(f"best of {len(done)} finished trials: trial {best.number}, lambda_init {result['lambda_init']:.3g}, "
          f"eta {result['eta']:.4g}, validation {best.value:.2%} -> {study_dir / 'best.json'}", file=out)
    return result


