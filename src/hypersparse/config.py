"""Hyperparameters of a run, grouped by concern: one frozen dataclass per concern, defaults and help in one place.

A run's settings come from the defaults, then a config file (``--config``:
TOML or JSON, a run's ``config.json`` included), then ``--set SECTION.KEY=VALUE``
and the flags. A setting that does not apply to the chosen method, regularizer
or dataset is an error, never silently ignored (:func:`not_applicable`).
Keys may be written with their section (``art.eta``) or alone (``eta``): every
key name is unique across the sections.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hypersparse.errors import UserError, did_you_mean
from hypersparse.masks import check_ceiling
from hypersparse.params import check_sparsity, exclude_filter, head_layers, transformer_ceiling
from hypersparse.schedule import DEFAULT_PUSH, parse_auto
NO_FILES = ("digits", "synthetic")  # datasets that read no --data-dir
DOWNLOADS = ("mnist", "fashion-mnist", "cifar10", "cifar100")  # datasets whose loader can fetch its files
LOGGERS = ("tensorboard", "wandb", "mlflow")  # run.log: where metrics rows go besides metrics.jsonl


def _f(default, help: str, flag: bool = True):
    """A setting; ``flag=False`` keeps it out of ``--help`` (config file or ``--set`` only)."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class DataConfig:
    """What to train on."""

    dataset: str = _f("digits", "dataset name (digits needs no files), folder:<path> (class sub-folders of images) or "
                      "module.path:callable")
    data_dir: str | None = _f(None, "folder that holds the dataset's official files")
    download: bool = _f(False, "download missing files (checksums are verified); mnist, fashion-mnist, cifar10, "
                        "cifar100")


@dataclass(frozen=True)
class ModelConfig:
    """Which network."""

    model: str = _f("mlp", "model name, torchvision:<name>, timm:<name>, hf:<config.json or saved folder> or "
                    "module.path:callable (returns an nn.Module)")
    pretrained: str | None = _f(None, "start from this dense state_dict or run checkpoint; skips warm-up")


@dataclass(frozen=True)
class SparsityConfig:
    """How sparse, and by which method."""

    method: str = _f("art", "art (the paper's), oneshot, gmp or snip")
    sparsity: float = _f(0.9, "target fraction of prunable weights that are exactly zero, in [0, 1)")
    exclude: str | None = _f(None, "layers to keep dense, comma-separated globs over their dotted names "
                             "(e.g. classifier,*.downsample.*); every other Linear/Conv weight is prunable")
    max_layer_sparsity: float | None = _f(None, "ceiling on any one layer's sparsity, so global pruning cannot empty "
                                          "a layer (default: 1 - (1 - sparsity) / 10, e.g. 0.999 at 0.99); 1 = none")


@dataclass(frozen=True)
class ARTConfig:
    """ART: the regularizer, lambda's start and growth, and the stop rule (--method art only)."""

    reg: str = _f("hs", "regularizer: hs (HyperSparse), l1, l2")
    lambda_init: float | str = _f(5e-6, "initial strength lambda_0: a number, or auto[:P] to set it from the weights "
                                  f"so the regularizer alone shrinks the weight at the pruning cut by P per epoch "
                                  f"(default P {DEFAULT_PUSH})")
    eta: float = _f(1.05, "growth of lambda per regularization epoch")
    reg_epochs_target: int = _f(0, "end regularization within about this many epochs (eta rises when it would run "
                                "late; a deadline once the pruned copy has come half-way); 0 = the authors' fixed eta")
    criterion: str = _f("matched", "stop rule: matched (dense and pruned copy scored alike) or paper (the authors': "
                        "dense running training accuracy)")
    buffer_k: int = _f(1, "buffer of 2k+1 epochs; the middle one is kept", flag=False)
    max_reg_epochs: int = _f(300, "give up after this many regularization epochs", flag=False)
    pruned_eval_size: int = _f(5000, "training images (fixed by the seed) that score the pruned copy; 0 = all",
                               flag=False)


