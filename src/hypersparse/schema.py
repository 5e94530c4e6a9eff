"""One declared schema for every file hypersparse reads, checked before anything in it is used.

A schema is built from a few specs (:class:`Int`, :class:`Float`, :class:`Str`, :class:`Bool`, :class:`List`,
:class:`Dict`, :class:`Map`, :class:`Optional`, :class:`JSON`). Each bounds what it accepts: numbers by range,
strings and lists by length, anything free-form by depth and size. :func:`check` raises :class:`SchemaError`
naming the field (``arch.num_classes``, ``layout['0.weight'].shape``); the readers turn it into one line that
names the file too. :func:`read_json` and :func:`read_jsonl` read only regular files of bounded size (never a FIFO
or a device, which would hang or never end), decode strict UTF-8 and bound integer literals and nesting.

The schemas of ``metrics.jsonl``, ``stats.jsonl``, the parts of ``checkpoint.pt`` and the sparse file's metadata
live here. The files that hold a run's settings (``config.json``, ``summary.json``, ``checkpoint.pt``) are checked
against the settings dataclasses themselves, one layer up (:mod:`hypersparse.run_read`).
"""
from __future__ import annotations

import json
import math
import os
import re
import reprlib
import stat
from pathlib import Path
from typing import Any, Callable

from hypersparse.errors import UserError, first_line

MAX_JSON_BYTES = 64 << 20  # config.json, summary.json: a few kB; sparse metadata grows with the layers
MAX_JSONL_BYTES = 1 << 30  # metrics.jsonl and stats.jsonl: ~30 kB per epoch of statistics
MAX_INT_DIGITS = 20  # every integer a run records fits in 64 bits
MAX_DEPTH = 32  # our files nest 4 deep
MAX_STR = 4096
MAX_LIST = 1 << 20
#: the rows a run's per-epoch lists may hold (a checkpoint's metrics, ART's history): far beyond any budget, and
#: small enough that a file claiming more is refused at once, not checked row by row for minutes
MAX_RUN_EPOCHS = 1_000_000
MAX_IMAGE_SIZE, MAX_CHANNELS, MAX_CLASSES = 4096, 64, 1_000_000


class SchemaError(ValueError):
    """A value does not match its declared schema; ``where`` names the field."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where} {problem}" if where else problem)
        self.where, self.problem = where, problem


def _at(where: str, key: Any) -> str:
    """The path of a field inside ``where``; a key of a file's own making is shortened (one line, not 100 kB)."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    if isinstance(key, str) and len(key) <= 64 and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{where}.{key}" if where else key
    return f"{where}[{_shown(key)}]"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 64


def _shown(value: Any) -> str:
    text = _REPR.repr(value)  # a few items of a huge list, not the whole list written out to be cut to 60
    return text if len(text) <= 60 else text[:57] + "..."


class Spec:
    """What one value may be; :meth:`check` returns it (converted where a spec says so) or raises SchemaError."""

    def check(self, value: Any, where: str = "") -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self, value: Any, where: str) -> SchemaError:
        return SchemaError(where, f"must be {self.describe()}, got {_shown(value)}")


class Int(Spec):
    """An integer (never a bool) in ``[lo, hi]``."""

    def __init__(self, lo: int | None = None, hi: int | None = None, what: str | None = None):
        self.lo, self.hi, self.what = lo, hi, what

    def describe(self) -> str:
        if self.what:
            return self.what
        if self.lo is not None and self.hi is not None:
            return f"an integer in {self.lo}..{self.hi}"
        return f"an integer >= {self.lo}" if self.lo is not None else "an integer"

    def check(self, value, where=""):
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            value = int(value)  # 3.0 from a file that writes every number as a float
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(value, where)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise self.fail(value, where)
        return value


