"""Sparse models that are really smaller: compressed files and ONNX.

* :func:`save_sparse` / :func:`load_sparse`: a safetensors file in which each
  tensor is stored in whichever is smallest of dense, CSR (narrowest index
  types that fit) or bitmask + values. Values keep their exact bytes, so the
  rebuilt model's outputs are bit-identical.
* fast CPU inference lives in :mod:`hypersparse.inference`.
* :func:`export_onnx`: ONNX export (needs the ``[onnx]`` extra).
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from hypersparse.checkpoint import atomic_write, file_path, temporary, temporary_name
from hypersparse.errors import UserError, first_line, refuse_builtin_override
from hypersparse.keep_pruned import has_masks, strip_masks_
from hypersparse.params import refuse_meta
from hypersparse.plugins import note_registrar
from hypersparse.schema import INPUT, SPARSE_META, SchemaError, parse_json, regular_file

FORMAT = "hypersparse-sparse/1"
_INDEX_TYPES = [(np.uint8, 2**8), (np.uint16, 2**16), (np.uint32, 2**32), (np.uint64, 2**64)]


def _narrowest(limit: int):
    """The smallest unsigned type that holds values up to ``limit``."""
    return next(t for t, cap in _INDEX_TYPES if limit < cap)


def _bytes(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).reshape(-1).copy())


def _storage_dtype(name: str) -> np.dtype:
    """The numpy type that holds a stored dtype's bits: bfloat16, which numpy lacks, is kept as its 16-bit pattern."""
    return np.dtype(np.int16) if name == "bfloat16" else np.dtype(name)


def _encode(name: str, t: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict]:
    """The smallest encoding of one tensor: {key: uint8 buffer}, and how to decode it."""
    t = t.detach().cpu().contiguous()
    bf16 = t.dtype == torch.bfloat16
    arr = t.view(torch.int16).numpy() if bf16 else t.numpy()
    dense = ({f"{name}::dense": _bytes(arr)}, {"enc": "dense"})
    if arr.ndim == 0 or arr.size == 0 or not (bf16 or np.issubdtype(arr.dtype, np.floating)):
        return _finish(dense, arr, bf16)
    flat = arr.reshape(-1)
    # -0.0 (a negative weight times a zero mask) is stored as +0.0: equal values, so outputs compare equal
    nonzero = (t.reshape(-1) != 0).numpy() if bf16 else flat != 0
    values = flat[nonzero]
    mat = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(1, -1)
    rows, cols = mat.shape
    mat_nonzero = nonzero.reshape(rows, cols)
    col_idx = np.nonzero(mat_nonzero)[1].astype(_narrowest(cols))
    row_ptr = np.concatenate([[0], np.cumsum(mat_nonzero.sum(axis=1))]).astype(_narrowest(values.size + 1))
    csr = (
        {f"{name}::values": _bytes(values), f"{name}::col": _bytes(col_idx), f"{name}::rowptr": _bytes(row_ptr)},
        {"enc": "csr", "col": np.dtype(col_idx.dtype).name, "rowptr": np.dtype(row_ptr.dtype).name, "rows": rows,
         "cols": cols},
    )
    bitmask = ({f"{name}::values": _bytes(values), f"{name}::mask": _bytes(np.packbits(nonzero))}, {"enc": "bitmask"})
    best = min((dense, csr, bitmask), key=lambda e: sum(v.numel() for v in e[0].values()))
    return _finish(best, arr, bf16)


def _finish(encoded, arr, bf16: bool = False):
    tensors, meta = encoded
    meta.update(dtype="bfloat16" if bf16 else arr.dtype.name, shape=list(arr.shape))
    return tensors, meta