@dataclass(frozen=True)
class HyperSparseConfig:
    """Speed knobs of the HyperSparse regularizer (--reg hs only)."""

    hs_refresh_every: int = _f(32, "recompute the threshold every K steps (sooner if it drifts); 1 = exact", flag=False)
    hs_compile: str = _f("auto", "fuse the pass with torch.compile: auto (200,000+ weights), on, off", flag=False)


@dataclass(frozen=True)
class BaselineConfig:
    """The baselines' pruning phase (oneshot, gmp, snip)."""

    prune_epochs: int = _f(20, "epochs between warm-up and fine-tuning (gmp prunes over them), to match ART's budget")


@dataclass(frozen=True)
class ScheduleConfig:
    """Optimisation and the phases' lengths (the authors' defaults)."""

    warmup_epochs: int = _f(60, "dense epochs before regularization or pruning")
    finetune_epochs: int = _f(160, "epochs of fine-tuning with the mask fixed")
    lr: float = _f(0.1, "SGD learning rate")
    batch_size: int = _f(64, "training batch size")
    epochs_scale: float = _f(1.0, "shorten every phase by this factor (eta becomes eta**(1/F))")
    lr_steps: str = _f("80,120", "fine-tuning epochs at which the learning rate is multiplied by lr_decay", flag=False)
    lr_decay: float = _f(0.1, "learning-rate factor at each step", flag=False)
    momentum: float = _f(0.9, "SGD momentum", flag=False)
    weight_decay: float = _f(1e-4, "SGD weight decay", flag=False)
    epoch_fraction: float = _f(1.0, "each epoch visits a fresh random fraction of the training set, in (0, 1]",
                               flag=False)


@dataclass(frozen=True)
class RunConfig:
    """Where the run goes and how it is recorded."""

    seed: int = _f(0, "random seed (data split, init, order, augmentation)")
    run_dir: str | None = _f(None, "where logs and checkpoints go (default: runs/<time>-<dataset>-<model>-...)")
    device: str = _f("auto", "cuda, mps, cpu or auto", flag=False)
    stats: bool = _f(True, "log per-epoch weight statistics (stats.jsonl, for hypersparse report)", flag=False)
    plugin: str | None = _f(None, "modules to import first, comma-separated (they register models and datasets)")
    compare: str | None = _f(None, "after the run, train these baselines at its seed and epoch budget and compare: "
                             "oneshot, gmp, snip (comma-separated; --method art only)")
    threads: int = _f(0, "CPU threads for training; 0 = auto: 1 for a model under 100 M multiply-adds per step "
                      "(faster on a busy machine, and the same numbers on any machine), torch's default above; "
                      "OMP_NUM_THREADS or torch.set_num_threads also choose", flag=False)
    log: str | None = _f(None, "also log every metrics row to tensorboard (pip install tensorboard), wandb or mlflow",
                         flag=False)


SECTIONS: dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "sparsity": SparsityConfig, "art": ARTConfig, "hs": HyperSparseConfig,
    "baseline": BaselineConfig, "schedule": ScheduleConfig, "run": RunConfig,
}
#: key -> its section, for keys written without one
KEYS: dict[str, str] = {f.name: s for s, cls in SECTIONS.items() for f in fields(cls)}


def parse_lambda(value: Any) -> float | str:
    """``lambda_init`` as given: a positive number, ``auto`` or ``auto:P`` with P in (0, 1)."""
    if isinstance(value, str) and value.startswith("auto"):
        try:
            parse_auto(value)
        except ValueError:
            raise UserError(f"--lambda-init auto:P needs P in (0, 1), e.g. auto:0.03, got {value!r}") from None
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--lambda-init must be a positive number, auto or auto:P, got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise UserError(f"--lambda-init must be a positive number, auto or auto:P, got {value!r}")
    return number