class Float(Spec):
    """A finite number (never a bool) in the interval given; ``lo_open``/``hi_open`` exclude the ends."""

    def __init__(self, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False, finite: bool = True, what: str | None = None):
        self.lo, self.hi, self.lo_open, self.hi_open, self.finite, self.what = lo, hi, lo_open, hi_open, finite, what

    def describe(self) -> str:
        if self.what:
            return self.what
        if self.lo is None and self.hi is None:
            return "a finite number" if self.finite else "a number"
        if self.hi is None:
            return f"a number {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.lo is None:
            return f"a number {'<' if self.hi_open else '<='} {self.hi:g}"
        return f"a number in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"

    def check(self, value, where=""):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(value, where)
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            raise self.fail(value, where) from None
        if self.finite and not math.isfinite(number):
            raise self.fail(value, where)
        if self.lo is not None and (number < self.lo or (self.lo_open and number == self.lo)):
            raise self.fail(value, where)
        if self.hi is not None and (number > self.hi or (self.hi_open and number == self.hi)):
            raise self.fail(value, where)
        return number


class Bool(Spec):
    """``true`` or ``false``: only a boolean, never a number or a string."""

    def describe(self) -> str:
        return "true or false"

    def check(self, value, where=""):
        if not isinstance(value, bool):
            raise self.fail(value, where)
        return value


