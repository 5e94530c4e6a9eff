"""Experiment tracking: every metrics row of a run also goes to TensorBoard, Weights & Biases or MLflow.

``--set run.log=tensorboard`` writes event files to ``<run>/tensorboard`` (``tensorboard --logdir runs``);
``wandb`` and ``mlflow`` log to whatever those libraries are configured for (``WANDB_*`` / ``MLFLOW_*``
variables, their own login). Each is an optional extra; the run refuses to start without it. Numbers are logged
under ``<section>/<name>`` (``acc/val``, ``art/pruned_acc``, ...) with the epoch as the step.
"""
from __future__ import annotations

from pathlib import Path

from hypersparse.checkpoint import own_folder
from hypersparse.errors import UserError

#: metrics-row field -> tracked name; fields not listed go under "other/"
NAMES = {"loss": "loss/train", "train_acc": "acc/train", "val_acc": "acc/val", "sparsity": "sparsity/actual",
         "target_sparsity": "sparsity/target", "lr": "schedule/lr", "lambda": "art/lambda",
         "pruned_acc": "art/pruned_acc", "dense_acc": "art/dense_acc", "buffer_mean": "art/buffer_mean",
         "pruned_mass": "art/pruned_mass", "eta": "art/eta", "seconds": "time/epoch_seconds"}
SKIP = ("epoch", "train_seconds", "measure_seconds", "stats_seconds", "val_acc_after_stop", "chosen_epoch",
        "lambda_init")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def scalars(row: dict) -> dict[str, float]:
    """The numbers of a metrics row, under their tracked names."""
    out = {}
    for key, value in row.items():
        if key in SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[NAMES.get(key, f"other/{key}")] = float(value)
    return out


class Tracker:
    """Where rows go besides ``metrics.jsonl``; :func:`open_tracker` builds one."""

    def log_row(self, row: dict) -> None: ...

    def log_image(self, name: str, png: Path, step: int) -> None: ...

    def log_summary(self, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoard(Tracker):
    def __init__(self, folder: Path, config: dict):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--set run.log=tensorboard needs TensorBoard: pip install tensorboard (or "
                            "'hypersparse[tensorboard]')") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.config = config

    def log_row(self, row: dict) -> None:
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, row["epoch"])
        self.writer.flush()

    def log_image(self, name: str, png: Path, step: int) -> None:
        import matplotlib.image

        image = matplotlib.image.imread(str(png))[..., :3]  # RGBA floats in [0, 1] -> RGB
        self.writer.add_image(name, image, step, dataformats="HWC")
        self.writer.flush()

    def log_summary(self, values: dict[str, float]) -> None:
        import json

        for name, value in values.items():
            self.writer.add_scalar(name, value, 0)
        self.writer.add_text("config", "```\n" + json.dumps(self.config, indent=2) + "\n```", 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB(Tracker):
    def __init__(self, folder: Path, config: dict):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(dir=str(folder), config=config, name=folder.parent.name, resume="allow",
                              id=_run_id(folder))

    def log_row(self, row: dict) -> None:
        self.run.log(scalars(row), step=row["epoch"])

    def log_image(self, name: str, png: Path, step: int) -> None:
        self.run.log({name: self.wandb.Image(str(png))}, step=step)

    def log_summary(self, values: dict[str, float]) -> None:
        self.run.summary.update(values)

    def close(self) -> None:
        self.run.finish()


class MLflow(Tracker):
    def __init__(self, folder: Path, config: dict):
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=folder.parent.name)
        flat = {f"{s}.{k}": v for s, section in config.items() for k, v in section.items()}
        mlflow.log_params(flat)

    def log_row(self, row: dict) -> None:
        self.mlflow.log_metrics(scalars(row), step=row["epoch"])

    def log_image(self, name: str, png: Path, step: int) -> None:
        self.mlflow.log_artifact(str(png))

    def log_summary(self, values: dict[str, float]) -> None:
        self.mlflow.log_metrics(values)

    def close(self) -> None:
        self.mlflow.end_run()


def _run_id(folder: Path) -> str:
    """A stable id per run folder, so a resumed run continues its W&B run."""
    import hashlib

    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]


KINDS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


#: the trackers that write into a folder of their own inside the run folder (``<run>/<kind>``)
IN_RUN_FOLDER = ("tensorboard", "wandb")


def tracker_folder(kind: str | None, run_dir: Path) -> Path | None:
    """``<run_dir>/<kind>`` for a tracker that writes there, checked (UserError if it is a symbolic link or not a
    folder: the event files would land where it points); None for the others."""
    if kind not in IN_RUN_FOLDER:
        return None
    return own_folder(Path(run_dir) / kind, f"the folder of --set run.log={kind}")


def check_tracker(kind: str | None, run_dir: Path | None = None) -> None:
    """UserError if the package ``run.log`` needs is missing, or its folder in ``run_dir`` is not one it can write
    (:func:`tracker_folder`): checked before the run folder is made."""
    if run_dir is not None:
        tracker_folder(kind, run_dir)
    if kind == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise UserError("--set run.log=tensorboard needs TensorBoard: pip install tensorboard (or "
                            "'hypersparse[tensorboard]')") from None
    elif kind is not None:
        import importlib.util

        if importlib.util.find_spec(PACKAGES[kind]) is None:
            raise UserError(f"--set run.log={kind} needs {kind}: pip install {PACKAGES[kind]}")


def open_tracker(kind: str | None, run_dir: Path, config: dict) -> Tracker | None:
    """The tracker ``run.log`` names, logging under ``run_dir``; None for none. UserError if its package is missing."""
    if kind is None:
        return None
    if kind != "tensorboard":
        import importlib.util

        if importlib.util.find_spec(PACKAGES[kind]) is None:
            raise UserError(f"--set run.log={kind} needs {kind}: pip install {PACKAGES[kind]}")
    return KINDS[kind](tracker_folder(kind, run_dir) or Path(run_dir) / kind, config)