def _decode(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> torch.Tensor:
    dtype, shape = _storage_dtype(meta["dtype"]), tuple(meta["shape"])
    size = int(np.prod(shape)) if shape else 1

    def arr(key, dt):
        return tensors[f"{name}::{key}"].numpy().view(dt)

    if meta["enc"] == "dense":
        out = arr("dense", dtype).reshape(shape)
    elif meta["enc"] == "bitmask":
        mask = np.unpackbits(tensors[f"{name}::mask"].numpy())[:size].astype(bool)
        out = np.zeros(size, dtype)
        out[mask] = arr("values", dtype)
        out = out.reshape(shape)
    else:
        rows, cols = meta["rows"], meta["cols"]
        rowptr = arr("rowptr", np.dtype(meta["rowptr"])).astype(np.int64)
        col = arr("col", np.dtype(meta["col"])).astype(np.int64)
        out = np.zeros((rows, cols), dtype)
        row_of = np.repeat(np.arange(rows), np.diff(rowptr))
        out[row_of, col] = arr("values", dtype)
        out = out.reshape(shape)
    out = torch.from_numpy(out.copy())
    return out.view(torch.bfloat16) if meta["dtype"] == "bfloat16" else out


def save_sparse(model: nn.Module, path: str | Path, arch: dict | None = None, inputs: dict | None = None) -> dict:
    """Write ``model``'s state_dict compressed to ``path`` (safetensors); returns size figures.

    ``arch`` (model name, classes, input shape) is stored so that
    :func:`load_sparse` can rebuild a registered model without code;
    ``inputs`` (the run's normalisation and class names, see
    :func:`~hypersparse.evaluate.input_record`) so that it can be fed raw pixels.
    """
    _require_module(model, "save_sparse")
    model = _unwrapped(model)
    try:
        from safetensors.torch import save
    except ImportError as exc:
        raise UserError("sparse export needs safetensors: pip install 'hypersparse[cli]'") from exc
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    dense_bytes = 0
    for name, t in model.state_dict().items():
        enc, meta = _encode(name, t)
        tensors.update(enc)
        layout[name] = meta
        dense_bytes += t.numel() * t.element_size()
    try:
        metadata = {"format": FORMAT, "layout": json.dumps(layout), "arch": json.dumps(arch or {}),
                    "input": json.dumps(inputs or {})}
    except (TypeError, ValueError) as exc:  # a tensor, a set, NaN... in arch or inputs
        raise TypeError(f"save_sparse: arch and inputs must hold JSON values (str, numbers, lists, dicts): "
                        f"{first_line(exc)}") from None
    try:  # read back as load_sparse reads it: a file written here must load
        check_meta(metadata)
    except SchemaError as exc:
        raise ValueError(f"save_sparse: {exc}; a file with it would not load, so none was written") from None
    path = file_path(path)
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(data))
    size = path.stat().st_size
    return {"path": str(path), "bytes": size, "dense_fp32_bytes": dense_bytes, "ratio": dense_bytes / size,
            "encodings": {n: m["enc"] for n, m in layout.items()}}


def load_sparse_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The exact state_dict and the stored architecture of a sparse file (``arch["input"]``: its input record).

    The metadata is checked against its schema (:data:`hypersparse.schema.SPARSE_META`), and each tensor's
    buffers against the sizes it declares, before anything is allocated."""
    try:
        from safetensors import SafetensorError, safe_open
    except ImportError as exc:
        raise UserError("reading sparse files needs safetensors: pip install 'hypersparse[cli]'") from exc
    regular_file(path, "sparse file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({first_line(exc)})") from None
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path} was not written by hypersparse export --format sparse")
    fix = "export the run again"
    try:
        meta = check_meta(metadata)
    except SchemaError as exc:
        raise UserError(f"sparse file {path}: metadata: {exc}; {fix}") from None
    except ValueError as exc:
        raise UserError(f"{path} has damaged metadata ({exc}); {fix}") from None
    layout, arch, inputs = meta["layout"], meta["arch"], meta["input"]
    try:
        for name, entry in layout.items():
            _check_entry(name, entry, tensors)
    except ValueError as exc:
        raise UserError(f"{path} has damaged metadata ({exc}); {fix}") from None
    state = {name: _decode(name, tensors, entry) for name, entry in layout.items()}
    return state, dict(arch, input=inputs) if inputs else arch


def check_meta(metadata: dict[str, str]) -> dict:
    """A sparse file's metadata (strings, JSON in some) parsed and checked against :data:`SPARSE_META`, for the
    reader and the writer alike; SchemaError naming the field, or ValueError for text that is not JSON."""
    meta = {k: parse_json(v) if k in ("layout", "arch", "input") else v for k, v in metadata.items()}
    meta.setdefault("arch", {})
    meta.setdefault("input", {})
    return SPARSE_META.check(meta)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The model inside a ``torch.compile`` wrapper, whose state_dict names it all ``_orig_mod.*``: the file holds
    the model's own names, so that it loads into the model compiled or not."""
    inner = getattr(model, "_orig_mod", None)
    return inner if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module) else model