class Str(Spec):
    """A string of at most ``max_len`` characters, one of ``choices`` or matching ``pattern`` where given."""

    def __init__(self, max_len: int = MAX_STR, choices: tuple[str, ...] | None = None, pattern: str | None = None,
                 what: str | None = None):
        self.max_len, self.choices, self.pattern, self.what = max_len, choices, pattern, what

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return self.what or f"a string of at most {self.max_len} characters"

    def check(self, value, where=""):
        if not isinstance(value, str) or len(value) > self.max_len:
            raise self.fail(value, where)
        if "\x00" in value:  # no name, path or setting holds a NUL (the OS refuses it in a path)
            raise SchemaError(where, f"must not contain a NUL character, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise self.fail(value, where)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise self.fail(value, where)
        return value


class Optional(Spec):
    """``null`` or ``spec``."""

    def __init__(self, spec: Spec):
        self.spec = spec

    def describe(self) -> str:
        return f"{self.spec.describe()} or null"

    def check(self, value, where=""):
        return None if value is None else self.spec.check(value, where)


class OneOf(Spec):
    """The first of ``specs`` that accepts the value."""

    def __init__(self, *specs: Spec):
        self.specs = specs

    def describe(self) -> str:
        return " or ".join(s.describe() for s in self.specs)

    def check(self, value, where=""):
        for spec in self.specs:
            try:
                return spec.check(value, where)
            except SchemaError:
                continue
        raise self.fail(value, where)


class List(Spec):
    """A list of ``item`` values, ``min_len`` to ``max_len`` long."""

    def __init__(self, item: Spec, max_len: int = MAX_LIST, min_len: int = 0):
        self.item, self.max_len, self.min_len = item, max_len, min_len

    def describe(self) -> str:
        return f"a list of {self.min_len}..{self.max_len} items, each {self.item.describe()}"

    def check(self, value, where=""):
        if not isinstance(value, list):
            raise self.fail(value, where)
        if not self.min_len <= len(value) <= self.max_len:  # before any item is looked at
            raise SchemaError(where, f"must be a list of {self.min_len}..{self.max_len} items, got {len(value)}")
        return [self.item.check(v, _at(where, i)) for i, v in enumerate(value)]


class Dict(Spec):
    """An object with the declared ``fields``: ``required`` ones must be there; others are refused unless
    ``extra`` (a spec for the values of any other key) is given."""

    def __init__(self, fields: dict[str, Spec], required: tuple[str, ...] | str = (), extra: Spec | None = None,
                 then: Callable[[dict, str], None] | None = None):
        self.fields = fields
        self.required = tuple(fields) if required == "all" else tuple(required)
        self.extra = extra
        self.then = then  # a check across fields, once each field has passed its own

    def describe(self) -> str:
        return "an object" + (f" with {', '.join(self.required)}" if self.required else "")

    def check(self, value, where=""):
        if not isinstance(value, dict):
            raise self.fail(value, where)
        missing = [k for k in self.required if k not in value]
        if missing:
            raise SchemaError(_at(where, missing[0]), "is missing")
        out = {}
        for key, v in value.items():
            if not isinstance(key, str):
                raise SchemaError(where, f"has a key that is not a string: {_shown(key)}")
            spec = self.fields.get(key, self.extra)
            if spec is None:
                raise SchemaError(_at(where, key), "is not a known field")
            out[key] = spec.check(v, _at(where, key))
        if self.then is not None:
            self.then(out, where)
        return out


class Map(Spec):
    """An object of up to ``max_len`` keys (each ``key``) to values of ``value``."""

    def __init__(self, value: Spec, key: Spec = Str(), max_len: int = 100_000):
        self.value, self.key, self.max_len = value, key, max_len

    def describe(self) -> str:
        return f"an object of at most {self.max_len} keys"

    def check(self, value, where=""):
        if not isinstance(value, dict):
            raise self.fail(value, where)
        if len(value) > self.max_len:
            raise SchemaError(where, f"must be {self.describe()}, got {len(value)}")
        for key in value:
            self.key.check(key, f"{where} key" if where else "key")
        return {k: self.value.check(v, _at(where, k)) for k, v in value.items()}


class JSON(Spec):
    """Any JSON value, at most ``depth`` deep, strings and lists bounded, numbers finite (unless ``finite=False``)."""

    def __init__(self, depth: int = 4, finite: bool = True):
        self.depth, self.finite = depth, finite

    def describe(self) -> str:
        return f"a JSON value at most {self.depth} deep"

    def check(self, value, where=""):
        self._walk(value, where, self.depth)
        return value

    def _walk(self, value, where, depth):
        if value is None or isinstance(value, (bool, int)):
            return
        if isinstance(value, float):
            if self.finite and not math.isfinite(value):
                raise SchemaError(where, f"must be a finite number, got {value!r}")
            return
        if isinstance(value, str):
            if len(value) > MAX_STR:
                raise SchemaError(where, f"is a string of {len(value)} characters (at most {MAX_STR})")
            return
        if depth <= 0 or not isinstance(value, (list, dict)):
            raise self.fail(value, where)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        if len(value) > MAX_LIST:
            raise SchemaError(where, f"holds {len(value)} items (at most {MAX_LIST})")
        for key, v in items:
            self._walk(v, _at(where, key), depth - 1)


class Custom(Spec):
    """A check written as a function ``fn(value, where) -> value`` (raising SchemaError)."""

    def __init__(self, fn: Callable[[Any, str], Any], description: str):
        self.fn, self.description = fn, description

    def describe(self) -> str:
        return self.description

    def check(self, value, where=""):
        return self.fn(value, where)


def check(value: Any, spec: Spec, what: str, fix: str) -> Any:
    """``value`` checked against ``spec``; UserError ``"<what>: <field> <problem>; <fix>"`` if it does not match."""
    try:
        return spec.check(value)
    except SchemaError as exc:
        raise UserError(f"{what}: {exc}; {fix}") from None


# -- reading ------------------------------------------------------------------------------------------------------
def regular_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a regular file (a link to one counts), else UserError: a FIFO, a device or a folder
    would hang the read, never end, or is not a file at all."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UserError(f"cannot read {what} {path} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, a FIFO or a socket)"
        raise UserError(f"{what} {path} is {kind}; give a regular file")
    return path


