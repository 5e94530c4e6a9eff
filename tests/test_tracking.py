"""--set run.log=tensorboard: every metrics row, the end result and the report's figures, read back from the event
file with TensorBoard's own reader."""
import json
import os

import pytest

from hypersparse.config import TrainConfig
from hypersparse.engine import train


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_event_file_holds_every_metrics_row_and_the_report_figures(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    cfg = TrainConfig.from_dict({"sparsity": 0.9, "epochs_scale": 0.03, "lambda_init": 1e-3, "log": "tensorboard"})
    summary = train(cfg, run, progress=False, out=open(os.devnull, "w"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = _events(run / "tensorboard")
    val = events.Scalars("acc/val")
    assert [e.step for e in val] == [r["epoch"] for r in rows]
    assert [e.value for e in val] == pytest.approx([r["val_acc"] for r in rows])
    scored = [r for r in rows if r.get("pruned_acc") is not None]
    assert len(scored) >= 3
    assert [e.value for e in events.Scalars("art/pruned_acc")] == pytest.approx([r["pruned_acc"] for r in scored])
    assert [e.value for e in events.Scalars("sparsity/actual")] == pytest.approx([r["sparsity"] for r in rows])
    assert events.Scalars("final/sparse_test_acc")[0].value == pytest.approx(summary["sparse"]["test_acc"])

    from hypersparse.report import FIGURES, build_report

    build_report([run])
    images = _events(run / "tensorboard").Tags()["images"]
    assert {f"report/{name}" for name in FIGURES} <= set(images)


def test_run_log_names_the_missing_package_and_the_fix(tmp_path, monkeypatch):
    import sys

    from hypersparse.errors import UserError

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    cfg = TrainConfig.from_dict({"epochs_scale": 0.02, "log": "tensorboard"})
    with pytest.raises(UserError, match="pip install tensorboard"):
        train(cfg, tmp_path / "run", progress=False, out=open(os.devnull, "w"))
    assert not (tmp_path / "run").exists()  # a run that cannot start leaves nothing behind