def _require_module(model: object, caller: str, what: str = "model") -> None:
    """TypeError unless ``model`` is an nn.Module: anything else fails deep inside with an AttributeError; ValueError
    if it is on the meta device (nothing to write, and a load into it would keep nothing)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller} expects {what} to be a torch.nn.Module, got {type(model).__name__}")
    refuse_meta(model.state_dict().items(), caller)


_ENCODINGS = {"dense": ("dense",), "bitmask": ("values", "mask"), "csr": ("values", "col", "rowptr")}


def _check_entry(name: str, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """ValueError unless ``meta`` (schema-checked) describes buffers that exist and the sizes they hold."""
    dtype = _storage_dtype(meta["dtype"])
    shape = meta["shape"]
    size = int(np.prod(shape, dtype=object)) if shape else 1
    buffers = {key: tensors.get(f"{name}::{key}") for key in _ENCODINGS[meta["enc"]]}
    missing = [k for k, v in buffers.items() if v is None or v.dtype != torch.uint8 or v.dim() != 1]
    if missing:
        raise ValueError(f"{name}: buffer {missing[0]} is missing")
    n = {k: v.numel() for k, v in buffers.items()}
    if meta["enc"] == "dense":
        ok = n["dense"] == size * dtype.itemsize
    elif meta["enc"] == "bitmask":
        ok = n["mask"] == (size + 7) // 8 and n["values"] % dtype.itemsize == 0 and \
            n["values"] // dtype.itemsize == int(np.unpackbits(buffers["mask"].numpy())[:size].sum())
    else:
        ok = all(k in meta for k in ("rows", "cols", "col", "rowptr"))
        if ok:
            rows, cols = meta["rows"], meta["cols"]
            index = {k: np.dtype(meta[k]) for k in ("col", "rowptr")}
            ok = rows * cols == size and n["rowptr"] == (rows + 1) * index["rowptr"].itemsize
        if ok:
            rowptr = buffers["rowptr"].numpy().view(index["rowptr"]).astype(np.int64)
            nnz = n["values"] // dtype.itemsize
            col = buffers["col"].numpy().view(index["col"]) if n["col"] % index["col"].itemsize == 0 else None
            ok = (n["values"] % dtype.itemsize == 0 and rowptr[0] == 0 and rowptr[-1] == nnz
                  and bool(np.all(np.diff(rowptr) >= 0)) and col is not None and col.size == nnz
                  and (nnz == 0 or (int(col.max()) < cols and int(col.min()) >= 0)))
        if ok and nnz > 1:  # each row's columns strictly ascending: a repeated column would drop a weight unseen
            step = np.diff(col.astype(np.int64))
            within = np.ones(nnz - 1, dtype=bool)
            starts = rowptr[1:-1]
            within[starts[(starts > 0) & (starts < nnz)] - 1] = False
            ok = bool(np.all(step[within] > 0))
    if not ok:
        raise ValueError(f"{name}: its buffers do not hold the {meta['enc']} tensor of shape {shape} it declares")


def model_for(arch: dict, path: str | Path, trust_code: bool = False) -> nn.Module:
    """The model a sparse file's ``arch`` names, built without its weights. A name that is code
    (``module.path:callable``) is imported only with ``trust_code=True``: a file does not decide what code runs."""
    from hypersparse.models import create_model
    from hypersparse.plugins import names_code, trust_line

    if not arch.get("model"):
        raise UserError(f"{path} does not name its model; pass model= to load_sparse")
    if names_code("model.model", arch["model"]) and not trust_code:
        raise UserError(trust_line({"model.model": arch["model"]}, f"sparse file {path}", api=True))
    missing = [k for k in ("num_classes", "in_channels", "image_size") if k not in arch]
    if missing:
        raise UserError(f"{path} does not record its model's {missing[0]}; pass model= to load_sparse")
    try:
        return create_model(arch["model"], arch["num_classes"], arch["in_channels"], arch["image_size"])
    except UserError as exc:
        raise UserError(f"{path} names a model this hypersparse cannot build ({exc}); pass model= to load it") \
            from None


def fill(model: nn.Module, state: dict[str, torch.Tensor], arch: dict, path: str | Path) -> nn.Module:
    """``model`` with a sparse file's ``state`` loaded and its input record attached, in eval mode."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = first_line(exc, 200, last=True)
        raise UserError(f"{path} does not fit the model ({first}); pass the model it was exported from") from None
    model.hypersparse_input = arch.get("input", {})
    return model.eval()


