"""What a finished or running run left on disk, read back: for ``eval``, ``export``, ``report`` and the benchmarks.

A run directory holds ``config.json`` (its settings, by section), ``metrics.jsonl``
(one row per epoch), ``stats.jsonl`` (weight statistics), ``checkpoint.pt``,
``model.pt`` and ``summary.json``. Every one is read through its schema
(:mod:`hypersparse.schema`) before anything in it is used, and none of them
decides what code runs: a run that needs a plugin or a model or dataset by
import path says which flag to type (:mod:`hypersparse.plugins`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hypersparse import schema
from hypersparse.checkpoint import VERSION, load_checkpoint
from hypersparse.config import TrainConfig
from hypersparse.errors import UserError
from hypersparse.method import method_entry
from hypersparse.plugins import CODE_FLAGS, code_settings, load_plugins, names_code, trust_line

CONFIG, METRICS, STATS, CHECKPOINT, MODEL, SUMMARY = (
    "config.json", "metrics.jsonl", "stats.jsonl", "checkpoint.pt", "model.pt", "summary.json")
DAMAGED = "the run's files are damaged (or were not written by this hypersparse)"


# the schemas of the files that hold a run's settings (the others are in hypersparse.schema, below the settings)
def _settings(value, where):
    """config.json's schema is the settings dataclasses' (types, ranges, known keys)."""
    if not isinstance(value, dict):
        raise schema.SchemaError(where, f"must be an object of settings by section, got {type(value).__name__}")
    method = value.get("sparsity", {}).get("method") if isinstance(value.get("sparsity"), dict) else None
    if isinstance(method, str) and method_entry(method) is None:  # a plugin's method, its plugin not typed
        raise UserError(f"the run uses --method {method!r}, which no loaded plugin registers; type the "
                        "--plugin that registers it, as the run was started with")
    try:
        read = TrainConfig.from_dict(value, check=False).to_dict()
    except UserError as exc:
        raise schema.SchemaError(where, f"holds a bad setting: {exc}") from None
    # each setting as the settings read it (an integer written 0.0 is 0), in the file's own layout
    return {section: {k: read.get(section, {}).get(k, v) for k, v in fields.items()} if isinstance(fields, dict)
            else fields for section, fields in value.items()}


def _a_dict(value, where):
    if not isinstance(value, dict):
        raise schema.SchemaError(where, "must be a dict")
    return value


def _summary_fits(record: dict, where: str = "") -> None:
    """The checks across a summary's fields: its class names, and the dense model's counts against the model's size."""
    schema.classes_fit(record, where)
    total = sum(record["epochs"].values())
    for part in ("dense", "sparse"):  # a model chosen at an epoch the run never trained is a file made by hand
        epoch = (record.get(part) or {}).get("epoch")
        if epoch is not None and epoch > total:
            raise schema.SchemaError(f"{where}.{part}.epoch" if where else f"{part}.epoch",
                                     f"is {epoch}, beyond the run's {total} epochs ('epochs')")
    if record.get("dense"):
        dense = record["dense"]
        if ("kept" in dense) != ("sparsity" in dense):  # a run writes both (or, before version 0.3, neither)
            one, other = ("kept", "sparsity") if "kept" in dense else ("sparsity", "kept")
            raise schema.SchemaError(f"{where}.dense.{other}" if where else f"dense.{other}",
                                     f"is missing, but dense.{one} is there (a run writes both)")
        schema.counts_fit(dense, f"{where}.dense" if where else "dense", record["sparse"].get("numel"))


