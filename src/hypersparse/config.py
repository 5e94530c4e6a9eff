"""Hyperparameters of a run, grouped by concern: one frozen dataclass per concern, defaults and help in one place.

A run's settings come from the defaults, then a config file (``--config``:
TOML or JSON, a run's ``config.json`` included), then ``--set SECTION.KEY=VALUE``
and the flags. Every setting declares its type and range (a
:mod:`~hypersparse.schema` spec), so a file, ``--set`` and a flag are checked
alike and ``config.json`` is read back through the same declaration. A setting
that does not apply to the chosen method, regularizer or dataset is an error,
never silently ignored (:func:`not_applicable`). Keys may be written with their
section (``art.eta``) or alone (``eta``): every key name is unique across the sections.

The sections ``data``, ``model``, ``sparsity``, ``schedule`` and ``run`` are every run's; the others come with the
methods (:func:`hypersparse.method.register_method`): ``art`` and ``hs`` with ART, ``baseline`` with the methods
that prune between warm-up and fine-tuning, and a plugin's own. :func:`sections` lists them all.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

from hypersparse.errors import UserError, did_you_mean, first_line
from hypersparse.masks import check_ceiling
from hypersparse.method import method_entries, method_entry, method_sections
from hypersparse.params import check_sparsity, exclude_filter, head_layers, transformer_ceiling
from hypersparse.schedule import DEFAULT_PUSH, LAMBDA_INIT, parse_auto
from hypersparse.schema import (
    MAX_JSON_BYTES,
    Bool,
    Float,
    Int,
    Optional,
    SchemaError,
    Spec,
    Str,
    parse_json,
    read_bytes,
)

NO_FILES = ("digits", "synthetic")  # datasets that read no --data-dir
DOWNLOADS = ("mnist", "fashion-mnist", "cifar10", "cifar100")  # datasets whose loader can fetch its files
EPOCHS = Int(0, 10**6)  # a phase of a million epochs is already beyond any budget
MODULES = r"\s*[A-Za-z_][\w.]*\s*(,\s*[A-Za-z_][\w.]*\s*)*"
LOGGERS = ("tensorboard", "wandb", "mlflow")  # run.log: where metrics rows go besides metrics.jsonl


class Lambda(Spec):
    """``lambda_init``: a positive number, ``auto`` or ``auto:P`` with P in (0, 1) (never a boolean)."""

    def describe(self) -> str:
        return "a positive number, auto or auto:P"

    def check(self, value, where=""):
        if isinstance(value, str) and value.startswith("auto"):
            try:
                parse_auto(value)
            except ValueError:
                raise SchemaError(where, f"auto:P needs P in (0, 1), e.g. auto:0.03, got {value!r}") from None
            return value
        try:
            number = float(value) if isinstance(value, str) and len(value) < 64 else value
        except ValueError:
            raise self.fail(value, where) from None
        return Float(0, lo_open=True, what=self.describe()).check(number, where)


class Steps(Str):
    """Epochs as text (``"80,120"``), each once and in increasing order: a repeated epoch would apply its factor
    twice there without a word."""

    def check(self, value, where=""):
        value = super().check(value, where)
        steps = [int(s) for s in value.split(",") if s.strip()]
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise self.fail(value, where)
        return value


def setting(default, help: str | Callable[[], str], spec: Spec, flag: bool = True):
    """A setting of type and range ``spec``; ``flag=False`` keeps it out of ``--help`` (config file or ``--set``).
    ``help`` may be a function, for text that lists what is registered."""
    return field(default=default, metadata={"help": help, "flag": flag, "spec": spec})


_f = setting
_PLAIN = {"int": Int(), "float": Float(), "str": Str(), "bool": Bool()}


def type_name(f) -> str:
    """A field's type as written (``"int"``, ``"str | None"``), whether or not its module defers annotations."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def setting_spec(f) -> Spec:
    """A field's spec: declared with :func:`setting`, else from a plain field's type (int, float, str, bool)."""
    if "spec" in f.metadata:
        return f.metadata["spec"]
    name = type_name(f).replace(" ", "")
    optional = name.endswith("|None") or name.startswith("Optional[")
    base = name.removesuffix("|None").removeprefix("Optional[").removesuffix("]") if optional else name
    if base not in _PLAIN:
        raise TypeError(f"setting {f.name} has type {type_name(f)}; declare it with hypersparse.config.setting")
    return Optional(_PLAIN[base]) if optional else _PLAIN[base]