def read_bytes(path: str | Path, what: str, limit: int) -> bytes:
    """The bytes of regular file ``path``, at most ``limit`` of them (else UserError)."""
    path = regular_file(path, what)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UserError(f"cannot read {what} {path} ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise UserError(f"{what} {path} is larger than {limit >> 20} MiB; it is not a file hypersparse wrote")
    return data


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are unique: with a key twice, json.loads would keep the last one silently."""
    out = dict(pairs)
    if len(out) < len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {twice!r} appears twice; keep one")
    return out


def parse_json(text: str | bytes, allow_nan: bool = False) -> Any:
    """JSON with bounded integers and nesting; ValueError (with the reason) otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, parse_int=_bounded_int, object_pairs_hook=_unique_keys,
                          **({} if allow_nan else {"parse_constant": _no_constant}))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def read_json(path: str | Path, spec: Spec, what: str, fix: str, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file read and checked against ``spec``; one UserError line naming the file and field otherwise."""
    data = read_bytes(path, what, limit)
    try:
        value = parse_json(data, allow_nan=True)
    except ValueError as exc:
        raise UserError(f"{what} {path} is not valid JSON ({first_line(exc)}); {fix}") from None
    return check(value, spec, f"{what} {path}", fix)


def read_jsonl(path: str | Path, spec: Spec, what: str, fix: str, limit: int = MAX_JSONL_BYTES) -> list:
    """The rows of a JSON-lines file, each checked against ``spec``; a last line cut short by a crash is dropped."""
    data = read_bytes(path, what, limit)
    lines = data.split(b"\n")
    if len(lines) > MAX_RUN_EPOCHS + 1:  # one row per epoch: refused at once, not checked row by row for minutes
        raise UserError(f"{what} {path} holds {len(lines) - 1} lines, more than the {MAX_RUN_EPOCHS} epochs a run may "
                        f"have; {fix}")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = parse_json(line, allow_nan=True)
        except ValueError as exc:
            if i == len(lines) - 1:  # no newline after it: a write cut short, the rows before it are complete
                break
            raise UserError(f"{what} {path} line {i + 1} is not valid JSON ({first_line(exc, 120)}); "
                            f"{fix}") from None
        rows.append(check(row, spec, f"{what} {path} line {i + 1}", fix))
    return rows


# -- the run folder's files ---------------------------------------------------------------------------------------
UNIT = Float(0, 1)  # accuracies, sparsities, shares
COUNT = Int(0, 2**62)
EPOCH = Int(0, 10**8)
NAME = Str(256)
ARCH = Dict({"model": Str(1024, pattern=r"[^\x00-\x1f]+", what="a model name"),
             "num_classes": Int(1, MAX_CLASSES), "in_channels": Int(1, MAX_CHANNELS),
             "image_size": Int(1, MAX_IMAGE_SIZE)})
INPUT = Dict({"layout": Str(16, choices=("NCHW",)), "pixel_range": List(Float(), 2, 2),
              "mean": List(Float(), MAX_CHANNELS, 1), "std": List(Float(0, lo_open=True), MAX_CHANNELS, 1),
              "classes": Optional(List(Str(1024), MAX_CLASSES))})
def counts_fit(record: dict, where: str = "", numel: int | None = None) -> None:
    """SchemaError unless a record's ``kept`` weights are at most the model's ``numel`` (its own, or ``numel``) and its
    ``sparsity`` is ``1 - kept / numel``: the summary's table prints them as they are."""
    numel = record.get("numel", numel)
    kept, sparsity = record.get("kept"), record.get("sparsity")
    if numel is None or kept is None:
        return
    if kept > numel:
        raise SchemaError(_at(where, "kept"), f"is {kept}, more than the model's {numel} prunable weights")
    if sparsity is not None and numel and abs(1 - kept / numel - sparsity) > 1e-6:
        raise SchemaError(_at(where, "sparsity"), f"is {sparsity}, but {kept} of {numel} weights kept is "
                                                  f"{1 - kept / numel}")


SCORES = Dict({"epoch": Optional(EPOCH), "val_acc": UNIT, "test_acc": UNIT, "sparsity": UNIT, "kept": COUNT,
               "numel": COUNT, "run_dir": Str(1024)}, required=("val_acc", "test_acc"), then=counts_fit)
#: the dense baseline a run records: the model before pruning (a --pretrained one may already be sparse)
DENSE = Dict({"epoch": EPOCH, "val_acc": UNIT, "test_acc": UNIT, "sparsity": UNIT, "kept": COUNT},
             required=("epoch", "val_acc", "test_acc"))
METRICS_ROW = Dict({
    "epoch": EPOCH, "phase": NAME, "event": NAME, "lr": Float(0), "loss": Float(0), "train_acc": UNIT,
    "val_acc": UNIT, "sparsity": UNIT, "seconds": Float(0), "train_seconds": Float(0), "measure_seconds": Float(0),
    "stats_seconds": Float(0), "lambda": Float(0), "pruned_acc": Optional(UNIT), "dense_acc": Optional(UNIT),
    "pruned_mass": Optional(UNIT),
    "val_acc_after_stop": UNIT, "chosen_epoch": Optional(EPOCH),
}, required=("epoch", "phase", "event", "train_acc", "val_acc", "sparsity"), extra=JSON(3, finite=False))
FLOATS = List(Float(finite=False), 1 << 16)
STATS_ROW = Dict({
    "epoch": EPOCH, "phase": NAME, "event": NAME, "kept": COUNT, "entered": COUNT, "left": COUNT,
    "threshold": Float(0, finite=False), "s": Optional(Float(0, finite=False)), "sorted_magnitudes": FLOATS,
    "sorted_gradient": FLOATS,
    "hist_log10": List(COUNT, 65, 65), "exact_zeros": COUNT, "layer_sparsity_at_kappa": Map(UNIT, Str(1024)),
    "layer_zeros": Map(UNIT, Str(1024)), "pruned_per_class": List(UNIT, MAX_CLASSES),
}, required=("epoch", "phase", "kept", "threshold", "sorted_magnitudes", "hist_log10", "exact_zeros",
             "layer_zeros"), extra=JSON(3, finite=False), then=lambda row, where: _magnitudes_sorted(row, where))


def _magnitudes_sorted(row: dict, where: str) -> None:
    """A stats row's magnitudes as the run writes them: none below zero, in increasing order."""
    values = row["sorted_magnitudes"]
    if any(v < 0 for v in values) or any(b < a for a, b in zip(values, values[1:])):
        raise SchemaError(_at(where, "sorted_magnitudes"), "must be magnitudes (>= 0) in increasing order")


def _tensor_map(value, where, bool_only: bool = False):
    import torch

    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              and (not bool_only or v.dtype == torch.bool) for k, v in value.items()):
        raise SchemaError(where, "must map names to bool tensors (masks)" if bool_only else
                          "must map names to tensors (a state_dict)")
    for k, v in value.items():
        _tensor(v, f"{where}.{k}" if where else k, optional=False)
    return value


