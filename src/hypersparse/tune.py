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

import contextlib
import math
import os
import re
import signal
import stat
import sys
import threading
import traceback
from pathlib import Path
from urllib.parse import quote

from hypersparse.checkpoint import output_file, output_folder, own_folder, write_json
from hypersparse.config import TrainConfig
from hypersparse.engine import check_setup
from hypersparse.errors import RunDiverged, RunStopped, Terminated, UserError, first_line
from hypersparse.method import method_entry
from hypersparse.run_read import read_json
from hypersparse.run_write import RUN_FILES, RunLock
from hypersparse.schedule import ARTDidNotConverge


def _retry_interrupted(study, state, lambda_range, eta_range, out) -> None:
    """Trials a killed process left RUNNING: marked failed (and interrupted), their values tried again first when
    they are within the ranges searched."""
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, state.FAIL)
        if _in_ranges(t.params, lambda_range, eta_range):
            study.enqueue_trial(t.params)
            print(f"trial {t.number} was interrupted; its values are tried again", file=out)
        else:  # a study file edited, or of other ranges: Optuna would fail on the values with a traceback
            print(f"trial {t.number} was interrupted; its values {t.params} are not within --lambda-range and "
                  "--eta-range, so new ones are tried", file=out)


def _in_ranges(params: dict, lambda_range, eta_range) -> bool:
    """Whether a stored trial's values can be proposed again: finite numbers within the ranges searched."""
    values = [(params.get("lambda_init"), lambda_range), (params.get("eta"), eta_range)]
    return all(isinstance(v, float) and math.isfinite(v) and lo <= v <= hi for v, (lo, hi) in values)


class _Signals:
    """Ctrl-C and SIGTERM while a study runs: inside a trial's training they raise (the run stops cleanly at its
    checkpoint and the trial is tried again); anywhere else, in Optuna's bookkeeping of a trial, they are held until
    the next trial would start, so that no trial is stored half-written and Optuna prints no traceback."""

    def __init__(self):
        self.pending: list[int] = []
        self._raise = False

    def _handle(self, signum, frame) -> None:
        if self._raise:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.pending.append(signum)

    @contextlib.contextmanager
    def deferred(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in saved:
            signal.signal(sig, self._handle)
        try:
            yield
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def raising(self):
        self._raise = True
        try:
            if self.pending:  # held since the trial began: stop before its run starts
                raise Terminated() if self.pending[0] == signal.SIGTERM else KeyboardInterrupt()
            yield
        finally:
            self._raise = False


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


MAX_TRIALS = 1000  # each trial is a full training run; a TPE search of two values settles long before this
SQLITE_MAGIC = b"SQLite format 3\x00"


def check_ranges(base: TrainConfig, lambda_range: tuple[float, float], eta_range: tuple[float, float]) -> None:
    """UserError unless both ends of each range are values ``--lambda-init`` and ``--eta`` accept in ``base``
    (the settings' own rules, the one that ties eta to ``--epochs-scale`` included)."""
    for flag, key, bounds in (("--lambda-range", "art.lambda_init", lambda_range),
                              ("--eta-range", "art.eta", eta_range)):
        for value in bounds:
            try:
                TrainConfig.from_dict({key: value}, base=base)
            except UserError as exc:
                raise UserError(f"{flag} {bounds[0]:g},{bounds[1]:g} is outside the setting's range: {exc}") from None


def _shown(url: str) -> str:
    """The URL with its password hidden, as messages show it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # an unparsable URL is shown as given
        return url


def _check_storage(url: str) -> None:
    """UserError unless ``url`` is a database URL whose driver is installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
        # the driver (psycopg2, pymysql...) is imported only on connecting: import it now, before any file is made
        load = getattr(dialect, "import_dbapi", None) or getattr(dialect, "dbapi", None)  # SQLAlchemy 2 or 1.x
        if callable(load):
            load()
    except (ArgumentError, NoSuchModuleError, ValueError, ImportError) as exc:
        raise UserError(f"--storage {_shown(url)!r} is not a usable database URL ({exc}); install its database "
                        "driver, or give e.g. sqlite:///study.db") from None


def _sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///`` storage URL names; None for other storage, in-memory or URI-style databases."""
    from sqlalchemy.engine import make_url

    url_ = make_url(url)
    if url_.get_backend_name() != "sqlite" or not url_.database or url_.database.startswith(("file:", ":memory:")):
        return None
    return Path(url_.database)


def _not_a_link(db: Path, what: str, fix: str) -> None:
    """UserError if the study folder's own study.db is a symbolic or hard link: writing the study would change the
    file it links to (a --storage the user names may be one: that is their choice)."""
    try:
        st = os.lstat(db)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a hard link to another file"
        raise UserError(f"{what}: {db} is {kind}, which the study would write through; {fix}")


def _check_sqlite_file(url: str, what: str, fix: str) -> None:
    """UserError unless the SQLite file ``url`` names is absent, empty, or an Optuna study's database: a user's
    text file or another program's database is refused before SQLite or Optuna write anything into it."""
    import sqlite3

    path = _sqlite_path(url)
    if path is None or not path.exists():
        return
    if not path.is_file():
        raise UserError(f"{what}: {path} is not a regular file; {fix}")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        if not head:
            return  # SQLite takes an empty file as a new database
        if head != SQLITE_MAGIC:
            raise UserError(f"{what}: {path} is not a SQLite database (it was not changed); {fix}")
        with sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            # SQL kept in the file: a trigger runs on Optuna's own writes, a view answers its reads in a table's
            # place. Optuna makes neither, so a database holding one was made to change what the study says.
            code = sorted({row[0] for row in db.execute("SELECT type FROM sqlite_master WHERE type IN "
                                                        "('trigger', 'view')")})
    except OSError as exc:
        raise UserError(f"{what}: cannot read {path} ({exc.strerror or exc}); check its permissions") from None
    except sqlite3.Error as exc:
        raise UserError(f"{what}: {path} is not a readable SQLite database ({exc}); {fix}") from None
    if tables and "studies" not in tables:
        raise UserError(f"{what}: {path} holds another program's database, not an Optuna study (it was not "
                        f"changed); {fix}")
    if code:
        raise UserError(f"{what}: {path} holds SQL {' and '.join(c + 's' for c in code)}, which Optuna never makes "
                        f"(SQL kept in a file would run on the study's writes or stand in for its tables; it was not "
                        f"changed); {fix}")


def _stored_trials(url: str) -> int | None:
    """How many trials the SQLite study database ``url`` holds for hypersparse's study (0 if none, or no such file);
    None for other storage, which is not read here. Read-only: nothing is created."""
    import sqlite3

    path = _sqlite_path(url)
    if path is None:
        return None
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    try:
        with sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM trials JOIN studies ON trials.study_id = studies.study_id "
                              "WHERE studies.study_name = 'hypersparse'").fetchone()[0]
    except sqlite3.Error:
        return None  # Optuna's own reading says what is wrong with it