def setting_help(f) -> str:
    text = f.metadata.get("help", "")
    return text() if callable(text) else text


def setting_flag(f) -> bool:
    return f.metadata.get("flag", True)


class MethodName(Spec):
    """A registered method's name (installed plugins are looked in when it is not one yet)."""

    @property
    def choices(self) -> tuple[str, ...]:  # for the did-you-mean hint
        return tuple(method_entries())

    def describe(self) -> str:
        return "one of " + ", ".join(method_entries())

    def check(self, value, where=""):
        if not isinstance(value, str) or len(value) > 32 or method_entry(value) is None:
            raise self.fail(value, where)
        return value


def _method_help() -> str:
    helps = [e.help for e in method_entries().values()]
    return ", ".join(helps[:-1]) + " or " + helps[-1] if len(helps) > 1 else helps[0]


def comparable() -> list[str]:
    """The methods ``--compare`` may name."""
    return [name for name, e in method_entries().items() if e.compare]


@dataclass(frozen=True)
class DataConfig:
    """What to train on."""

    dataset: str = _f("digits", "dataset name (digits needs no files), folder:<path> (class sub-folders of images) or "
                      "module.path:callable", Str(what="a dataset name"))
    data_dir: str | None = _f(None, "folder that holds the dataset's official files", Optional(Str()))
    download: bool = _f(False, "download missing files (checksums are verified); mnist, fashion-mnist, cifar10, "
                        "cifar100", Bool())


@dataclass(frozen=True)
class ModelConfig:
    """Which network."""

    model: str = _f("mlp", "model name, torchvision:<name>, timm:<name>, hf:<config.json or saved folder> or "
                    "module.path:callable (returns an nn.Module)", Str(what="a model name"))
    pretrained: str | None = _f(None, "start from this state_dict, run checkpoint or sparse export (.safetensors); "
                                "skips warm-up",
                                Optional(Str()))


@dataclass(frozen=True)
class SparsityConfig:
    """How sparse, and by which method."""

    method: str = _f("art", _method_help, MethodName())
    sparsity: float = _f(0.9, "target fraction of prunable weights that are exactly zero, in [0, 1)",
                         Float(0, 1, hi_open=True, what="in [0, 1) (the fraction of weights set to zero, e.g. 0.9)"))
    exclude: str | None = _f(None, "layers to keep dense, comma-separated globs over their dotted names "
                             "(e.g. classifier,*.downsample.*); every other Linear/Conv weight is prunable",
                             Optional(Str()))
    max_layer_sparsity: float | None = _f(None, "ceiling on any one layer's sparsity, so global pruning cannot empty "
                                          "a layer (default: 1 - (1 - sparsity) / 10, e.g. 0.999 at 0.99); 1 = none",
                                          Optional(Float(0, 1, lo_open=True)))


def _without_own_folder(settings: dict, path: Path) -> dict:
    """A run's own config.json names the folder it was written in: a run repeated from it (the README's
    ``--config runs/<run>/config.json --seed 1``) is a new run, in a new folder, unless --run-dir names one."""
    run = settings.get("run")
    folder = run.get("run_dir") if isinstance(run, dict) else None
    if not isinstance(folder, str):
        return settings
    try:
        here = path.resolve().parent
        # the file's own folder; or, as a relative run_dir resolves from where that run started, a run folder (it
        # holds metrics.jsonl, which no hand-written config's folder does) of the same name
        own = Path(folder).resolve() == here or (Path(folder).name == here.name and (here / "metrics.jsonl").exists())
    except (OSError, ValueError):
        return settings
    return {**settings, "run": {k: v for k, v in run.items() if k != "run_dir"}} if own else settings