SETTINGS = schema.Custom(_settings, "an object of settings by section")
SUMMARY_SPEC = schema.Dict({
    "config": SETTINGS,
    "dense": schema.Optional(schema.DENSE),
    "sparse": schema.SCORES,
    "epochs": schema.Map(schema.EPOCH, schema.NAME, 16),
    "phase_seconds": schema.Map(schema.Float(0), schema.NAME, 16),
    "device": schema.Str(64),
    "arch": schema.Dict(schema.ARCH.fields, required="all"),
    "input": schema.INPUT,
    "compare": schema.Map(schema.SCORES, schema.NAME, 16),
    "distributed": schema.JSON(3),
    "art": schema.Optional(schema.JSON(2)),  # ART's course (run_write.art_course), for the end summary
    "threads": schema.JSON(2),  # how many CPU threads trained, and why (threads.choose_threads)
}, required=("config", "sparse", "epochs", "arch"), then=_summary_fits)
CHECKPOINT_SPEC = schema.Dict({
    "version": schema.Int(), "identity": schema.Str(64), "config": SETTINGS, "model": schema.STATE,
    "optimizer": schema.OPTIMIZER,
    "method": schema.Custom(_a_dict, "the method's state (checked against --method's schema)"),
    "metrics": schema.List(schema.METRICS_ROW, schema.MAX_RUN_EPOCHS), "best": schema.Optional(schema.BEST),
    "dense": schema.Optional(schema.DENSE),
    "phase_seconds": schema.Map(schema.Float(0), schema.NAME, 16), "stats": schema.Optional(schema.STATS_STATE),
}, required="all")
#: file name -> (schema, JSON lines?)
SCHEMAS = {CONFIG: (SETTINGS, False), SUMMARY: (SUMMARY_SPEC, False), METRICS: (schema.METRICS_ROW, True),
           STATS: (schema.STATS_ROW, True)}


def run_label(config: dict) -> str:
    """The run's label in tables and figures (config as in ``config.json``): its method's (``art-hs``, ``art-l1``
    for ART runs), else the method's name."""
    method = config.get("sparsity", {}).get("method", "?")
    entry = method_entry(method) if isinstance(method, str) else None
    return entry.label(config) if entry is not None and entry.label is not None else str(method)


def read_run_file(path: str | Path):
    """A run file (``config.json``, ``summary.json``, ``metrics.jsonl`` or ``stats.jsonl``) checked against its
    schema; None (or no rows) if it does not exist; one UserError line naming the file and field if it is wrong."""
    path = Path(path)
    spec, lines = SCHEMAS[path.name]
    if not path.exists() and not path.is_symlink():
        return [] if lines else None
    if lines:
        rows = schema.read_jsonl(path, spec, "run log", DAMAGED)
        if path.name == METRICS:
            _epochs_in_order(rows, path)
        return rows
    record = schema.read_json(path, spec, "run file", DAMAGED)
    if path.name == SUMMARY and record is not None and (path.parent / CONFIG).exists():
        _same_run(record["config"], read_run_file(path.parent / CONFIG), path)
    return record


def _epochs_in_order(rows: list[dict], path: Path) -> None:
    """UserError unless a run log's rows are its epochs 0, 1, 2, ... once each: a run appends one row per epoch, and a
    resume drops the rows of an epoch it trains again."""
    for i, row in enumerate(rows):
        if row["epoch"] != i:
            raise UserError(f"{path}: row {i + 1} is epoch {row['epoch']}, where the run's epoch {i} belongs (rows out "
                            f"of order, repeated or missing: two runs wrote the folder, or it was edited); {DAMAGED}")


