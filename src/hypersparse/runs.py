"""What a finished or running run left on disk, read back: for ``eval``, ``export``, ``report`` and the benchmarks.

A run directory holds ``config.json`` (its settings, by section), ``metrics.jsonl``
(one row per epoch), ``stats.jsonl`` (weight statistics), ``checkpoint.pt``,
``model.pt`` and ``summary.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from hypersparse.checkpoint import load_checkpoint
from hypersparse.errors import UserError
from hypersparse.plugins import load_plugins

CONFIG, METRICS, STATS, CHECKPOINT, MODEL, SUMMARY = (
    "config.json", "metrics.jsonl", "stats.jsonl", "checkpoint.pt", "model.pt", "summary.json")


def run_label(config: dict) -> str:
    """``art-hs``, ``art-l1``, ... for ART runs, the method's name otherwise (config as in ``config.json``)."""
    method = config.get("sparsity", {}).get("method", "?")
    return f"art-{config.get('art', {}).get('reg', 'hs')}" if method == "art" else method


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a last line cut short by a crash is dropped."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # a write cut short: the rows before it are complete
            raise UserError(f"{path} line {i + 1} is not JSON; the run's log is damaged") from None
    return rows


def read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); the run's files are damaged") from None


@dataclass
class Run:
    """A run directory's files, read."""

    dir: Path
    config: dict
    metrics: list[dict]
    stats: list[dict]
    summary: dict | None

    @property
    def label(self) -> str:
        return run_label(self.config) if self.config else self.dir.name


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory (it must hold ``metrics.jsonl``)."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).exists():
        raise UserError(f"{run_dir} is not a run directory (no {METRICS}); pass the folder 'hypersparse train' wrote")
    return Run(run_dir, read_json(run_dir / CONFIG) or {}, read_jsonl(run_dir / METRICS), read_jsonl(run_dir / STATS),
               read_json(run_dir / SUMMARY))


def run_settings(path: str | Path, dataset: str | None = None, data_dir: str | None = None,
                 model: str | None = None) -> dict:
    """Dataset, data folder, model and seed of the run at ``path`` (a run directory or a file in one), overridable."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist; pass a run directory or a model file")
    config = read_json((p if p.is_dir() else p.parent) / CONFIG) or {}
    load_plugins(config.get("run", {}).get("plugin"))  # the run's own models and datasets
    settings = {"dataset": dataset or config.get("data", {}).get("dataset"),
                "data_dir": data_dir or config.get("data", {}).get("data_dir"),
                "model": model or config.get("model", {}).get("model"), "seed": config.get("run", {}).get("seed", 0),
                "exclude": config.get("sparsity", {}).get("exclude")}
    if not settings["dataset"] or not settings["model"]:
        raise UserError(f"{p} has no config.json beside it; pass --dataset and --model")
    return settings


def model_from_run(path: str | Path, model_name: str | None = None, num_classes: int | None = None,
                   in_channels: int | None = None, image_size: int | None = None) -> nn.Module:
    """The trained model at ``path``: a run directory (its ``model.pt``), a ``.pt`` state or checkpoint, or a sparse file.

    The architecture comes from the run's ``summary.json`` where there is one, else from the arguments.
    """
    from hypersparse.models import create_model

    p = Path(path)
    file = p / MODEL if p.is_dir() else p
    if file.suffix == ".safetensors":
        from hypersparse.export import load_sparse

        return load_sparse(file)
    if not file.exists():
        raise UserError(f"{file} does not exist; train the run to the end first")
    arch = (read_json(file.parent / SUMMARY) or {}).get("arch", {})
    load_plugins((read_json(file.parent / CONFIG) or {}).get("run", {}).get("plugin"))
    name = model_name or arch.get("model")
    shape = [v if v is not None else arch.get(k) for k, v in
             (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size))]
    if not name or None in shape:
        raise UserError(f"{file} has no summary.json beside it that names its architecture; pass --model and --dataset")
    model = create_model(name, *shape)
    load_weights(model, file, name, hint="; pass the run's --model")
    return model


def load_weights(model: nn.Module, file: str | Path, name: str, what: str = "", hint: str = "") -> None:
    """Load a state_dict, or a run checkpoint's ``model``, from ``file`` into ``model`` (registered as ``name``)."""
    label = f"{what} {file}".strip()
    state = load_checkpoint(file, what or "model file")
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"{label} holds a {type(state).__name__}, not a state_dict or a run checkpoint")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise UserError(f"{label} does not fit model {name!r}: {str(exc).splitlines()[0][:200]}{hint}") from None
