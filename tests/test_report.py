import json
import os
import re
import subprocess
import sys

from hypersparse.config import TrainConfig
from hypersparse.engine import train
from hypersparse.report import FIGURES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_from_tiny_runs_has_every_figure(tmp_path):
    devnull = open(os.devnull, "w")
    for reg in ("hs", "l1"):
        train(TrainConfig.from_dict(dict(reg=reg, sparsity=0.9, epochs_scale=0.03, lambda_init=1e-3)), tmp_path / reg,
              False, devnull)
    logged = [json.loads(line) for line in (tmp_path / "hs" / "stats.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (tmp_path / "hs" / "metrics.jsonl").read_text().splitlines()]
    epochs = {r["epoch"] for r in logged}
    # always logged: every regularization epoch, the last warm-up epoch, and the last epoch
    assert {m["epoch"] for m in metrics if m["phase"] == "regularize"} <= epochs
    assert max(m["epoch"] for m in metrics if m["phase"] == "warmup") in epochs
    assert metrics[-1]["epoch"] in epochs
    assert all("pruned_per_class" in r for r in logged if r["phase"] == "regularize")
    out = subprocess.run([sys.executable, "-m", "hypersparse", "report", str(tmp_path / "hs"), str(tmp_path / "l1"),
                          "--out", str(tmp_path / "report")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    for name in FIGURES:
        png = (tmp_path / "report" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 2000
        assert f"alt='{name}.png'" in page
    assert len(re.findall(r"src='data:image/png;base64,", page)) == len(FIGURES)
    assert "art-hs" in page and "art-l1" in page


def test_report_on_a_folder_that_is_not_a_run(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hypersparse", "report", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2 and "not a run directory" in out.stderr and "Traceback" not in out.stderr


def test_a_report_that_fills_the_disk_leaves_no_half_report(tmp_path, monkeypatch):
    """Trial 31e F007: a full disk while writing left the figures already written in the new --out folder."""
    import errno

    import pytest

    import hypersparse.report as report

    train(TrainConfig.from_dict(dict(sparsity=0.9, epochs_scale=0.03, lambda_init=1e-3)), tmp_path / "run", False,
          open(os.devnull, "w"))
    real, calls = report.atomic_write, []

    def fills_up(path, write, mode="wb"):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, write, mode)

    monkeypatch.setattr(report, "atomic_write", fills_up)
    with pytest.raises(OSError):
        report.build_report([tmp_path / "run"], tmp_path / "out")
    assert not (tmp_path / "out").exists()