def _file_size_limited() -> bool:
    """Whether this process may only write files up to a size (``ulimit -f``)."""
    import resource

    return resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY


def _open_study(optuna, storage: str, what: str, fix: str, new_file: Path | None = None):
    """The study in ``storage`` (checked by :func:`_check_sqlite_file` first); one UserError for a database that cannot
    be opened or used. ``new_file``: the SQLite file this call creates, removed again if the study cannot be made."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        study = optuna.create_study(study_name="hypersparse", storage=storage, load_if_exists=True,
                                    direction="maximize")
    except (ImportError, SQLAlchemyError, RuntimeError) as exc:  # no driver, no server, a schema Optuna cannot read
        if new_file is not None:
            new_file.unlink(missing_ok=True)  # ours, and without a study in it
        first = first_line(exc, None)
        if "disk is full" in first or "No space left" in first:
            fix = "free some space, or " + ("choose another --study-dir" if new_file is not None else "give another")
        elif "disk I/O error" in first and _file_size_limited():  # SQLite's word for a write past ulimit -f
            fix = "the process's file-size limit (ulimit -f) may be what stopped the write; raise it and run again"
        raise UserError(f"{what}: cannot open the Optuna study ({first}); {fix}") from None
    # a study continued keeps the direction it was stored with: one that minimises would name the worst trial best
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"{what}: the study minimises its score, and hypersparse tune maximises validation accuracy "
                        f"(the database was changed by something else); {fix}")
    return study


def tune(base: TrainConfig, study_dir: str | Path, trials: int = 20, lambda_range=(1e-7, 1e-3), eta_range=(1.01, 1.5),
         storage: str | None = None, out=None) -> dict:
    """Run trials until ``trials`` have finished (counting those of earlier calls); returns the best one."""
    out = sys.stdout if out is None else out  # the stream at call time (a caller may redirect it)
    optuna = _optuna()
    entry = method_entry(base.sparsity.method)
    if entry is None or not entry.tune:
        raise UserError("hypersparse tune searches ART's lambda_init and eta; "
                        f"--method {base.sparsity.method} has neither")
    if not 1 <= trials <= MAX_TRIALS:
        raise UserError(f"--trials must be in 1..{MAX_TRIALS} (each trial is a full training run), got {trials}")
    if base.run.compare:  # a flag that does not apply is an error, not ignored
        raise UserError("--compare does not apply to tune (its trials are ART runs scored on validation); run "
                        "hypersparse train --compare with the best.json values instead")
    base.validate()
    check_ranges(base, lambda_range, eta_range)
    given = bool(storage)
    if storage:
        _check_storage(storage)
    what, fix = (f"--storage {_shown(storage)}", "give another (e.g. sqlite:///study.db)") if storage else \
        (f"--study-dir {study_dir}", "move study.db away or choose another --study-dir")
    db = Path(study_dir) / "study.db"
    if not given:
        _not_a_link(db, what, fix)
    new_file = None if storage or db.exists() else db  # what this call creates, and so may remove again
    # quoted: a '?' or '#' in the folder name would otherwise end the path part of the URL
    storage = storage or f"sqlite:///{quote(str(db.resolve()))}"
    _check_sqlite_file(storage, what, fix)  # before anything is created
    run_file = next((n for n in RUN_FILES if os.path.lexists(Path(study_dir) / n)), None)
    if run_file is not None:  # a training run's folder: the study's files would mix with the run's
        raise UserError(f"--study-dir {study_dir} holds a training run (its {run_file}); a study keeps study.db, "
                        "best.json and its trials' folders: pick another --study-dir")
    check_setup(base, Path(study_dir))  # a model that cannot take the data: one line, and no study made
    study_dir = output_folder(study_dir, "--study-dir")
    output_file(study_dir / "best.json", "--study-dir")  # a link or a folder there: refused before any trial runs
    # one tune per study: a second would take the first's running trial for an interrupted one
    with RunLock(study_dir, study=True):
        try:
            return _study(optuna, base, study_dir, trials, lambda_range, eta_range, storage, (what, fix, new_file),
                          out)
        except optuna.exceptions.StorageInternalError as exc:  # a read-only or full database file, mid-study
            cause = first_line(exc.__cause__ or exc)
            raise UserError(f"{what}: the study cannot be written ({cause}); make it writable, or "
                            f"{fix.split('; ')[-1] if '; ' in fix else fix}") from None
        except (ValueError, IndexError, KeyError, TypeError) as exc:
            if not _raised_in_optuna(exc):
                raise
            first = first_line(exc)
            raise UserError(f"{what}: Optuna cannot read the trials the study holds ({type(exc).__name__}: {first}); "
                            f"{fix}") from None


def _raised_in_optuna(exc: BaseException) -> bool:
    """Whether ``exc`` came from inside Optuna (a study.db whose stored trials it cannot read), not from ours."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f"{os.sep}optuna{os.sep}" in frames[-1].filename