def _tensor(value, where, optional: bool = True):
    import torch

    if not (isinstance(value, torch.Tensor) or (optional and value is None)):
        raise SchemaError(where, f"must be a tensor, got {type(value).__name__}")
    problem = tensor_problem(value) if value is not None else None
    if problem:
        raise SchemaError(where, problem)
    return value


def tensor_problem(value) -> str | None:
    """Why a tensor read from a file is not one a model's state holds (a sparse or nested layout, which the library's
    readers and torch's load_state_dict do not take; the meta device, which holds no values), or None."""
    import torch

    if value.is_nested:
        return "is a nested tensor, where a model holds dense (strided) tensors"
    if value.layout != torch.strided:
        return f"is a {str(value.layout).removeprefix('torch.')} tensor, where a model holds dense (strided) tensors"
    if value.device.type == "meta":
        return "is on the meta device (it holds no values)"
    return None


def _optimizer_state(value, where):
    import torch

    if not isinstance(value, dict) or not all(
            isinstance(k, int) and isinstance(v, dict) and all(isinstance(t, (torch.Tensor, int, float)) for t in
                                                              v.values()) for k, v in value.items()):
        raise SchemaError(where, "must map parameter indices to their tensors (momentum buffers)")
    return value


STATE = Custom(_tensor_map, "a state_dict")
MASKS = Custom(lambda v, w: _tensor_map(v, w, bool_only=True), "masks")
TENSOR = Custom(_tensor, "a tensor or null")
OPTIMIZER = Dict({  # torch.optim.SGD's state_dict; torch itself checks that the groups fit the model
    "state": Custom(_optimizer_state, "parameter states"),
    "param_groups": List(Dict({"params": List(Int(0), 100_000), "lr": Float(0), "momentum": Float(0, 1),
                               "dampening": Float(0, 1), "weight_decay": Float(0), "nesterov": Bool(),
                               "maximize": Bool(), "foreach": Optional(Bool()), "differentiable": Bool(),
                               "fused": Optional(Bool())}, required=("params",), extra=JSON(2)), 1000, 1),
}, required="all")
BEST = Dict({"epoch": EPOCH, "val_acc": UNIT, "state": STATE}, required="all")
STATS_STATE = Dict({"prev_keep": TENSOR, "budget": Float(), "cost": Float(0)}, required="all")
_BASELINE = {"epoch": EPOCH, "finetune_done": EPOCH, "phase": NAME, "masks": Optional(MASKS),
             "chosen_epoch": Optional(EPOCH), "step": Int(0, 2**62)}