def _convert(key: str, tp: str, value: Any) -> Any:
    """A value from a file or ``--set`` text, converted to the field's type, or UserError naming the key."""
    if key == "lambda_init":
        return parse_lambda(value)
    try:
        if value is None:
            if "None" not in tp:
                raise ValueError
            return None
        if tp.startswith("bool"):
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if tp.startswith("int"):
            if isinstance(value, float) and not value.is_integer() or isinstance(value, bool):
                raise ValueError
            return int(value)
        if tp.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, (str, numbers.Number)):
            raise ValueError
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"setting {key} expects {tp.replace(' | None', ' or nothing')}, got {value!r}") from None


@dataclass(frozen=True)
class TrainConfig:
    """A training run: one section per concern. Build it with :meth:`from_dict`; ``given`` lists what was set."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    art: ARTConfig = field(default_factory=ARTConfig)
    hs: HyperSparseConfig = field(default_factory=HyperSparseConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    given: frozenset = field(default=frozenset(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, settings: dict, base: "TrainConfig | None" = None, check: bool = True) -> "TrainConfig":
        """Settings (``{"art": {"eta": 1.1}}``, ``{"art.eta": 1.1}`` or ``{"eta": 1.1}``) over ``base`` or the defaults.

        Raises UserError for an unknown key, a value of the wrong type, or (with
        ``check``) a setting that does not apply or is out of range.
        """
        flat: dict[str, Any] = {}
        for key, value in settings.items():
            if key in SECTIONS and isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        cfg = base or cls()
        updates: dict[str, dict] = {}
        for key, value in flat.items():
            section, _, name = key.rpartition(".")
            section = section or KEYS.get(name, "")
            types = {f.name: str(f.type) for f in fields(SECTIONS[section])} if section in SECTIONS else {}
            if name not in types:
                known = [f"{KEYS[k]}.{k}" for k in KEYS]
                hint = did_you_mean(key, known if "." in key else KEYS)
                listed = "see hypersparse train --help for them" if hint else f"the settings are: {', '.join(known)}"
                raise UserError(f"unknown setting {key!r}{hint}; {listed}")
            updates.setdefault(section, {})[name] = _convert(name, types[name], value)
        sections = {s: replace(getattr(cfg, s), **u) for s, u in updates.items()}
        given = cfg.given | {f"{s}.{k}" for s, u in updates.items() for k in u}
        cfg = replace(cfg, **sections, given=frozenset(given))
        return cfg.validate() if check else cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Settings from a TOML or JSON file (a run's ``config.json`` is one), unchecked: flags may follow."""
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read --config {path} ({exc.strerror or exc}); pass a .toml or .json file") from None
        try:
            if path.suffix == ".toml":
                import tomllib

                settings = tomllib.loads(text.decode())
            else:
                settings = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"--config {path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({exc})") \
                from None
        if not isinstance(settings, dict):
            raise UserError(f"--config {path} must hold a table of settings, not {type(settings).__name__}")
        return cls.from_dict(settings, check=False)

    def to_dict(self) -> dict:
        """The settings that apply to this run, by section (what ``config.json`` holds; :meth:`from_dict` reads it)."""
        out: dict[str, dict] = {}
        for section in SECTIONS:
            for key, value in asdict(getattr(self, section)).items():
                if value is not None and not_applicable(self, f"{section}.{key}") is None:
                    out.setdefault(section, {})[key] = value
        return out

    # -- derived -------------------------------------------------------------
    def scaled(self, epochs: int) -> int:
        return max(1, round(epochs * self.schedule.epochs_scale)) if epochs > 0 else 0

    @property
    def warmup(self) -> int:
        return 0 if self.model.pretrained else self.scaled(self.schedule.warmup_epochs)

    @property
    def finetune(self) -> int:
        return self.scaled(self.schedule.finetune_epochs)

    @property
    def milestones(self) -> list[int]:
        return [self.scaled(int(s)) for s in self.schedule.lr_steps.split(",") if s.strip()]

    @property
    def eta_scaled(self) -> float:
        return self.art.eta ** (1.0 / self.schedule.epochs_scale)

    @property
    def reg_target(self) -> int | None:
        size = 2 * self.art.buffer_k + 1
        return max(size, self.scaled(self.art.reg_epochs_target)) if self.art.reg_epochs_target else None

    @property
    def selection(self) -> dict:
        """Which weights are prunable and the per-layer ceiling, as the methods take them (``filter``, ...)."""
        return {"filter": exclude_filter(self.sparsity.exclude),
                "max_layer_sparsity": self.sparsity.max_layer_sparsity}

    @property
    def max_reg(self) -> int:
        return max(2 * self.art.buffer_k + 1, math.ceil(self.art.max_reg_epochs * self.schedule.epochs_scale))

    def validate(self) -> "TrainConfig":
        """Raise UserError naming the setting and the fix for a bad value or a setting that does not apply."""
        for key in sorted(self.given):
            why = not_applicable(self, key)
            if why:
                raise UserError(f"{flag(key)} {why}; drop it")
        try:
            check_sparsity(self.sparsity.sparsity, "--sparsity")
            if self.sparsity.max_layer_sparsity is not None:
                check_ceiling(self.sparsity.max_layer_sparsity, self.sparsity.sparsity)
        except ValueError as exc:
            raise UserError("--" + str(exc).replace("_", "-", 2) if "max_layer" in str(exc) else str(exc)) from None
        if self.sparsity.exclude is not None and not any(p.strip() for p in self.sparsity.exclude.split(",")):
            raise UserError("--exclude needs layer names or globs such as classifier or *.query, got an empty list")
        _check_values(self)
        return self