@dataclass(frozen=True)
class ARTConfig:
    """ART: the regularizer, lambda's start and growth, and the stop rule (--method art only)."""

    reg: str = _f("hs", "regularizer: hs (HyperSparse), l1, l2", Str(16, ("hs", "l1", "l2")))
    lambda_init: float | str = _f(LAMBDA_INIT, "lambda's start: a number, or auto[:P] to set it from the weights "
                                  f"so the regularizer alone shrinks the weight at the pruning cut by P per epoch "
                                  f"(default P {DEFAULT_PUSH})", Lambda())
    eta: float = _f(1.05, "growth of lambda per regularization epoch", Float(1, 100))
    reg_epochs_target: int = _f(0, "end regularization within about this many epochs (eta rises when it would run "
                                "late; a deadline once the pruned copy has come half-way); 0 = the authors' fixed eta",
                                EPOCHS)
    criterion: str = _f("matched", "stop rule: matched (dense and pruned copy scored alike) or paper (the authors': "
                        "dense running training accuracy)", Str(16, ("paper", "matched")))
    # the buffer holds 2k+1 copies of the model: k is bounded by memory as well as by max_reg_epochs
    buffer_k: int = _f(1, "buffer of 2k+1 epochs; the middle one is kept", Int(0, 50), flag=False)
    max_reg_epochs: int = _f(300, "give up after this many regularization epochs", Int(1, 10**6), flag=False)
    pruned_eval_size: int = _f(5000, "training images (fixed by the seed) that score the pruned copy; 0 = all",
                               Int(0, 10**9), flag=False)
    reset_optimizer: bool = _f(True, "clear the optimizer's momentum when the mask is fixed, as the authors do",
                               Bool(), flag=False)


@dataclass(frozen=True)
class HyperSparseConfig:
    """Speed knobs of the HyperSparse regularizer (--reg hs only)."""

    hs_refresh_every: int = _f(32, "recompute the threshold every K steps (sooner if it drifts); 1 = exact",
                               Int(1, 10**6), flag=False)
    hs_compile: str = _f("auto", "fuse the pass with torch.compile: auto (200,000+ weights), on, off",
                         Str(16, ("auto", "on", "off")), flag=False)


@dataclass(frozen=True)
class BaselineConfig:
    """The phase between warm-up and fine-tuning, for the methods that use it (all but art)."""

    prune_epochs: int = _f(20, "epochs between warm-up and fine-tuning (gmp prunes over them), to match ART's budget",
                           EPOCHS)


@dataclass(frozen=True)
class ScheduleConfig:
    """Optimisation and the phases' lengths (the authors' defaults)."""

    warmup_epochs: int = _f(60, "dense epochs before regularization or pruning", EPOCHS)
    finetune_epochs: int = _f(160, "epochs of fine-tuning with the mask fixed", EPOCHS)
    lr: float = _f(0.1, "SGD learning rate", Float(0, lo_open=True))
    batch_size: int = _f(64, "training batch size", Int(1, 1 << 20))
    epochs_scale: float = _f(1.0, "shorten every phase by this factor (eta becomes eta**(1/F))",
                             Float(0, lo_open=True))
    lr_steps: str = _f("80,120", "fine-tuning epochs at which the learning rate is multiplied by lr_decay",
                       Steps(1024, pattern=r"\s*(\d{1,7}\s*(,\s*\d{1,7}\s*)*)?",
                             what="comma-separated epochs (integers >= 0, increasing) such as 80,120"), flag=False)
    lr_decay: float = _f(0.1, "learning-rate factor at each step", Float(0, 1, lo_open=True), flag=False)
    momentum: float = _f(0.9, "SGD momentum", Float(0, 1, hi_open=True), flag=False)
    weight_decay: float = _f(1e-4, "SGD weight decay", Float(0, 1), flag=False)
    epoch_fraction: float = _f(1.0, "each epoch visits a fresh random fraction of the training set, in (0, 1]",
                               Float(0, 1, lo_open=True), flag=False)


@dataclass(frozen=True)
class RunConfig:
    """Where the run goes and how it is recorded."""

    seed: int = _f(0, "random seed (data split, init, order, augmentation)", Int(0, 2**32 - 1, what="in [0, 2**32)"))
    run_dir: str | None = _f(None, "where logs and checkpoints go (default: runs/<time>-<dataset>-<model>-...)",
                             Optional(Str()))
    device: str = _f("auto", "cuda, mps, cpu or auto", Str(16, pattern=r"auto|cpu|mps|cuda(:\d{1,3})?",
                                                          what="auto, cpu, cuda, cuda:N or mps"), flag=False)
    stats: bool = _f(True, "log per-epoch weight statistics (stats.jsonl, for hypersparse report)", Bool(), flag=False)
    compact_finetune: bool = _f(True, "once the mask is fixed, train only the units and channels that reach the "
                                "output (exact; written back into the full model every epoch)", Bool(), flag=False)
    plugin: str | None = _f(None, "modules to import first, comma-separated (they register models, datasets, "
                            "methods and export formats)",
                            Optional(Str(1024, pattern=MODULES, what="module names, comma-separated")))
    compare: str | None = _f(None, lambda: "after the run, train these methods at its seed and epoch budget and "
                             f"compare: {', '.join(comparable())} (comma-separated)", Optional(Str(256)))
    threads: int = _f(0, "CPU threads for training; 0 = auto: 1 for a model under 100 M multiply-adds per step "
                      "(faster on a busy machine, and the same numbers on any machine), torch's default above; "
                      "OMP_NUM_THREADS or torch.set_num_threads also choose", Int(0, 4096), flag=False)
    log: str | None = _f(None, "also log every metrics row to tensorboard (pip install tensorboard), wandb or mlflow",
                         Optional(Str(16, LOGGERS)), flag=False)