def load_sparse(path: str | Path, model: nn.Module | None = None, trust_code: bool = False) -> nn.Module:
    """Rebuild the model of a sparse file (or load it into ``model``), weights bit-identical.

    The file names its architecture; a registered model is built from it, one given by import path only with
    ``trust_code=True`` (else pass ``model``). ``model.hypersparse_input`` holds what it expects:
    ``(pixel - mean) / std`` per channel on NCHW images with pixels in 0..255, and its class names (``{}`` for files
    written before runs recorded it).
    """
    if not isinstance(trust_code, bool):  # a security switch: "no" or "false" must not read as true
        raise TypeError(f"load_sparse: trust_code must be True or False, got {trust_code!r}")
    if model is not None:
        _require_module(model, "load_sparse")
        if has_masks(model):  # its keepers would zero the file's weights wherever the model's own mask prunes
            raise ValueError("load_sparse: the model carries masks (apply_masks_), which would zero the file's weights "
                             "where they prune; pass a model without them (a fresh one, or after handle.remove())")
    state, arch = load_sparse_state(path)
    if model is None:
        return fill(model_for(arch, path, trust_code), state, arch, path)
    fill(_unwrapped(model), state, arch, path)
    return model.eval()


class Normalize(nn.Module):
    """Raw pixels (0..255, NCHW) to what the model was trained on: ``(x - mean) / std`` per channel."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def save_dense(model: nn.Module, path: str | Path, arch: dict, inputs: dict | None = None) -> dict:
    """A plain state_dict (``torch.load`` + ``load_state_dict``, no hypersparse needed) and, beside it, a JSON file
    with the architecture and the input record."""
    from hypersparse.checkpoint import save_checkpoint, write_json

    _require_module(model, "save_dense")
    path = file_path(path)
    if path.suffix == ".json":  # the JSON beside it would take its name and replace the weights just written
        raise ValueError(f"{path} ends in .json, the name of the JSON file written beside the state_dict; name the "
                         "state_dict .pt")
    if not _dense_sidecar(path.with_suffix(".json")):
        raise ValueError(f"{path.with_suffix('.json')} exists and is not the JSON an earlier dense export wrote "
                         "beside its state_dict, which this one would replace; move it or name the state_dict "
                         "otherwise")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_checkpoint(state, path)
    write_json(path.with_suffix(".json"), {"arch": arch, "input": inputs or {}})
    return {"path": str(path), "bytes": path.stat().st_size}


def _dense_sidecar(path: Path) -> bool:
    """Whether ``path`` may be written as a dense export's JSON: absent, or a JSON object of that JSON's two keys
    (``arch`` and ``input``), as an earlier export wrote it. A file of the user's by that name is not replaced."""
    if not os.path.lexists(path):
        return True
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode) or os.path.getsize(path) > 1 << 20:
            return False
        held = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(held, dict) and set(held) == {"arch", "input"}


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, inputs: dict | None = None) -> dict:
    """Export to ONNX; pruned initializers are stored sparsely (COO) where ONNX allows. Needs ``[onnx]``.

    With ``inputs`` (a run's input record) the graph starts with the normalisation, so it takes raw pixels
    (float, 0..255, NCHW), and the record is in the model's metadata (``hypersparse.input``).
    """
    try:
        import onnx
        from onnx import helper
    except ImportError as exc:
        raise UserError("ONNX export needs the onnx extra: pip install 'hypersparse[onnx]'") from exc
    _require_module(model, "export_onnx")
    if inputs:  # checked as eval checks the record it reads back
        try:
            INPUT.check(parse_json(json.dumps(inputs)), "inputs")
        except ValueError as exc:
            raise ValueError(f"export_onnx: {exc}; eval would refuse the file, so none was written") from None
    path = file_path(path)
    model = strip_masks_(copy.deepcopy(model)).eval().cpu()  # the graph holds the zeros, not the mask's hooks
    if inputs and inputs.get("mean"):
        model = nn.Sequential(Normalize(inputs["mean"], inputs["std"]), model)
    classes = (inputs or {}).get("classes")
    if classes is not None:
        with torch.no_grad():
            scores = model(example)
        if scores.shape[-1] != len(classes):
            raise ValueError(f"export_onnx: inputs names {len(classes)} classes but the model scores "
                             f"{scores.shape[-1]}: give one name per output (nothing was written)")
    proto = _onnx_graph(onnx, model, example, path)
    sparse = _sparse_initializers(proto.graph)
    if inputs:
        helper.set_model_props(proto, {"hypersparse.input": json.dumps(inputs)})
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return {"path": str(path), "bytes": path.stat().st_size, "sparse_initializers": sparse}


