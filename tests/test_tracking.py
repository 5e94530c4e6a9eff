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

    page = build_report([run]).read_text()
    epochs = ", ".join(f"{phase} {n}" for phase, n in summary["epochs"].items())
    assert f"<td>{epochs}</td>" in page  # the report's epochs column reads as text, not a JSON dict
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


@pytest.mark.parametrize("kind", ["wandb", "mlflow"])
def test_wandb_and_mlflow_adapters_send_every_row(kind, tmp_path, monkeypatch):
    """With a stand-in for the library (neither is installed here): every metrics row reaches it at its epoch, the
    settings once, the final scores at the end, and the run is closed."""
    import sys
    import types

    calls = []
    if kind == "wandb":
        run = types.SimpleNamespace(log=lambda values, step: calls.append(("row", step, values)),
                                    summary={}, finish=lambda: calls.append(("close",)))
        module = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw["config"])) or run,
                                       Image=lambda path: path)
    else:
        module = types.SimpleNamespace(
            start_run=lambda **kw: calls.append(("init", None)), log_params=lambda p: calls.append(("params", p)),
            log_metrics=lambda values, step=None: calls.append(("row", step, values)),
            end_run=lambda: calls.append(("close",)), log_artifact=lambda path: None)
    monkeypatch.setitem(sys.modules, kind, module)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == kind else None)
    cfg = TrainConfig.from_dict({"epochs_scale": 0.02, "lambda_init": 1e-3, "log": kind})
    train(cfg, tmp_path / "run", progress=False, out=open(os.devnull, "w"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [c for c in calls if c[0] == "row" and c[1] is not None]
    assert [c[1] for c in logged] == [r["epoch"] for r in rows]
    assert [c[2]["acc/val"] for c in logged] == pytest.approx([r["val_acc"] for r in rows])
    assert calls[0][0] == "init" and calls[-1] == ("close",)
    if kind == "wandb":
        assert run.summary["final/sparse_test_acc"] == pytest.approx(
            json.loads((tmp_path / "run" / "summary.json").read_text())["sparse"]["test_acc"])