#: every run's sections; the methods bring theirs (art, hs, baseline, ...) through the registry
CORE: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "sparsity": SparsityConfig,
                         "schedule": ScheduleConfig, "run": RunConfig}
_cache: dict = {}


def sections() -> dict[str, type]:
    """Every settings section by name, in ``--help``'s order: data, model, sparsity, the methods', schedule, run."""
    extra = method_sections()
    if _cache.get("key") != tuple(extra.items()):
        clash = sorted(set(extra) & set(CORE))
        if clash:  # its settings would hide behind the core section's
            raise UserError(f"a method's settings section is named {clash[0]!r}, a section every run has; "
                            "register the method (or its section) under another name")
        out = {k: CORE[k] for k in ("data", "model", "sparsity")}
        out.update(extra)
        out.update({k: CORE[k] for k in ("schedule", "run")})
        owner: dict[str, str] = {}
        for section, cls in out.items():
            for f in fields(cls):
                if f.name in owner:  # keys may be written without their section, so each name is one setting
                    raise UserError(f"setting {section}.{f.name} (a plugin's?) has the name of "
                                    f"{owner[f.name]}.{f.name}; rename it (a setting's name is unique across sections)")
                owner[f.name] = section
                setting_spec(f)
        _cache.update(key=tuple(extra.items()), sections=out, keys=owner)
    return _cache["sections"]


def keys() -> dict[str, str]:
    """Each setting's name -> its section, for keys written without one."""
    sections()
    return _cache["keys"]


def __getattr__(name: str):  # SECTIONS and KEYS, as they were before methods brought sections
    if name == "SECTIONS":
        return sections()
    if name == "KEYS":
        return keys()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _field(section: str, name: str):
    return next(f for f in fields(sections()[section]) if f.name == name)


def _spec(section: str, name: str) -> Spec:
    return setting_spec(_field(section, name))


def _from_text(spec: Spec, text: str, booleans: bool) -> Any:
    """A string as the value a file would hold for ``spec``: a number for a number (``"0.9"``, as TOML users and
    ``--set`` write it); ``true``/``false`` for a boolean only from ``--set`` text (``booleans``), so that a file's
    boolean is always a JSON boolean. The spec then checks the value as it checks a file's."""
    inner = spec.spec if isinstance(spec, Optional) else spec
    if isinstance(inner, Bool) and booleans:
        return {"true": True, "false": False}.get(text.lower(), text)
    if isinstance(inner, (Int, Float)) and len(text) <= 64:
        try:
            number = parse_json(text)
        except ValueError:
            return text  # refused by the spec, which names the setting
        return number if isinstance(number, (int, float)) and not isinstance(number, bool) else text
    return text


def _convert(section: str, name: str, value: Any, text: bool) -> Any:
    """A value from a file, a flag or (``text``) ``--set``, checked by the setting's spec, or UserError naming it."""
    spec = _spec(section, name)
    try:
        return spec.check(_from_text(spec, value, text) if isinstance(value, str) else value)
    except SchemaError as exc:
        choices = getattr(getattr(spec, "spec", spec), "choices", None)
        hint = did_you_mean(value, choices) if choices and isinstance(value, str) else ""
        raise UserError(f"{flag(f'{section}.{name}')} {exc.problem}{hint}") from None