#: settings a study's trials may differ in: what it searches, and what only records or places the run
NOT_COMPARED = {("art", "lambda_init"), ("art", "eta"), ("run", "run_dir"), ("run", "stats"), ("run", "log"),
                ("run", "threads"), ("run", "device")}


def _same_settings(study, base: TrainConfig, what: str) -> None:
    """A continued study must train its trials as before: its best trial is chosen across all of them. The first
    call records the settings in the study; a later one with other settings is one line naming the first that
    differs."""
    ours = {f"{section}.{key}": value for section, values in base.to_dict().items() for key, value in values.items()
            if (section, key) not in NOT_COMPARED}
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", ours)
        return
    differ = sorted(k for k in set(stored) | set(ours) if stored.get(k) != ours.get(k))
    if differ:
        k = differ[0]
        raise UserError(f"{what} holds a study whose trials ran with {k}={stored.get(k)!r}, not {ours.get(k)!r}"
                        f"{f' (and {len(differ) - 1} more)' if len(differ) > 1 else ''}; its best trial would mix "
                        "them: continue it with the same settings, or choose another --study-dir")


class _Objective:
    """One trial: ART at the values Optuna proposes, trained into ``trial-N``; its validation accuracy is the score.
    Whatever ends the study early (a signal, a problem every trial would meet) is kept in ``stopped`` and said in one
    line once Optuna has returned, not through its failed-trial traceback."""

    def __init__(self, optuna, study, base: TrainConfig, study_dir: Path, ranges: tuple, signals: "_Signals", out):
        self.optuna, self.study, self.base, self.study_dir, self.out = optuna, study, base, study_dir, out
        self.lambda_range, self.eta_range = ranges
        self.signals = signals
        self.stopped: list[Exception] = []

    def _stop(self, trial, exc: Exception):
        """End the study after this trial, whose values are tried again when the study continues."""
        self.stopped.append(exc)
        self.study.enqueue_trial(trial.params)
        self.study.stop()
        return self.optuna.TrialPruned()  # not counted as finished, and not logged as a failure

    def __call__(self, trial) -> float:
        from hypersparse.engine import train

        try:
            proposed = {"art.lambda_init": trial.suggest_float("lambda_init", *self.lambda_range, log=True),
                        "art.eta": trial.suggest_float("eta", *self.eta_range, log=True)}
        except ValueError as exc:  # the study's stored trials searched these names as another kind of parameter
            self.stopped.append(UserError(f"the study in {self.study_dir} searched lambda_init or eta as another kind "
                                          f"of parameter ({exc}); choose another --study-dir"))
            self.study.stop()
            raise self.optuna.TrialPruned() from None
        cfg = TrainConfig.from_dict(proposed, base=self.base)
        run_dir = self.study_dir / f"trial-{trial.number}"
        if self.signals.pending:  # came between trials: this one does not start, and its values wait for the next run
            self.study.enqueue_trial(trial.params)
            self.study.stop()
            raise self.optuna.TrialPruned()
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            own_folder(run_dir, "a trial's run folder")  # checked when the study opened; again now: one planted since
        except UserError as exc:  # one line, as any bad input (raised here, Optuna would print a traceback)
            raise self._stop(trial, exc) from None
        try:
            with open(os.devnull, "w") as quiet, self.signals.raising():
                summary = train(cfg, run_dir, progress=False, out=quiet)
        except (ARTDidNotConverge, RunDiverged) as exc:
            # an outcome, not an error: Optuna would log a failed trial with its traceback, so it is pruned instead
            # (quiet, and TPE takes it as a poor result) and marked, so that it counts as finished
            outcome = "diverged" if isinstance(exc, RunDiverged) else "did not converge"
            trial.set_user_attr("failed", outcome)
            print(f"trial {trial.number}: lambda_init {cfg.art.lambda_init:.3g}, eta {cfg.art.eta:.4g} -> ART "
                  f"{outcome}", file=self.out, flush=True)
            raise self.optuna.TrialPruned() from None
        except (RunStopped, UserError, OSError, KeyboardInterrupt) as exc:
            # Ctrl-C, SIGTERM (a KeyboardInterrupt when it comes while the run sets up, before its own handlers), or
            # a problem every trial would meet
            raise self._stop(trial, exc) from None
        trial.set_user_attr("test_acc", summary["sparse"]["test_acc"])  # recorded, never used to choose
        trial.set_user_attr("epochs", summary["epochs"])
        print(f"trial {trial.number}: lambda_init {cfg.art.lambda_init:.3g}, eta {cfg.art.eta:.4g} -> validation "
              f"{summary['sparse']['val_acc']:.2%} ({sum(summary['epochs'].values())} epochs)", file=self.out,
              flush=True)
        if self.signals.pending:  # came once the run had finished: the trial counts, and the study stops after it
            self.study.stop()
        return summary["sparse"]["val_acc"]