def _onnx_graph(onnx, model: nn.Module, example: torch.Tensor, path: Path):
    """torch's ONNX export of ``model``, read back as a proto (through a temporary folder beside ``path``: torch
    writes a large model as several files)."""
    tmp_dir = temporary_name(path)
    with temporary(tmp_dir):
        try:
            tmp_dir.mkdir()
            tmp = tmp_dir / "model.onnx"
            with warnings.catch_warnings():  # torch's notes on its own exporter (its deprecation), not on the
                warnings.simplefilter("ignore")  # model: under -W error they would end the export in a traceback
                torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
            return onnx.load(str(tmp))
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _sparse_initializers(graph) -> int:
    """Move the graph's mostly-zero initializers to sparse (COO) ones; returns how many moved."""
    from onnx import helper, numpy_helper

    keep, sparse = [], []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        nnz = int(np.count_nonzero(arr))
        # COO costs (value + int64 index) per nonzero: worth it below ~1/3 density
        if arr.ndim >= 1 and arr.size > 64 and nnz * 12 < arr.size * arr.itemsize:
            idx = np.flatnonzero(arr).astype(np.int64)
            values = numpy_helper.from_array(arr.reshape(-1)[idx], init.name)
            indices = numpy_helper.from_array(idx, init.name + "_indices")
            sparse.append(helper.make_sparse_tensor(values, indices, list(arr.shape)))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph.sparse_initializer.extend(sparse)
    return len(sparse)


# -- the formats of ``hypersparse export --format`` ------------------------------------------------------------------
@dataclass(frozen=True)
class ExportFormat:
    """One ``--format``: ``writer(model, out, arch, inputs, **options) -> str`` writes ``out`` and returns the line
    to print; ``extension`` names the default file (``model<extension>`` in the run folder); ``options``: the
    ``export`` flags it takes (``compact``); ``also_writes(out)``: the other files the writer makes beside ``out``."""

    name: str
    writer: Callable[..., str]
    extension: str
    help: str
    options: tuple[str, ...]
    also_writes: Callable[[Path], tuple[Path, ...]] = lambda out: ()