def transformer_defaults(cfg: TrainConfig, model) -> TrainConfig:
    """For a Hugging Face model: its output layers stay dense and no layer goes above the transformer ceiling,
    unless the run says otherwise (the same rule as the Hugging Face callback's)."""
    updates: dict = {}
    if "sparsity.exclude" not in cfg.given and head_layers(model):
        updates["exclude"] = ",".join(head_layers(model))
    if "sparsity.max_layer_sparsity" not in cfg.given:
        updates["max_layer_sparsity"] = transformer_ceiling(cfg.sparsity.sparsity)
    return replace(cfg, sparsity=replace(cfg.sparsity, **updates))


def flag(key: str) -> str:
    """How a setting is written on the command line: ``--lr`` for a flag, ``--set art.buffer_k=...`` otherwise."""
    section, _, name = key.rpartition(".")
    shown = next(f.metadata["flag"] for f in fields(SECTIONS[section]) if f.name == name)
    return "--" + name.replace("_", "-") if shown else f"--set {key}"


def not_applicable(cfg: TrainConfig, key: str) -> str | None:
    """Why setting ``key`` (``section.name``) has no effect in ``cfg``, or None if it applies."""
    section, _, name = key.rpartition(".")
    method, dataset = cfg.sparsity.method, cfg.data.dataset
    if section in ("art", "hs") and method != "art":
        return f"applies to --method art only (this run is --method {method})"
    if section == "hs" and cfg.art.reg != "hs":
        return f"applies to --reg hs only (this run regularizes with {cfg.art.reg})"
    if section == "baseline" and method == "art":
        return "applies to the baselines (oneshot, gmp, snip), not --method art"
    if key == "data.data_dir" and dataset.startswith("folder:"):
        return "is not read by a folder:<path> dataset, whose path is its name"
    if key == "data.data_dir" and dataset in NO_FILES:
        return f"is not read by dataset {dataset!r}, which needs no files"
    if key == "data.download" and dataset not in DOWNLOADS:
        return f"works for {', '.join(DOWNLOADS)} only, not dataset {dataset!r}"
    if key == "run.compare" and method != "art":
        return f"compares baselines with --method art only (this run is --method {method})"
    if key == "schedule.warmup_epochs" and cfg.model.pretrained:
        return "does not apply with --pretrained, which starts from a trained dense model (no warm-up)"
    return None