def _finished(study, state) -> int:
    """Trials that count toward --trials: completed ones, and those that diverged or did not converge (an outcome);
    not those a signal or a problem stopped, nor interrupted ones (tried again)."""
    ended = study.get_trials(deepcopy=False, states=(state.COMPLETE, state.FAIL, state.PRUNED))
    # FAIL: a trial that diverged in a study of an earlier version (PRUNED and marked now)
    return sum((t.state != state.PRUNED or "failed" in t.user_attrs) and not t.user_attrs.get("interrupted")
               for t in ended)


def _check_done(done: list, what: str, fix: str) -> None:
    """The finished trials the study holds, as a trial of ours leaves them: a validation accuracy in [0, 1] and
    values inside the ranges they were drawn from. The database is a file like any other: one edited by hand (or
    by another program) is refused in one line, not reported as the best trial."""
    for t in done:
        bad = None
        if not isinstance(t.value, (int, float)) or not 0 <= t.value <= 1:
            bad = f"a validation accuracy of {t.value!r}"
        for name in ("lambda_init", "eta"):
            value, dist = t.params.get(name), t.distributions.get(name)
            low, high = getattr(dist, "low", None), getattr(dist, "high", None)
            if bad is None and (not isinstance(value, (int, float)) or low is None or not low <= value <= high):
                bad = f"{name} {value!r}, outside the range it was drawn from"
        if bad is not None:
            raise UserError(f"{what}: trial {t.number} of the study holds {bad}, which no trial of hypersparse tune "
                            f"writes (the database was changed by something else); {fix}")