#: what this registry holds, in messages and in the error boundary's record of who registered what
KIND = "export format"
EXPORTS: dict[str, ExportFormat] = {}


def register_export(name: str, writer: Callable[..., str], extension: str, help: str = "",
                    options: tuple[str, ...] = (),
                    also_writes: Callable[[Path], tuple[Path, ...]] | None = None) -> None:
    """Make ``hypersparse export --format name`` write with ``writer(model, out, arch, inputs, **options)``.

    ``model`` is the run's trained model (pruned weights are zeros), ``out`` the output path, ``arch`` the run's
    architecture (``model``, ``num_classes``, ``in_channels``, ``image_size``) and ``inputs`` its input record
    (normalisation, class names) or None. It returns the line the command prints. A writer that makes other files
    beside ``out`` names them with ``also_writes(out)``, so that the command checks them as it checks ``out``.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):  # typed as --format NAME
        raise ValueError(f"an export format's name is lower-case letters, digits, - and _ (at most 32), got {name!r}")
    if not callable(writer) or not isinstance(extension, str) or \
            not re.fullmatch(r"\.[A-Za-z0-9_.-]{1,32}", extension):
        raise ValueError(f"register_export({name!r}) needs a callable writer and an extension such as '.onnx'")
    old = EXPORTS.get(name)
    refuse_builtin_override(KIND, name, old.writer if old is not None else None, writer)
    note_registrar(KIND, name)
    EXPORTS[name] = ExportFormat(name, writer, extension, help or name, tuple(options),
                                 also_writes or ExportFormat.also_writes)


def _write_sparse(model: nn.Module, out: Path, arch: dict, inputs: dict | None) -> str:
    info = save_sparse(model, out, arch, inputs)
    return f"wrote {info['path']}: {info['bytes']:,} bytes, {info['ratio']:.1f}x smaller than dense fp32"


def _write_dense(model: nn.Module, out: Path, arch: dict, inputs: dict | None) -> str:
    from hypersparse.checkpoint import output_file

    if out.suffix == ".json":
        raise UserError(f"--out {out}: the dense format writes a state_dict and, beside it, a JSON file of the same "
                        "name ending in .json; name the state_dict .pt")
    output_file(out.with_suffix(".json"), "--out")  # the JSON beside it is an output too
    if not _dense_sidecar(out.with_suffix(".json")):
        raise UserError(f"--out {out}: the dense format also writes {out.with_suffix('.json')}, which exists and was "
                        "not written by a dense export; move it or choose another --out")
    info = save_dense(model, out, arch, inputs)
    return f"wrote {info['path']} ({info['bytes']:,} bytes) and {out.with_suffix('.json')}"


def _write_onnx(model: nn.Module, out: Path, arch: dict, inputs: dict | None, compact: bool = False) -> str:
    example = torch.zeros(1, arch["in_channels"], arch["image_size"], arch["image_size"])
    removed = 0
    if compact:
        from hypersparse.compaction import compact_channels

        model, removed = compact_channels(model.eval())
    info = export_onnx(model, example, out, inputs)
    return (f"wrote {info['path']}: {info['bytes']:,} bytes, {info['sparse_initializers']} sparse initializers"
            + (f", {removed} channels removed by compaction" if compact else ""))


register_export("sparse", _write_sparse, ".sparse.safetensors", "sparse: safetensors with CSR or bitmask tensors")
register_export("onnx", _write_onnx, ".onnx", "onnx: takes raw pixels (needs the [onnx] extra)", options=("compact",))
register_export("dense", _write_dense, ".dense.pt", "dense: a plain state_dict that load_state_dict accepts without "
                "hypersparse, and a JSON of its architecture and input normalisation",
                also_writes=lambda out: (out.with_suffix(".json"),))
