"""A run directory as training writes it: config, one metrics row and statistics row per epoch, checkpoints,
the console lines, and the truncation of the logs on resume. Only rank 0 writes or prints."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

from hypersparse.checkpoint import atomic_write, remove_temporaries, save_checkpoint, temporary_name, write_json
from hypersparse.config import TrainConfig
from hypersparse.errors import UserError
from hypersparse.runs import CHECKPOINT, CONFIG, METRICS, MODEL, STATS, SUMMARY, read_jsonl, run_label


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

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise UserError(in_use(self.path.parent, holder)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed it while we waited: lock the file that is there now
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    @staticmethod
    def holder(folder: Path) -> str | None:
        """The PID holding ``folder``'s lock (as its file records it), or None if no process holds it."""
        import fcntl

        try:
            fd = os.open(Path(folder) / LOCK, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 32).decode(errors="replace").strip() or "?"
        finally:
            os.close(fd)  # closing drops a shared lock this call took
        return None

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def in_use(folder: Path, holder: str) -> str:
    return (f"run directory {folder} is in use by process {holder} (another hypersparse train or --resume writes "
            "it); wait for it to end, or pick another --run-dir")


def prepare_run_dir(path: Path) -> tuple[Path | None, RunLock]:
    """Create the run directory, take its lock and prove it is writable, or raise UserError.

    Returns the outermost folder this call created (None if ``path`` existed), so that a run that cannot start
    can remove what it made (:func:`remove_created`), and the held lock.
    """
    if (path / CHECKPOINT).exists():
        raise UserError(f"run directory {path} already holds a run; continue it with --resume {path} or pick another "
                        "--run-dir")
    created = next((p for p in reversed([path, *path.parents]) if not p.exists()), None)
    lock = None
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = RunLock(path).acquire()
        probe = temporary_name(path / "write-test")
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        if lock is not None:
            lock.release()
        remove_created(path, created)
        raise UserError(f"cannot write to run directory {path} ({exc.strerror or exc}); choose another with "
                        "--run-dir") from None
    except UserError:
        remove_created(path, created)
        raise
    if (path / CHECKPOINT).exists():  # another run finished a first epoch there while we were starting
        lock.release()
        raise UserError(f"run directory {path} already holds a run; continue it with --resume {path} or pick another "
                        "--run-dir")
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
    """Writes one run's files and prints its lines (on rank 0 only; other ranks pass ``main=False``)."""

    def __init__(self, path: Path, main: bool = True, out=sys.stdout, progress: bool = False):
        self.path = Path(path)
        self.main = main
        self.out = out if main else open(os.devnull, "w")
        self.progress = progress and main

    def say(self, text: str) -> None:
        if self.progress:
            from tqdm import tqdm

            tqdm.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def write_config(self, cfg: TrainConfig) -> None:
        if self.main:
            write_json(self.path / CONFIG, cfg.to_dict())

    def record_epoch(self, row: dict, stats: dict | None, state: dict) -> None:
        """The epoch's log lines first, then its checkpoint: a crash before the checkpoint is in place (even in the
        middle of a line) leaves lines of an epoch that a resume drops and then trains and writes again."""
        if not self.main:
            return
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")
        if stats is not None:
            with open(self.path / STATS, "a") as f:
                f.write(json.dumps(stats) + "\n")
        save_checkpoint(state, self.path / CHECKPOINT)
        self.say(epoch_line(row))

    def truncate(self, metrics: list[dict]) -> None:
        """On resume: the logs may hold lines written after the checkpoint's epoch; keep only the checkpointed ones."""
        if not self.main:
            return
        lines = "".join(json.dumps(m) + "\n" for m in metrics)
        atomic_write(self.path / METRICS, lambda f: f.write(lines), mode="w")
        kept = [s for s in read_jsonl(self.path / STATS) if s["epoch"] < len(metrics)]
        if (self.path / STATS).exists():
            atomic_write(self.path / STATS, lambda f: f.write("".join(json.dumps(s) + "\n" for s in kept)), mode="w")

    def write_result(self, summary: dict, model_state: dict, show: bool = True) -> None:
        if not self.main:
            return
        save_checkpoint(model_state, self.path / MODEL)
        write_json(self.path / SUMMARY, summary)
        if show:
            print(format_summary(summary), file=self.out)


def epoch_line(row: dict) -> str:
    """The console line of one epoch."""
    parts = [f"epoch {row['epoch']:>3} {row['phase']:<10}", f"loss {row['loss']:.4f}", f"train {row['train_acc']:.2%}"]
    if row.get("pruned_acc") is not None:
        parts += [f"lambda {row['lambda']:.3g}", f"pruned {row['pruned_acc']:.2%}"]
    parts += [f"val {row['val_acc']:.2%}", f"sparsity {row['sparsity']:.2%}", f"{row['seconds']:.1f}s"]
    if "past_deadline" in row:
        parts.append(f"-> past --reg-epochs-target: the pruned copy has come {max(row['past_deadline'], 0):.0%} of "
                     "its way to the dense accuracy, too little for a mask (lambda_0 too small?); regularizing on")
    if row["event"] == "stop":
        why = ", deadline reached before the stop rule held" if row.get("stop_reason") == "deadline" else ""
        chosen = f"epoch {row['chosen_epoch']} chosen" if row.get("chosen_epoch") is not None else "pruned"
        parts.append(f"-> mask fixed ({chosen}{why})")
    return "  ".join(parts)


def format_summary(summary: dict) -> str:
    """The small table a run ends with."""
    s, d = summary["sparse"], summary["dense"]
    label = run_label(summary["config"])
    name = f"art ({label[4:]})" if label.startswith("art-") else label
    rows = [f"{'':<22}{'validation':>11}{'test':>9}{'sparsity':>10}{'weights kept':>14}"]
    if d:
        rows.append(f"{'dense (epoch %d)' % d['epoch']:<22}{d['val_acc']:>11.2%}{d['test_acc']:>9.2%}{0:>10.2%}"
                    f"{s['numel']:>14,}")
    rows.append(f"{'sparse, ' + name:<22}{s['val_acc']:>11.2%}{s['test_acc']:>9.2%}{s['sparsity']:>10.2%}"
                f"{s['kept']:>14,}")
    compared, verdict = comparison_rows(summary)
    rows += compared
    times = ", ".join(
        f"{p} {summary['phase_seconds'].get(p, 0):.1f}s ({summary['epochs'][p]} epoch{'s' if summary['epochs'][p] != 1 else ''})" for p in summary["epochs"]
    )
    rows.append(f"time: {times}; device {summary['device']}")
    return "\n".join(rows + ([verdict] if verdict else []))


def comparison_rows(summary: dict) -> tuple[list[str], str | None]:
    """Table rows for the baselines ``--compare`` trained, and the line comparing them with ART and the dense model."""
    compare = summary.get("compare") or {}
    if not compare:
        return [], None
    rows = [f"{'sparse, ' + m:<22}{r['val_acc']:>11.2%}{r['test_acc']:>9.2%}{r['sparsity']:>10.2%}{r['kept']:>14,}"
            for m, r in compare.items()]
    s, d = summary["sparse"], summary["dense"]
    others = ", ".join(f"{m} {r['test_acc']:.2%}" for m, r in compare.items())
    dense = f"; dense {d['test_acc']:.2%}" if d else ""
    return rows, (f"at {s['sparsity']:.2%} sparsity, test accuracy: ART {s['test_acc']:.2%}, {others}{dense} "
                  "(same seed and epochs; each model chosen on validation)")