def _same_run(summary_config: dict, config: dict | None, path: Path) -> None:
    """UserError unless summary.json records the settings of the run whose config.json is beside it."""
    if config is None:
        return
    mine, theirs = (TrainConfig.from_dict(c, check=False) for c in (summary_config, config))
    if mine.identity != theirs.identity:
        a, b = mine.to_dict(), theirs.to_dict()
        key = next((f"{s}.{k}" for s in sorted(set(a) | set(b)) for k in sorted(set(a.get(s, {})) | set(b.get(s, {})))
                    if a.get(s, {}).get(k) != b.get(s, {}).get(k) and k != "run_dir"), "?")
        raise UserError(f"{path}: its settings are not those of {path.parent / CONFIG} (first difference: {key}); the "
                        f"folder holds files of two runs; {DAMAGED}")


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` or ``stats.jsonl`` (schema-checked); a last line cut short by a crash is
    dropped."""
    return read_run_file(path)


def read_json(path: str | Path) -> dict | None:
    """A run's ``config.json`` or ``summary.json`` (schema-checked), or None if it does not exist."""
    return read_run_file(path)


def load_run_checkpoint(path: str | Path) -> dict:
    """A run's ``checkpoint.pt``, checked to be of this version's layout and against its schema."""
    ckpt = load_checkpoint(path, "checkpoint")
    version = ckpt.get("version") if isinstance(ckpt, dict) else None
    if version is not None and type(version) is not int:  # '3' would read as "version '3'; this reads version 3"
        raise UserError(f"checkpoint {path} has layout version {version!r}, a {type(version).__name__}, where an "
                        f"integer ({VERSION}) belongs: the checkpoint is damaged; start the run again")
    if version != VERSION:
        raise UserError(f"checkpoint {path} has layout version {version!r}; this hypersparse reads version {VERSION}: "
                        "start the run again (or resume it with the hypersparse that wrote it)")
    fix = "the checkpoint is damaged; start the run again"
    ckpt = schema.check(ckpt, CHECKPOINT_SPEC, f"checkpoint {path}", fix)
    from hypersparse.method import method_entry

    method = ckpt["config"].get("sparsity", {}).get("method", "art")
    entry = method_entry(method)
    spec = entry.state if entry is not None and entry.state is not None else schema.METHOD_STATE.get(method)
    if spec is not None:  # a method registered without a schema checks its own state when it loads it
        schema.check(ckpt["method"], spec, f"checkpoint {path}: method", fix)
    return ckpt


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


def plugins_first(folder: Path, plugin: str | None) -> None:
    """Import the typed ``--plugin`` modules before the run's ``config.json`` is read through the settings (whose
    method or sections a plugin may register); a run that used a plugin not typed is refused, naming it."""
    require_trusted(_raw_config(folder), {"run.plugin": plugin}, f"the run in {folder}", ("run.plugin",))
    load_plugins(plugin)


def _raw_config(folder: Path) -> dict:
    """``config.json`` as JSON, not yet read through the settings."""
    path = folder / CONFIG
    raw = schema.read_json(path, schema.JSON(4), "run file", DAMAGED) if path.exists() else {}
    return raw if isinstance(raw, dict) else {}


def load_run(run_dir: str | Path, plugin: str | None = None) -> Run:
    """Read a run directory (it must hold ``metrics.jsonl``); ``plugin``: the modules the user typed, imported first."""
    run_dir = Path(run_dir)
    if not (run_dir / METRICS).exists():
        raise UserError(f"{run_dir} is not a run directory (no {METRICS}); pass the folder 'hypersparse train' wrote")
    load_plugins(plugin)
    try:
        config = read_json(run_dir / CONFIG) or {}
    except UserError:  # a method or settings its plugin registers: name the plugin rather than call the file damaged
        require_trusted(_raw_config(run_dir), {"run.plugin": plugin}, f"the run in {run_dir}", ("run.plugin",))
        raise
    return Run(run_dir, config, read_jsonl(run_dir / METRICS), read_jsonl(run_dir / STATS),
               read_json(run_dir / SUMMARY))


def require_trusted(config: dict, typed: dict, source: str, uses=tuple(CODE_FLAGS)) -> None:
    """UserError naming the flags to type for each setting of ``config`` (among ``uses``) that names code and that the
    user did not type (``typed``: setting -> the value they typed, or None)."""
    needed = {k: v for k, v in code_settings(config).items() if k in uses and not typed.get(k)}
    if needed:
        raise UserError(trust_line(needed, source))


def run_settings(path: str | Path, dataset: str | None = None, data_dir: str | None = None,
                 model: str | None = None, plugin: str | None = None,
                 uses: tuple[str, ...] = tuple(CODE_FLAGS)) -> dict:
    """Dataset, data folder, model and seed of the run at ``path`` (a run directory or a file in one), overridable.

    Imports the plugins the user typed (``plugin``); a run whose config names code (``uses``: which of its
    settings this command reads) that the user did not type is refused with one line naming the flags.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist; pass a run directory or a model file")
    plugins_first(p if p.is_dir() else p.parent, plugin)
    config = read_json((p if p.is_dir() else p.parent) / CONFIG) or {}
    require_trusted(config, {"run.plugin": plugin, "model.model": model, "data.dataset": dataset},
                    f"the run in {p if p.is_dir() else p.parent}", uses)
    settings = {"dataset": dataset or config.get("data", {}).get("dataset"),
                "data_dir": data_dir or config.get("data", {}).get("data_dir"),
                "model": model or config.get("model", {}).get("model"), "seed": config.get("run", {}).get("seed", 0),
                "exclude": config.get("sparsity", {}).get("exclude")}
    needs_model = "model.model" in uses  # an ONNX graph is its own model
    if not settings["dataset"] or (needs_model and not settings["model"]):
        if p.is_dir() and not config:
            study = " (a tune study: its trials' runs are its trial-N folders)" if (p / "study.db").exists() else ""
            raise UserError(f"{p} is not a run directory (no {CONFIG}){study}; pass the folder 'hypersparse train' "
                            "wrote")
        raise UserError(f"{p} has no config.json beside it; pass --dataset" + (" and --model" if needs_model else ""))
    return settings


def model_from_run(path: str | Path, model_name: str | None = None, num_classes: int | None = None,
                   in_channels: int | None = None, image_size: int | None = None,
                   trust_code: bool = False) -> nn.Module:
    """The trained model at ``path``: a run directory (its ``model.pt``), a ``.pt`` state or checkpoint, or a sparse
    file.

    ``model_name`` (trusted: you chose it) else the architecture the run's ``summary.json`` or the sparse file
    records; a recorded name that is code (``module.path:callable``) is built only with ``trust_code=True``.
    """
    from hypersparse.models import create_model

    p = Path(path)
    file = p / MODEL if p.is_dir() else p
    if file.suffix == ".onnx":  # the one line, whole; running ONNX files is onnxruntime's job
        raise UserError(f"{file} is an ONNX model, not a PyTorch one; give the run directory it was exported from, "
                        "its model.pt or a sparse .safetensors file")
    if file.suffix == ".safetensors":
        from hypersparse.export import fill, load_sparse_state, model_for

        state, arch = load_sparse_state(file)
        if model_name is None and names_code("model.model", arch.get("model")) and not trust_code:
            raise UserError(trust_line({"model.model": arch["model"]}, f"sparse file {file}"))
        if model_name is None:
            return fill(model_for(arch, file, trust_code), state, arch, file)
        shape = [v if v is not None else arch.get(k) for k, v in
                 (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size))]
        if None in shape:
            raise UserError(f"{file} does not record its input shape; pass --dataset")
        return fill(create_model(model_name, *shape), state, arch, file)
    if not file.exists():
        raise UserError(f"{file} does not exist; train the run to the end first")
    arch = (read_json(file.parent / SUMMARY) or {}).get("arch", {})
    name = model_name or arch.get("model")
    if model_name is None and names_code("model.model", name) and not trust_code:
        raise UserError(trust_line({"model.model": name}, f"the run in {file.parent}"))
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
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UserError(f"{label} holds a {type(state).__name__}, not a state_dict or a run checkpoint")
    if state and all("::" in k for k in state):  # a sparse export (export --format sparse): its exact state_dict
        from hypersparse.export import load_sparse_state

        state = load_sparse_state(file)[0]
    expected = set(model.state_dict())
    if set(state) != expected:  # say which names differ: the first line of torch's message names none
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        shown = "; ".join(f"{what_} {', '.join(repr(k) for k in keys[:3])}{' ...' if len(keys) > 3 else ''}"
                          for what_, keys in (("missing", missing), ("unexpected", unexpected)) if keys)
        if unexpected and all(k.startswith("module.") for k in unexpected):
            hint = "; its names carry DistributedDataParallel's 'module.' prefix: save model.module.state_dict()"
        elif len(state) == 1 and isinstance(next(iter(state.values())), dict):
            hint = f"; it wraps a state_dict in {next(iter(state))!r}: save the state_dict itself"
        raise UserError(f"{label} does not fit model {name!r} ({shown}){hint}")
    own = model.state_dict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        problem = schema.tensor_problem(value)  # first: a meta or nested tensor has no values to check below
        if problem:
            raise UserError(f"{label} holds {key}, which {problem}; save the model's own state_dict")
        if value.dtype != own[key].dtype and (  # load_state_dict would cast (a complex weight to its real part)
                value.is_complex() or value.is_floating_point() != own[key].is_floating_point()):
            raise UserError(f"{label} holds {key} as {value.dtype}, where model {name!r} has {own[key].dtype}; save "
                            "the model's own state_dict")
        if value.is_floating_point() and not bool(torch.isfinite(
                value if value.element_size() > 1 else value.float()).all()):  # float8 has no isfinite of its own
            raise UserError(f"{label} holds NaN or inf in {key}: weights no finished training writes (a diverged "
                            "run's?); use another file")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc).strip())
        raise UserError(f"{label} does not fit model {name!r}: {detail[:200]}{hint}") from None