def _check_values(cfg: TrainConfig) -> None:
    choices = {"sparsity.method": ("art", "oneshot", "gmp", "snip"), "art.reg": ("hs", "l1", "l2"),
               "art.criterion": ("paper", "matched"), "hs.hs_compile": ("auto", "on", "off")}
    for key, allowed in choices.items():
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) not in allowed:
            value = getattr(getattr(cfg, section), name)
            raise UserError(f"{flag(key)} must be one of {', '.join(allowed)}, got {value!r}"
                            + did_you_mean(value, allowed))
    parse_lambda(cfg.art.lambda_init)
    compared = [m.strip() for m in (cfg.run.compare or "").split(",")]
    if cfg.run.compare is not None and (not all(compared) or not set(compared) <= {"oneshot", "gmp", "snip"}):
        wrong = next((m for m in compared if m not in ("oneshot", "gmp", "snip")), "")
        raise UserError(f"--compare takes oneshot, gmp and/or snip, comma-separated, got {cfg.run.compare!r}"
                        + did_you_mean(wrong, ("oneshot", "gmp", "snip")))
    positive = ("art.eta", "schedule.lr", "schedule.batch_size", "schedule.epochs_scale", "hs.hs_refresh_every",
                "art.max_reg_epochs", "schedule.lr_decay")
    at_least_zero = ("schedule.warmup_epochs", "schedule.finetune_epochs", "baseline.prune_epochs", "art.buffer_k",
                     "art.pruned_eval_size", "art.reg_epochs_target", "schedule.momentum", "schedule.weight_decay")
    for key in positive + at_least_zero:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not (math.isfinite(value) and (value > 0 if key in positive else value >= 0)):
            raise UserError(f"{flag(key)} must be {'a positive number' if key in positive else '>= 0'}, got {value!r}")
    if cfg.art.eta < 1:
        raise UserError(f"--eta must be at least 1 (lambda grows by it each epoch), got {cfg.art.eta!r}")
    if cfg.schedule.epochs_scale < 1e-3 or math.log(cfg.art.eta) / cfg.schedule.epochs_scale > 700:
        raise UserError(f"--epochs-scale {cfg.schedule.epochs_scale:g} is too small (lambda would grow by "
                        f"{cfg.art.eta:g}**{1 / cfg.schedule.epochs_scale:g} per epoch); use a factor of at least 0.001")
    if cfg.schedule.epochs_scale * max(cfg.schedule.warmup_epochs, cfg.schedule.finetune_epochs, 1) > 1e7:
        raise UserError(f"--epochs-scale {cfg.schedule.epochs_scale:g} makes a phase longer than 10 million epochs; "
                        "use a factor such as 0.1")
    if not 0 < cfg.schedule.epoch_fraction <= 1:
        raise UserError(f"--set schedule.epoch_fraction must be in (0, 1], got {cfg.schedule.epoch_fraction!r}")
    if 0 < cfg.art.reg_epochs_target < 2 * cfg.art.buffer_k + 1:
        raise UserError(f"--reg-epochs-target must be 0 (off) or at least the ART buffer's {2 * cfg.art.buffer_k + 1} "
                        f"epochs (2 x buffer_k + 1), got {cfg.art.reg_epochs_target!r}")
    if not 0 <= cfg.run.threads <= 4096:
        raise UserError(f"--set run.threads must be 0 (auto) or a number of threads, got {cfg.run.threads!r}")
    if cfg.run.log is not None and cfg.run.log not in LOGGERS:
        raise UserError(f"--set run.log must be one of {', '.join(LOGGERS)}, got {cfg.run.log!r}"
                        + did_you_mean(cfg.run.log, LOGGERS))
    if not 0 <= cfg.run.seed < 2**32:
        raise UserError(f"--seed must be in [0, 2**32), got {cfg.run.seed!r}")
    try:
        cfg.milestones
    except ValueError:
        raise UserError(f"--set schedule.lr_steps must be comma-separated integers such as 80,120, got "
                        f"{cfg.schedule.lr_steps!r}") from None