def _raise_stop(stopped: list[Exception], signals: "_Signals") -> None:
    """What ended the study early, as the CLI's one line (running the command again continues the study)."""
    if signals.pending and not stopped:
        raise Terminated() if signals.pending[0] == signal.SIGTERM else KeyboardInterrupt()
    if stopped:
        if not isinstance(stopped[0], RunStopped):
            raise stopped[0]  # (a KeyboardInterrupt or Terminated is the CLI's one line, with its exit code)
        raise Terminated() if stopped[0].code == 143 else KeyboardInterrupt()


def _study(optuna, base: TrainConfig, study_dir: Path, trials: int, lambda_range, eta_range, storage: str,
           what_fix: tuple[str, str, Path | None], out) -> dict:
    """The study in its (locked) folder: continue or start it, run trials until ``trials`` have finished, write
    best.json."""
    what, fix, new_file = what_fix
    for folder in study_dir.glob("trial-*"):  # a planted link would take a trial's run (and overwrites) elsewhere
        if re.fullmatch(r"trial-\d+", folder.name):
            own_folder(folder, "a trial's run folder")
    numbers = [int(f.name[6:]) for f in study_dir.glob("trial-*") if re.fullmatch(r"trial-\d+", f.name)]
    known = _stored_trials(storage)
    if numbers and known is not None and max(numbers) >= known:  # checked before the study is opened or made
        raise UserError(f"{what}: {study_dir} holds trial-{max(numbers)}, which its study ({known} trials) does not "
                        "know: the database was replaced, emptied or renamed since; restore it, or move the trial "
                        "folders away")
    # ERROR: a failed trial's warning carries a traceback through Optuna; the command's own line says what failed
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = _open_study(optuna, storage, what, fix, new_file)
    _same_settings(study, base, what)
    # seeded by the history, so a continued study proposes new values instead of replaying the first ones
    study.sampler = optuna.samplers.TPESampler(seed=base.run.seed * 100_003 + len(study.trials))
    state = optuna.trial.TrialState
    _retry_interrupted(study, state, lambda_range, eta_range, out)
    signals = _Signals()  # Ctrl-C and SIGTERM raise inside a trial's run only; elsewhere they wait for a boundary
    objective = _Objective(optuna, study, base, study_dir, (lambda_range, eta_range), signals, out)
    finished = _finished(study, state)
    if finished < trials:
        with signals.deferred():
            study.optimize(objective, n_trials=trials - finished)
    _raise_stop(objective.stopped, signals)
    done = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    if not done:
        raise UserError("no trial finished (ART did not converge or diverged in all); widen --lambda-range/--eta-range")
    _check_done(done, what, fix)
    best = study.best_trial
    # the folder the trial trained into, by its number: not a path the database says (it may name another run);
    # none if it is not here (deleted, or the trial ran in another folder that shares this --storage)
    folder = study_dir / f"trial-{best.number}"
    here = folder.is_dir() and (folder / "summary.json").is_file()
    if here:  # the trial's own record of what it reached: the database's copy must say the same
        written = (read_json(folder / "summary.json") or {}).get("sparse", {}).get("val_acc")
        if written is not None and abs(written - best.value) > 1e-9:
            raise UserError(f"{what}: trial {best.number}'s validation accuracy in the study ({best.value!r}) is "
                            f"not what its run folder's summary.json says ({written!r}): the database was changed "
                            f"by something else; {fix}")
    result = {"lambda_init": best.params["lambda_init"], "eta": best.params["eta"], "val_acc": best.value,
              "trial": best.number, "run_dir": str(folder) if here else None, "trials": len(study.trials),
              "storage": storage, "base_config": base.to_dict()}
    write_json(study_dir / "best.json", result)
    print(f"best of {len(done)} finished trials: trial {best.number}, lambda_init {result['lambda_init']:.3g}, "
          f"eta {result['eta']:.4g}, validation {best.value:.2%} -> {study_dir / 'best.json'}"
          + ("" if here else f" (its run folder trial-{best.number} is not in {study_dir}: deleted, or it trained in "
                             "another folder that shares the study's database; best.json names no run folder)"),
          file=out)
    return result


