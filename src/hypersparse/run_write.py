"""A run directory as training writes it: config, one metrics row and statistics row per epoch, checkpoints,
the console lines, and the truncation of the logs on resume. Only rank 0 writes or prints."""
from __future__ import annotations

import errno
import json
import os
import re
import stat
import sys
import time
from pathlib import Path

from hypersparse import schema
from hypersparse.checkpoint import atomic_write, remove_temporaries, save_checkpoint, temporary_name, write_json
from hypersparse.config import TrainConfig
from hypersparse.errors import UserError
from hypersparse.progress import ProgressLine, where
from hypersparse.run_read import CHECKPOINT, CONFIG, METRICS, MODEL, STATS, SUMMARY, read_jsonl, run_label


def _slug(name: str) -> str:
    """A name as one safe path component: ``folder:/data/pets`` -> ``pets``, ``mymod:build`` -> ``mymod-build``."""
    name = name.removeprefix("folder:").rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "data"


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = run_label(cfg.to_dict())
    return Path("runs") / (f"{stamp}-{_slug(cfg.data.dataset)}-{_slug(cfg.model.model)}-{tag}-"
                           f"{cfg.sparsity.sparsity:g}-seed{cfg.run.seed}")


LOCK = ".hypersparse.lock"


class RunLock:
    """The one writer of a run folder: ``fcntl.flock`` on ``<run>/.hypersparse.lock``, which holds the writer's PID.

    A second ``train``, ``--resume`` or ``--compare`` baseline on the same folder gets one line naming the process
    that holds it. The kernel drops the lock when its process ends however it ends, so a lock left by a killed
    process is simply taken over. The file is removed on release (while still locked, and a taker checks that the
    file it locked is still the one at the path, so two writers can never each hold a different file).
    """

    def __init__(self, folder: Path, study: bool = False):
        self.path = Path(folder) / LOCK
        self.fd: int | None = None
        self.study = study  # a tune study's folder: its one writer is a hypersparse tune
        self.folder_id: tuple[int, int] | None = None  # (device, inode) of the folder locked

    def acquire(self) -> "RunLock":
        import fcntl

        while True:
            fd = _open_lock(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _pid_shown(os.read(fd, 32))
                os.close(fd)
                raise UserError(in_use(self.path.parent, holder, self.study)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed it while we waited: lock the file that is there now
        if not re.fullmatch(rb"\d{0,10}\n?", os.read(fd, 64)):  # a file of the user's under our name: not truncated
            os.close(fd)
            raise UserError(_not_a_lock(self.path, "a file hypersparse did not write (it holds more than a process "
                                                   "id)"))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the lock file is ours (it holds at most a pid), and goes with the refusal
            self.path.unlink(missing_ok=True)
            os.close(fd)
            raise
        folder = os.stat(self.path.parent)
        self.fd, self.folder_id = fd, (folder.st_dev, folder.st_ino)
        return self

    @staticmethod
    def holder(folder: Path) -> str | None:
        """The PID holding ``folder``'s lock (as its file records it), or None if no process holds it."""
        import fcntl

        try:
            fd = _open_lock(Path(folder) / LOCK, os.O_RDONLY)
        except (OSError, UserError):
            return None  # no lock, or not one: taking it says which
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid_shown(os.read(fd, 32))
        finally:
            os.close(fd)  # closing drops a shared lock this call took
        return None

    def still_held(self) -> bool:
        """Whether the lock file this process holds is still the one at its path: not when the run folder was
        renamed, or replaced by a link to another folder, while the run wrote it."""
        if self.fd is None:
            return False
        try:
            there = os.stat(self.path, follow_symlinks=False)
            folder = os.stat(self.path.parent)
        except OSError:
            return False
        held = os.fstat(self.fd)
        # the folder too: the lock file moved (or hard-linked) into the folder now at the run's path is ours, but
        # that folder is not the one this run locked
        return ((there.st_dev, there.st_ino) == (held.st_dev, held.st_ino) and held.st_nlink == 1
                and (folder.st_dev, folder.st_ino) == self.folder_id)

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _pid_shown(held: bytes) -> str:
    """The process id a lock file holds, as the refusal names it; not the file's text if something else wrote it."""
    text = held.decode(errors="replace").strip()
    return text if text.isdigit() else "? (its lock file holds no process id)"


def _open_lock(path: Path, flags: int) -> int:
    """A descriptor of lock file ``path``, or UserError if it is anything but a regular file with one name: the lock
    is never opened through a planted symbolic link (the process id would be written into the link's target), nor
    a FIFO (which would block) or a hard link."""
    try:
        # 0o666: the user's umask decides its mode; O_NONBLOCK: a FIFO planted there must not block the open
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(_not_a_lock(path, "a symbolic link")) from None
        try:  # a socket cannot be opened at all (ENXIO): say what is there rather than the errno's words
            there = os.lstat(path)
        except OSError:
            raise exc from None
        if not stat.S_ISREG(there.st_mode):
            raise UserError(_not_a_lock(path, "not a regular file")) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise UserError(_not_a_lock(path, "a hard link to another file" if stat.S_ISREG(st.st_mode) else
                                    "not a regular file"))
    return fd


def _not_a_lock(path: Path, kind: str) -> str:
    return (f"{path} is {kind}, not the lock file hypersparse makes; it writes its process id only into its own "
            "file: remove it, or pick another folder")


def in_use(folder: Path, holder: str, study: bool = False) -> str:
    if study:
        return (f"study folder {folder} is in use by process {holder} (another hypersparse tune runs its trials); "
                "wait for it to end, or pick another --study-dir")
    return (f"run directory {folder} is in use by process {holder} (another hypersparse train or --resume writes "
            "it); wait for it to end, or pick another --run-dir")


def refuse_if_written(folder: Path, what: str) -> None:
    """UserError if a live process holds ``folder``'s run lock: its files are those of a run not yet finished, and
    the folder has its one writer. ``what``: the command, as the line says it."""
    holder = RunLock.holder(folder)
    if holder is not None:
        raise UserError(f"run directory {folder} is still being written by process {holder} (a hypersparse train or "
                        f"--resume); {what} once that run has ended")


#: the files a run writes in its folder (besides its lock and the folders of its tracker and --compare baselines)
RUN_FILES = (CONFIG, METRICS, STATS, CHECKPOINT, MODEL, SUMMARY)
#: the files hypersparse tune writes in its study folder (besides the trials' run folders)
STUDY_FILES = ("study.db", "best.json")


def check_fresh(path: Path, config: dict) -> bool:
    """UserError unless a new run with settings ``config`` (as ``config.json`` holds them) may start in ``path``.

    It may if the folder holds none of the files a run writes, or only what this same run left when it was stopped
    before its first checkpoint: its ``config.json`` (the same settings) and the logs of an epoch it never finished.
    Returns True in that second case (the caller removes those logs once the folder is locked). Anything else, a
    user's own ``config.json`` or ``model.pt`` above all, is never written over.
    """
    if (path / CHECKPOINT).exists():
        raise UserError(f"run directory {path} already holds a run; continue it with --resume {path} or pick another "
                        "--run-dir")
    study = next((n for n in STUDY_FILES if os.path.lexists(path / n)), None)
    if study is not None:  # a tune study's folder: its trials are runs in folders of their own
        raise UserError(f"run directory {path} is a tune study's folder (it holds {study}); pick another --run-dir")
    held = [name for name in RUN_FILES if os.path.lexists(path / name)]
    if not held:
        return False
    same = held[0] == CONFIG and _same_settings(path / CONFIG, config)
    # what this run would replace that is not its own (the first of it): all, unless config.json is this run's
    name = next((n for n in held if n not in (CONFIG, METRICS, STATS) or not _regular(path / n)), None) if same \
        else held[0]
    if name is None:
        return True
    raise UserError(f"run directory {path} already holds {name}, which this run would replace; pick a new or empty "
                    "folder, or --resume a run")


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _same_settings(path: Path, config: dict) -> bool:
    """Whether ``path`` is a regular file holding exactly the settings ``config`` (as write_config writes them)."""
    try:
        if not _regular(path):
            return False
        return schema.parse_json(schema.read_bytes(path, "run file", schema.MAX_JSON_BYTES), allow_nan=True) == \
            json.loads(json.dumps(config))
    except (OSError, ValueError, UserError):
        return False


def prepare_run_dir(path: Path, config: dict) -> tuple[Path | None, RunLock]:
    """Create the run directory, take its lock and prove it is writable, or raise UserError.

    ``config``: the run's settings, as ``config.json`` will hold them (:func:`check_fresh`). Returns the outermost
    folder this call created (None if ``path`` existed), so that a run that cannot start can remove what it made
    (:func:`remove_created`), and the held lock.
    """
    check_fresh(path, config)  # before anything is made
    if path.is_symlink() and not path.exists():  # mkdir would say "File exists"; and the link is not ours to remove
        raise UserError(f"run directory {path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                        "choose another with --run-dir")
    created = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    lock = probe = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(path).acquire()
        probe = temporary_name(path / "write-test")
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        if probe is not None:  # made, then a full disk stopped its write: ours, and goes with the refusal
            probe.unlink(missing_ok=True)
        if lock is not None:
            lock.release()
        remove_created(path, created)
        raise UserError(f"cannot write to run directory {path} ({exc.strerror or exc}); choose another with "
                        "--run-dir") from None
    except UserError:
        remove_created(path, created)
        raise
    try:  # again under the lock: another run may have finished a first epoch there while we were starting
        restart = check_fresh(path, config)
    except UserError:
        lock.release()
        raise
    if restart:  # the same run stopped before its first checkpoint: its logs start again from nothing
        for name in (METRICS, STATS):
            (path / name).unlink(missing_ok=True)
    remove_temporaries(path)
    return created, lock


def remove_created(path: Path, created: Path | None) -> None:
    """Remove ``path`` and its parents up to ``created`` where they are empty (what prepare_run_dir made)."""
    if created is None:
        return
    for folder in [path, *path.parents]:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return


class RunFiles:
    """Writes one run's files and prints its lines (on rank 0 only; other ranks pass ``main=False``).

    ``progress``: stderr is a terminal, so one progress line is kept below the printed lines. ``quiet``: print no
    lines but the progress (a ``--compare`` baseline, shown as ``label``): on a terminal in the progress line, else
    one line per tenth of the run.
    """

    def __init__(self, path: Path, main: bool = True, out=None, progress: bool = False, quiet: bool = False,
                 label: str = ""):
        self.path = Path(path)
        self.main = main
        self.out = (sys.stdout if out is None else out) if main else open(os.devnull, "w")
        self.quiet = quiet
        self.label = label
        self.line = ProgressLine() if progress and main else None
        self.tracker = None  # a hypersparse.tracking.Tracker, when run.log names one
        self.lock: RunLock | None = None  # the folder's lock, once taken: each write checks the folder is still it
        self.expected = None  # () -> (expected epochs, how sure): hypersparse.progress.expected_epochs
        self._header = False
        self._ticked = -1  # the last tenth of the run a quiet run reported
        self._recent: list[float] = []  # the last epochs' seconds, for the ETA

    def say(self, text: str) -> None:
        if self.quiet or not self.main:
            return
        if self.line is not None:
            self.line.above(text, self.out)
        else:
            print(text, file=self.out, flush=True)

    def show(self, text: str, force: bool = False) -> None:
        """The progress line (on a terminal only)."""
        if self.line is not None:
            self.line.show(f"{self.label}: {text}" if self.label else text, force)

    def close(self) -> None:
        if self.line is not None:
            self.line.close()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def check_still_ours(self) -> None:
        """Before a write: the folder at the run's path is still the one this run locked. A folder swapped for a
        link to another one mid-run would take the run's files over that one's."""
        if self.lock is not None and not self.lock.still_held():
            raise UserError(f"the run folder {self.path} was moved or replaced, or its lock file moved or linked "
                            "elsewhere, while this run wrote it; stopped without writing to what is there now (a "
                            f"folder that is still the run's continues with hypersparse train --resume {self.path})")

    def write_config(self, cfg: TrainConfig) -> None:
        if self.main:
            self.check_still_ours()
            write_json(self.path / CONFIG, cfg.to_dict())

    def record_epoch(self, row: dict, stats: dict | None, state: dict) -> None:
        """The epoch's log lines first, then its checkpoint: a crash before the checkpoint is in place (even in the
        middle of a line) leaves lines of an epoch that a resume drops and then trains and writes again."""
        if not self.main:
            return
        self.check_still_ours()
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if stats is not None:
            with open(self.path / STATS, "a") as f:
                f.write(json.dumps(stats) + "\n")
        save_checkpoint(state, self.path / CHECKPOINT)
        if self.tracker is not None:
            self.tracker.log_row(row)
        self.epoch_done(row)

    def epoch_done(self, row: dict) -> None:
        """Print the epoch's line (after the header, once), or for a quiet run a line per tenth of the run."""
        done = row["epoch"] + 1
        total, how = self.expected() if self.expected else (done, "exact")
        self._recent = (self._recent + [row["seconds"]])[-5:]
        at = where(done, total, how, self._recent)
        if self.quiet:
            tenth = min(10, 10 * done // max(total, 1))
            if self.line is not None:
                self.show(f"{row['phase']} · epoch {at}", force=True)
            elif tenth > self._ticked:
                self._ticked = tenth
                print(f"  {self.label}: epoch {at} ({row['phase']})", file=self.out, flush=True)
            return
        if not self._header:
            self._header = True
            for line in header(row):
                self.say(line)
        self.say(epoch_line(row, at))
        self.show(f"{row['phase']} · epoch {at}", force=True)

    def truncate(self, metrics: list[dict]) -> None:
        """On resume: the logs may hold lines written after the checkpoint's epoch; keep only the checkpointed ones."""
        if not self.main:
            return
        self.check_still_ours()
        lines = "".join(json.dumps(m) + "\n" for m in metrics)
        atomic_write(self.path / METRICS, lambda f: f.write(lines), mode="w")
        kept = [s for s in read_jsonl(self.path / STATS) if s["epoch"] < len(metrics)]
        if (self.path / STATS).exists():
            atomic_write(self.path / STATS, lambda f: f.write("".join(json.dumps(s) + "\n" for s in kept)), mode="w")

    def write_result(self, summary: dict, model_state: dict, show: bool = True) -> None:
        if not self.main:
            return
        self.check_still_ours()
        save_checkpoint(model_state, self.path / MODEL)
        write_json(self.path / SUMMARY, summary)
        if self.tracker is not None:
            self.tracker.log_summary(summary_scalars(summary))
        if show:
            self.say(format_summary(summary))


#: the epoch line's columns: (title, width); "lambda" and "pruned-copy acc" only in ART's runs
COLUMNS = (("epoch", 5), ("phase", 10), ("loss", 8), ("train acc", 9), ("lambda", 8), ("pruned-copy acc", 15),
           ("val acc", 8), ("sparsity", 8), ("time", 6))
LEGEND = ("pruned-copy acc: the accuracy of a copy of the model pruned to the target sparsity, on a fixed training "
          "subset; the mask is fixed once its mean over the last 2k+1 epochs reaches the dense model's")


def _columns(row: dict) -> list[tuple[str, int]]:
    art = "lambda" in row
    return [c for c in COLUMNS if art or c[0] not in ("lambda", "pruned-copy acc")]


def header(row: dict) -> list[str]:
    """The lines above the first epoch line: the columns' names (and, for ART, what the pruned copy is)."""
    titles = "  ".join(f"{t:>{w}}" if i > 1 else f"{t:<{w}}" for i, (t, w) in enumerate(_columns(row)))
    return ([LEGEND] if "lambda" in row else []) + [titles + "  done/expected, ETA"]


def epoch_line(row: dict, at: str = "") -> str:
    """The console line of one epoch, under :func:`header`'s columns."""
    cells = {"epoch": str(row["epoch"]), "phase": row["phase"], "loss": f"{row['loss']:.4f}",
             "train acc": f"{row['train_acc']:.2%}", "val acc": f"{row['val_acc']:.2%}",
             "sparsity": f"{row['sparsity']:.2%}", "time": f"{row['seconds']:.1f}s"}
    if "lambda" in row:
        scored = row.get("pruned_acc") is not None
        cells["lambda"] = f"{row['lambda']:.3g}" if scored else "-"
        cells["pruned-copy acc"] = f"{row['pruned_acc']:.2%}" if scored else "-"
    line = "  ".join(f"{cells[t]:>{w}}" if i > 1 else f"{cells[t]:<{w}}" for i, (t, w) in enumerate(_columns(row)))
    parts = [line + (f"  {at}" if at else "")]
    if "past_deadline" in row:
        parts.append(f"-> past --reg-epochs-target: the pruned copy has come {max(row['past_deadline'], 0):.0%} of "
                     "its way to the dense accuracy, too little for a mask (lambda_init too small?); regularizing on")
    if row["event"] == "stop":
        why = ", deadline reached before the stop rule held" if row.get("stop_reason") == "deadline" else ""
        chosen = f"epoch {row['chosen_epoch']} chosen" if row.get("chosen_epoch") is not None else "pruned"
        parts.append(f"-> mask fixed ({chosen}{why})")
    return "  ".join(parts)


def art_course(metrics: list[dict]) -> dict | None:
    """What ART's regularization did, from the metrics rows: lambda's range, the pruned copy's first and last score,
    the dense score it was compared with at the stop, the chosen epoch and why it stopped (None for other methods)."""
    scored = [r for r in metrics if r.get("pruned_acc") is not None]
    if not scored:
        return None
    last = scored[-1]
    return {"reg_epochs": len(scored), "first_epoch": scored[0]["epoch"], "last_epoch": last["epoch"],
            "lambda": [scored[0]["lambda"], last["lambda"]], "pruned_acc_first": scored[0]["pruned_acc"],
            "pruned_acc_last": last["pruned_acc"], "buffer_mean_last": last.get("buffer_mean"),
            "dense_acc_last": last.get("dense_acc"), "chosen_epoch": last.get("chosen_epoch"),
            "stop_reason": last.get("stop_reason")}


def _course_lines(art: dict) -> list[str]:
    stopped = art["chosen_epoch"] is not None
    how = {"rule": "the stop rule held", "deadline": "the deadline (--reg-epochs-target) came first"}.get(
        art["stop_reason"], "")
    lam = art["lambda"]
    lines = [f"ART: {art['reg_epochs']} regularization epochs ({art['first_epoch']}-{art['last_epoch']}), lambda "
             f"{lam[0]:.3g} -> {lam[1]:.3g}; pruned-copy acc {art['pruned_acc_first']:.2%} after the first, "
             f"{art['pruned_acc_last']:.2%} at the {'stop' if stopped else 'last'}"
             + (f" (dense {art['dense_acc_last']:.2%})" if art.get("dense_acc_last") is not None else "")]
    if stopped:
        lines.append(f"     the mask and weights of epoch {art['chosen_epoch']} were kept ({how}), then fine-tuned")
    return lines


def format_summary(summary: dict) -> str:
    """The lines a run ends with: ART's course, the table, the time, the comparison."""
    s, d = summary["sparse"], summary["dense"]
    label = run_label(summary["config"])
    name = f"art ({label[4:]})" if label.startswith("art-") else label
    rows = _course_lines(summary["art"]) if summary.get("art") else []
    rows.append(f"{'':<22}{'validation':>11}{'test':>9}{'sparsity':>10}{'weights kept':>14}")
    if d:
        start = "pretrained" if summary["config"].get("model", {}).get("pretrained") else f"dense (epoch {d['epoch']})"
        rows.append(f"{start:<22}{d['val_acc']:>11.2%}{d['test_acc']:>9.2%}{d.get('sparsity', 0):>10.2%}"
                    f"{d.get('kept', s['numel']):>14,}")
    rows.append(f"{'sparse, ' + name:<22}{s['val_acc']:>11.2%}{s['test_acc']:>9.2%}{s['sparsity']:>10.2%}"
                f"{s['kept']:>14,}")
    compared, verdict = comparison_rows(summary)
    rows += compared
    rows.append(f"time: {epochs_text(summary['epochs'], summary['phase_seconds'])}; device {summary['device']}"
                + (f", {summary['threads']['count']} thread{'s' if summary['threads']['count'] != 1 else ''}"
                   if summary.get("threads") else ""))
    return "\n".join(rows + ([verdict] if verdict else []))


def epochs_text(epochs: dict, seconds: dict | None = None) -> str:
    """``warmup 6 epochs (3.1s), regularize 103 epochs (12.0s), ...``: a run's phases as a person reads them."""
    parts = []
    for phase, n in epochs.items():
        took = f" ({seconds.get(phase, 0):.1f}s)" if seconds is not None else ""
        parts.append(f"{phase} {n} epoch{'s' if n != 1 else ''}{took}")
    return ", ".join(parts)


def summary_scalars(summary: dict) -> dict[str, float]:
    """The end result's numbers, for a tracker."""
    s, d = summary["sparse"], summary.get("dense") or {}
    out = {"final/sparse_val_acc": s["val_acc"], "final/sparse_test_acc": s["test_acc"],
           "final/sparsity": s["sparsity"]}
    if d:
        out.update({"final/dense_val_acc": d["val_acc"], "final/dense_test_acc": d["test_acc"]})
    for method, r in (summary.get("compare") or {}).items():
        out[f"final/{method}_test_acc"] = r["test_acc"]
    return out


def comparison_rows(summary: dict) -> tuple[list[str], str | None]:
    """Table rows for the methods ``--compare`` trained, and the line comparing them with the run and the dense
    model."""
    compare = summary.get("compare") or {}
    if not compare:
        return [], None
    rows = [f"{'sparse, ' + m:<22}{r['val_acc']:>11.2%}{r['test_acc']:>9.2%}{r['sparsity']:>10.2%}{r['kept']:>14,}"
            for m, r in compare.items()]
    s, d = summary["sparse"], summary["dense"]
    others = ", ".join(f"{m} {r['test_acc']:.2%}" for m, r in compare.items())
    dense = f"; dense {d['test_acc']:.2%}" if d else ""
    label = run_label(summary["config"])
    main = "ART" if label.startswith("art-") else label
    return rows, (f"at {s['sparsity']:.2%} sparsity, test accuracy: {main} {s['test_acc']:.2%}, {others}{dense} "
                  "(same seed and epochs; each model chosen on validation)")