@dataclass(frozen=True)
class TrainConfig:
    """A training run: one section per concern. Build it with :meth:`from_dict`; ``given`` lists what was set.

    The methods' sections are attributes too (``cfg.art.eta``, ``cfg.baseline.prune_epochs``): ``method_settings``
    holds those that differ from their defaults.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    method_settings: tuple = ()  # ((section, settings), ...), sorted by section
    given: frozenset = field(default=frozenset(), compare=False, repr=False)

    def __getattr__(self, name: str):
        if name.startswith("__") or name not in method_sections():
            raise AttributeError(f"{type(self).__name__!r} has no section {name!r}")
        return dict(self.method_settings).get(name) or method_sections()[name]()

    def with_sections(self, **updates) -> "TrainConfig":
        """This config with some sections replaced (``cfg.with_sections(baseline=...)``), core or a method's."""
        core = {k: v for k, v in updates.items() if k in CORE}
        own = dict(self.method_settings)
        for section, value in updates.items():
            if section not in CORE:
                own[section] = value
        kept = tuple(sorted((k, v) for k, v in own.items() if v != method_sections()[k]()))
        return replace(self, **core, method_settings=kept)

    @classmethod
    def from_dict(cls, settings: dict, base: "TrainConfig | None" = None, check: bool = True,
                  text: bool = False) -> "TrainConfig":
        """Settings (``{"art": {"eta": 1.1}}``, ``{"art.eta": 1.1}`` or ``{"eta": 1.1}``) over ``base`` or the defaults.

        Each value is checked by its setting's declared type and range (``text``: values are ``--set`` text, so
        ``"0.9"`` is a number and ``"true"`` a boolean). Raises UserError for an unknown key or a bad value, and
        (with ``check``) for a setting that does not apply or settings that contradict each other.
        """
        if not isinstance(settings, dict):
            raise UserError(f"settings must be a table of sections, not {type(settings).__name__}")
        flat: dict[str, Any] = {}
        for key, value in settings.items():
            if isinstance(value, dict):  # a section's table (no setting's value is a table)
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        cfg = base or cls()
        updates: dict[str, dict] = {}
        for key, value in flat.items():
            if not _known(str(key)):
                shown = key if len(str(key)) <= 60 else str(key)[:57] + "..."
                known = [f"{s}.{k}" for k, s in keys().items()]
                hint = did_you_mean(key, known if "." in str(key) else keys())
                listed = "see hypersparse train --help for them" if hint else f"the settings are: {', '.join(known)}"
                raise UserError(f"unknown setting {shown!r}{hint}; {listed}")
            section, _, name = str(key).rpartition(".")
            section = section or keys()[name]
            updates.setdefault(section, {})[name] = _convert(section, name, value, text)
        new = {s: replace(getattr(cfg, s), **u) for s, u in updates.items()}
        given = cfg.given | {f"{s}.{k}" for s, u in updates.items() for k in u}
        cfg = replace(cfg.with_sections(**new), given=frozenset(given))
        return cfg.validate() if check else cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Settings from a TOML or JSON file (a run's ``config.json`` is one), unchecked: flags may follow.

        The file must be a regular file of at most 64 MiB (a FIFO or a device is refused, not read)."""
        path = Path(path)
        data = read_bytes(path, "--config", MAX_JSON_BYTES)
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        try:
            if kind == "TOML":
                import tomllib

                settings = tomllib.loads(data.decode("utf-8"))
            else:
                settings = parse_json(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else first_line(exc)
            raise UserError(f"--config {path} is not valid {kind} ({why})") from None
        if not isinstance(settings, dict):
            raise UserError(f"--config {path} must hold a table of settings, not {type(settings).__name__}")
        settings = _without_own_folder(settings, path)
        try:
            return cls.from_dict(settings, check=False)
        except UserError as exc:
            raise UserError(f"--config {path}: {exc}") from None

    @property
    def identity(self) -> str:
        """The run's identity: a hash of its settings (the seed among them), where it is written aside. A checkpoint
        records it, and ``--resume`` continues a checkpoint only in the run folder whose ``config.json`` has it."""
        settings = self.to_dict()
        settings.get("run", {}).pop("run_dir", None)
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """The settings that apply to this run, by section (what ``config.json`` holds; :meth:`from_dict` reads it)."""
        out: dict[str, dict] = {}
        for section in sections():
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


def _known(key: str) -> bool:
    """Whether ``key`` names a setting; a section no method has registered yet may be an installed plugin's."""
    section, _, name = key.rpartition(".")
    for attempt in range(2):
        if (section or keys().get(name)) in sections() and \
                name in {f.name for f in fields(sections()[section or keys()[name]])}:
            return True
        if attempt == 0:
            from hypersparse.plugins import load_entry_points

            if not load_entry_points():
                return False
    return False


def canonical(key: str) -> str:
    """``section.name`` for a key written with or without its section (``eta`` -> ``art.eta``)."""
    section, _, name = key.rpartition(".")
    return f"{section or keys().get(name, '')}.{name}"


def flag(key: str) -> str:
    """How a setting is written on the command line: ``--lr`` for a flag, ``--set art.buffer_k=...`` otherwise."""
    section, _, name = key.rpartition(".")
    return "--" + name.replace("_", "-") if setting_flag(_field(section, name)) else f"--set {key}"


def not_applicable(cfg: TrainConfig, key: str) -> str | None:
    """Why setting ``key`` (``section.name``) has no effect in ``cfg``, or None if it applies."""
    section, _, name = key.rpartition(".")
    method, dataset = cfg.sparsity.method, cfg.data.dataset
    if section not in CORE:
        entry = method_entry(method)
        if entry is None or section not in entry.sections:
            owners = [e.name for e in method_entries().values() if section in e.sections]
            shown = ", ".join(owners[:-1]) + " or " + owners[-1] if len(owners) > 1 else "".join(owners)
            return f"applies to --method {shown} only (this run is --method {method})"
        if entry.rules is not None:
            return entry.rules(cfg, key)
    if key == "data.data_dir" and dataset.startswith("folder:"):
        return "is not read by a folder:<path> dataset, whose path is its name"
    if key == "data.data_dir" and dataset in NO_FILES:
        return f"is not read by dataset {dataset!r}, which needs no files"
    if key == "data.download" and dataset not in DOWNLOADS:
        return f"works for {', '.join(DOWNLOADS)} only, not dataset {dataset!r}"
    if key == "schedule.warmup_epochs" and cfg.model.pretrained:
        return "does not apply with --pretrained, which starts from a trained dense model (no warm-up)"
    return None


def _check_values(cfg: TrainConfig) -> None:
    """The checks that involve more than one setting (each setting's own range is its spec's)."""
    compared = [m.strip() for m in (cfg.run.compare or "").split(",")]
    allowed = [m for m in comparable() if m != cfg.sparsity.method]
    if cfg.run.compare is not None and (not all(compared) or not set(compared) <= set(allowed)):
        wrong = next((m for m in compared if m not in allowed), "")
        same = f" (this run is --method {wrong} already)" if wrong == cfg.sparsity.method else ""
        raise UserError(f"--compare takes {', '.join(allowed)}, comma-separated, got {cfg.run.compare!r}{same}"
                        + did_you_mean(wrong, allowed))
    twice = sorted({m for m in compared if compared.count(m) > 1})
    if cfg.run.compare is not None and twice:
        raise UserError(f"--compare names {', '.join(twice)} twice; name each method once")
    if cfg.schedule.epochs_scale < 1e-3 or math.log(cfg.art.eta) / cfg.schedule.epochs_scale > 700:
        raise UserError(f"--epochs-scale {cfg.schedule.epochs_scale:g} is too small (lambda would grow by "
                        f"{cfg.art.eta:g}**{1 / cfg.schedule.epochs_scale:g} per epoch); "
                        "use a factor of at least 0.001; the docs' short runs use 0.05 or 0.1 (near 0.001 lambda "
                        "grows so fast that training diverges)")
    longest = max(cfg.schedule.warmup_epochs, cfg.schedule.finetune_epochs, cfg.baseline.prune_epochs,
                  cfg.art.max_reg_epochs, 1)
    if cfg.schedule.epochs_scale * longest > 1e7:
        raise UserError(f"--epochs-scale {cfg.schedule.epochs_scale:g} makes a phase longer than 10 million epochs; "
                        "use a factor such as 0.1")
    size = 2 * cfg.art.buffer_k + 1
    if 0 < cfg.art.reg_epochs_target < size:
        raise UserError(f"--reg-epochs-target must be 0 (off) or at least the ART buffer's {size} "
                        f"epochs (2 x buffer_k + 1), got {cfg.art.reg_epochs_target!r}")
    if cfg.sparsity.method == "art" and cfg.art.max_reg_epochs < size:
        raise UserError(f"--set art.buffer_k={cfg.art.buffer_k} needs a buffer of {size} regularization epochs, more "
                        f"than art.max_reg_epochs={cfg.art.max_reg_epochs}; lower buffer_k or raise max_reg_epochs")