#: what hypersparse.method.Method keeps of every method; "step" is absent from older oneshot and snip checkpoints
METHOD_BASE = Dict(_BASELINE, required=tuple(k for k in _BASELINE if k != "step"), extra=JSON(3, finite=False))
#: the state each method's state_dict() writes, by --method (a method reads back only what it wrote)
METHOD_STATE = {
    "art": Dict({
        "epoch": EPOCH, "reg_epochs": EPOCH, "finetune_done": EPOCH,
        "phase": Str(16, ("warmup", "regularize", "finetune")),
        "history": List(JSON(3, finite=False), MAX_RUN_EPOCHS),
        "masks": Optional(MASKS), "chosen_epoch": Optional(EPOCH), "lambda_0": Optional(Float(0, lo_open=True)),
        "eta_now": Float(1), "growth": Float(0, lo_open=True, finite=False), "stop_reason": Optional(NAME),
        "buffer": List(Dict({"epoch": EPOCH, "pruned_acc": UNIT, "state": STATE, "masks": MASKS},
                            required="all"), 101),
        "regularizer": Dict({"t": TENSOR, "s": TENSOR, "coef": TENSOR, "since": Int(0), "refreshes": Int(0),
                             "rank": TENSOR}),
    }, required="all"),
    "oneshot": Dict(_BASELINE, required=METHOD_BASE.required),
    "snip": Dict(_BASELINE, required=METHOD_BASE.required),
    "gmp": Dict(_BASELINE, required="all"),
}
# the sparse file's metadata (JSON strings in the safetensors header)
LAYOUT_ENTRY = Dict({
    "enc": Str(16, choices=("dense", "bitmask", "csr")),
    "dtype": Str(16, pattern=r"(float|int|uint)(8|16|32|64)|bool|bfloat16",
                 what="a numeric dtype name such as float32"),
    "shape": List(Int(0, 2**40), 8), "rows": Int(0, 2**40), "cols": Int(0, 2**40),
    "col": Str(16, choices=("uint8", "uint16", "uint32", "uint64")),
    "rowptr": Str(16, choices=("uint8", "uint16", "uint32", "uint64")),
}, required=("enc", "dtype", "shape"))
LAYOUT = Map(LAYOUT_ENTRY, Str(1024), 100_000)
def classes_fit(record: dict, where: str = "") -> None:
    """SchemaError unless a record's ``input.classes`` names as many classes as ``arch.num_classes`` says the model
    scores: with fewer names, a prediction would be labelled by the wrong name or by none."""
    classes = (record.get("input") or {}).get("classes")
    count = (record.get("arch") or {}).get("num_classes")
    if classes is not None and count is not None and len(classes) != count:
        raise SchemaError(_at(_at(where, "input"), "classes"),
                          f"names {len(classes)} classes, but arch.num_classes (the model's outputs) is {count}")


SPARSE_ARCH = Dict(ARCH.fields)
SPARSE_META = Dict({"format": Str(64), "layout": LAYOUT, "arch": SPARSE_ARCH, "input": Dict(INPUT.fields)},
                   required=("format", "layout"), then=classes_fit)
