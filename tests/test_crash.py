"""Crash hygiene: a kill in the middle of a write, SIGTERM, Ctrl-C, stale temporaries, umask, odd paths."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli, run_metrics

ARGS = ["train", "--model", "mlp", "--sparsity", "0.9", "--epochs-scale", "0.05", "--lambda-init", "1e-3",
        "--seed", "2"]

# runs the command with one write cut in half and the process SIGKILLed right there
KILL_DURING = r"""
import os, signal, sys
from hypersparse import checkpoint, run_write
target, kind = sys.argv[1], sys.argv[2]
if kind.startswith("atomic"):
    original = checkpoint.atomic_write
    writes = [0]
    def cut(path, write, mode="wb"):
        writes[0] += os.path.basename(path) == target
        if os.path.basename(path) == target and writes[0] == int(kind.split(":")[1]):
            import io
            buf = io.BytesIO() if "b" in mode else io.StringIO()
            write(buf)
            data = buf.getvalue()
            with open(checkpoint.temporary_name(__import__("pathlib").Path(path)), mode) as f:
                f.write(data[: len(data) // 2])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        original(path, write, mode)
    checkpoint.atomic_write = cut
    run_write.atomic_write = cut
else:  # a stats line cut in half, at the third epoch's record
    original = run_write.RunFiles.record_epoch
    calls = [0]
    def record(self, row, stats, state):
        calls[0] += 1
        if calls[0] == 3 and stats is not None:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(__import__("json").dumps(row) + "\n")
            with open(self.path / "stats.jsonl", "a") as f:
                f.write(__import__("json").dumps(stats)[:40])
                f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, row, stats, state)
    run_write.RunFiles.record_epoch = record
from hypersparse.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _killed_then_resumed(tmp_path, target: str, kind: str):
    run = tmp_path / "cut"
    done = subprocess.run([sys.executable, "-c", KILL_DURING, target, kind, *ARGS, "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    if kind.startswith("atomic"):
        assert list(run.glob(".*.tmp")), "the kill should leave a half-written temporary behind"
    out = cli("train", "--resume", str(run))
    assert out.returncode == 0, out.stderr
    assert not list(run.glob(".*.tmp"))  # removed on resume
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    out = cli(*ARGS, "--run-dir", str(run))
    assert out.returncode == 0, out.stderr
    return run


@pytest.mark.parametrize("target,kind",
                         [("model.pt", "atomic:1"), ("checkpoint.pt", "atomic:3"), ("stats.jsonl", "line")])
def test_killed_mid_write_then_resumed_is_bit_exact(target, kind, reference, tmp_path):
    run = _killed_then_resumed(tmp_path, target, kind)
    (rows, summary), (ref_rows, ref_summary) = run_metrics(run), run_metrics(reference)
    summary["config"]["run"].pop("run_dir"), ref_summary["config"]["run"].pop("run_dir")
    assert rows == ref_rows and summary == ref_summary
    assert (run / "model.pt").read_bytes() == (reference / "model.pt").read_bytes()
    # statistics are kept within a time budget, so which epochs have a line may differ; every line is whole, in
    # order, and the epoch whose line was cut has one again
    epochs = [json.loads(s)["epoch"] for s in (run / "stats.jsonl").read_text().splitlines()]
    assert epochs == sorted(set(epochs)) and (kind != "line" or 2 in epochs)


def _started(proc, run: Path) -> None:
    """Wait for the first checkpoint (the logs of an epoch are written just before it)."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "checkpoint.pt").exists():
            return
        time.sleep(0.05)
    raise AssertionError("the run did not start")


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_sigterm_and_ctrl_c_stop_cleanly_with_the_real_path(sig, code, word, tmp_path):
    run = tmp_path / "run dir"
    proc = subprocess.Popen([sys.executable, "-m", "hypersparse", *ARGS[:-4], "--epochs-scale", "1", "--run-dir",
                             str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _started(proc, run)
    proc.send_signal(sig)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0] and f"--resume '{run}'" in lines[0], err
    assert not list(run.glob(".*.tmp"))
    out = cli("train", "--resume", str(run), "--help")  # the folder named is the one to resume
    assert out.returncode == 0


# SIGTERM arrives the moment the third checkpoint's temporary exists, before atomic_write knows its descriptor
TERM_AFTER_CREATE = r"""
import os, signal, sys
original, made = os.open, [0]
def create(name, *args, **kwargs):
    fd = original(name, *args, **kwargs)
    ours = os.path.basename(str(name)).startswith(".hypersparse-") and str(name).endswith(".checkpoint.pt.tmp")
    made[0] += ours
    if made[0] == 3 and ours:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this frame, before os.open's caller goes on
    return fd
os.open = create
from hypersparse.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_during_a_write_leaves_no_temporary(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", TERM_AFTER_CREATE, *ARGS, "--run-dir", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr
    assert "terminated" in done.stderr and not list(run.glob(".*.tmp"))
    assert cli("train", "--resume", str(run)).returncode == 0


def test_ctrl_c_before_the_first_checkpoint_says_so(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hypersparse", "train", "--run-dir", str(run), "--set",
                             "schedule.warmup_epochs=1000000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:  # the run has started: its folder is printed before the first epoch
        if "run directory" in line:
            break
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "no checkpoint yet" in err and len(err.strip().splitlines()) == 1, err


def test_ctrl_c_while_starting_is_one_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "hypersparse", "--version"], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1"))
    # stderr first shows the import-time table (one line per import): Ctrl-C as soon as torch begins to load
    for line in proc.stderr:
        if "torch" in line:
            proc.send_signal(signal.SIGINT)
            break
    err = proc.communicate(timeout=60)[1]
    if proc.returncode == 0:
        pytest.skip("the import finished before the signal landed")
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted while starting" in err


def test_diverging_before_a_checkpoint_says_there_is_none(tmp_path):
    out = cli("train", "--lr", "1e12", "--epochs-scale", "0.05", "--run-dir", str(tmp_path / "div"))
    assert out.returncode == 1
    if not (tmp_path / "div" / "checkpoint.pt").exists():
        assert "No checkpoint yet" in out.stderr and "is kept" not in out.stderr


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = cli(*ARGS, "--run-dir", str(tmp_path / "run"))
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    for name in ("config.json", "checkpoint.pt", "model.pt", "summary.json", "metrics.jsonl"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o644, name


def test_a_run_folder_that_is_not_utf8_under_a_strict_locale(tmp_path):
    run = os.fsencode(tmp_path) + b"/run-\xff"
    env = dict(os.environ, LC_ALL="C.UTF-8", PYTHONUTF8="1", PYTHONIOENCODING="utf-8:strict")
    done = subprocess.run([sys.executable, "-m", "hypersparse", *[a.encode() for a in ARGS], b"--run-dir", run],
                          capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert os.path.exists(run + b"/model.pt")


def test_report_reads_a_run_whose_logs_end_in_a_cut_line(reference, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for name in ("metrics.jsonl", "stats.jsonl"):
        with open(run / name, "a") as f:
            f.write('{"epoch": 99, "pha')
    out = cli("report", str(run))
    assert out.returncode == 0, out.stderr


def test_a_full_disk_says_so(tmp_path, monkeypatch, capsys):
    import errno

    from hypersparse import checkpoint, export, report, run_write  # noqa: F401
    from hypersparse.cli import main

    # export and report bind atomic_write when first imported: imported here, before the patch, a module the run
    # loads lazily cannot keep the patched function for the rest of the session
    def full(path, write, mode="wb"):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    monkeypatch.setattr(run_write, "atomic_write", full)
    code = main([*ARGS, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "disk is full" in err and len(err.strip().splitlines()) == 1, err


def test_a_checkpoint_that_would_run_code_is_refused_on_resume(reference, tmp_path):
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"version": 2, "model": Evil()}, run / "checkpoint.pt")
    out = cli("train", "--resume", str(run))
    assert out.returncode == 2 and "could run code" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not marker.exists()
