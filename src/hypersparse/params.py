"""Which parameters are prunable, and validation of a target sparsity.

Every other module (regularizers, masks, schedule, export) sees a model through
:func:`prunable_parameters`, so "the global weight vector w" means the same
thing everywhere.
"""
from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Iterable
from typing import Callable, Sequence, Union

import torch
from torch import nn

#: Module types whose ``weight`` is prunable by default.
PRUNABLE_MODULES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

ModuleFilter = Callable[[str, nn.Module], bool]
ModelOrParams = Union[nn.Module, Iterable[torch.Tensor], Iterable[tuple[str, torch.Tensor]]]


class NoPrunableParametersError(ValueError):
    """The model (or parameter list) holds no prunable weight."""


def is_prunable_module(name: str, module: nn.Module) -> bool:
    """Default filter: the weight of every Linear and Conv1d/2d/3d layer."""
    return isinstance(module, PRUNABLE_MODULES)


def _matches(name: str, pattern: str) -> bool:
    """``pattern`` (a shell glob) matches one or more consecutive parts of the dotted ``name``."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:j]), pattern)
               for i in range(len(parts)) for j in range(i + 1, len(parts) + 1))


class Exclude:
    """A filter: the default prunable layers except those a pattern names.

    A pattern is a shell glob over one or more consecutive parts of a layer's
    dotted name: ``classifier`` names ``classifier`` and ``bert.classifier``,
    ``layer.0.*`` every layer under ``layer.0``, ``*.query`` every query
    projection. Pass it as ``filter=`` wherever one is taken.
    """

    def __init__(self, patterns: Sequence[str]):
        if isinstance(patterns, str):
            patterns = [patterns]
        self.patterns = tuple(str(p).strip() for p in patterns)
        bad = [p for p in self.patterns if not p]
        if bad:
            raise ValueError("an exclude pattern is empty; give layer names or globs such as classifier or *.query")

    def __call__(self, name: str, module: nn.Module) -> bool:
        return is_prunable_module(name, module) and not any(_matches(name, p) for p in self.patterns)

    def __repr__(self) -> str:
        return f"Exclude({list(self.patterns)!r})"

    def check(self, model: nn.Module) -> None:
        """Raise ValueError when a pattern names no prunable layer of ``model`` (a likely typo)."""
        names = [n for n, m in model.named_modules() if is_prunable_module(n, m)]
        unmatched = [p for p in self.patterns if not any(_matches(n, p) for n in names)]
        if unmatched:
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise ValueError(f"exclude pattern {unmatched[0]!r} names no prunable layer of the model; "
                             f"its prunable layers are: {shown}")


#: Names of the task heads transformers models put on top of their body.
HEAD_NAMES = ("classifier", "score", "qa_outputs", "lm_head")


def head_layers(model: nn.Module) -> list[str]:
    """The dotted names of a transformers model's output layers: its output embeddings and its task head.

    The head maps to the labels or the vocabulary: few weights, each one decisive, and the output embeddings are
    often tied to the input embeddings. These stay dense by default in the Hugging Face callback.
    """
    out = getattr(model, "get_output_embeddings", lambda: None)()
    names = []
    for name, module in model.named_modules():
        if (module is out and out is not None) or name.rsplit(".", 1)[-1] in HEAD_NAMES:
            if any(is_prunable_module(n, m) for n, m in module.named_modules()):
                names.append(name)
    return names


def default_ceiling(sparsity: float) -> float:
    """The default per-layer ceiling: each layer keeps at least a tenth of the average share kept,
    ``1 - (1 - sparsity) / 10`` (0.99 at sparsity 0.9, 0.999 at 0.99), so global pruning cannot empty a layer."""
    return 1.0 - (1.0 - check_sparsity(sparsity)) / 10.0


transformer_ceiling = default_ceiling  # the name the Hugging Face defaults used first


def exclude_filter(text: str | None) -> Exclude | None:
    """The filter for a comma-separated pattern list as ``--exclude`` takes it (None when there is none)."""
    patterns = [p for p in (text or "").split(",") if p.strip()]
    return Exclude(patterns) if patterns else None


def check_leaves(named: list[tuple[str, torch.Tensor]] | dict[str, torch.Tensor]) -> None:
    """ValueError if a tensor to keep at zero or regularize is computed from others rather than a parameter: a
    parametrization (weight_norm, spectral_norm) or ``torch.nn.utils.prune`` recompute ``weight`` at every forward,
    so a mask or a gradient put on it would not last."""
    for name, t in (named.items() if isinstance(named, dict) else named):
        if not t.is_leaf:
            raise ValueError(f"{name} is computed from other tensors (a parametrization such as weight_norm, or "
                             "torch.nn.utils.prune), not a parameter hypersparse can keep at zero; remove the "
                             "parametrization first (torch.nn.utils.parametrize.remove_parametrizations, "
                             "torch.nn.utils.prune.remove), or leave the layer out with filter=hs.Exclude([...])")


def refuse_scripted(model: object) -> None:
    """A TorchScript module hides its layers' types (every submodule is a RecursiveScriptModule), so nothing in it
    looks prunable and no hook of ours would run in its compiled forward."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("a scripted model (torch.jit.script or trace) cannot be pruned or masked; prune the eager "
                        "model, then script it")


def prunable_parameters(
    model_or_params: ModelOrParams, filter: ModuleFilter | None = None
) -> list[tuple[str, torch.Tensor]]:
    """Return the prunable tensors as ``(name, tensor)`` pairs, in a fixed order.

    ``model_or_params`` is an ``nn.Module`` (its Linear/Conv weights are taken,
    or those of the modules ``filter(name, module)`` accepts), a list of tensors
    (named ``"0"``, ``"1"``, ...), or ``(name, tensor)`` pairs such as
    ``model.named_parameters()``. Tied weights appear once.
    """
    pairs: list[tuple[str, torch.Tensor]] = []
    refuse_scripted(model_or_params)
    if isinstance(model_or_params, nn.Module):
        if isinstance(filter, Exclude):
            filter.check(model_or_params)  # a pattern naming no layer is a typo that would keep nothing dense
        accept = filter or is_prunable_module
        for mname, module in model_or_params.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and accept(mname, module):
                pairs.append((f"{mname}.weight" if mname else "weight", weight))
    else:
        if isinstance(model_or_params, (torch.Tensor, str, bytes, dict)) or not isinstance(model_or_params, Iterable):
            # each would be iterated into something else (a tensor's rows, a string's letters, a dict's keys)
            raise TypeError("expected a model (an nn.Module) or a list of tensors or (name, tensor) pairs, got "
                            f"{type(model_or_params).__name__}" + (" (wrap one tensor in a list: [t])" if isinstance(
                                model_or_params, torch.Tensor) else ""))
        if filter is not None:
            raise ValueError("filter applies to an nn.Module; with a parameter list, pass only the tensors to prune")
        for i, item in enumerate(model_or_params):
            if isinstance(item, torch.Tensor):
                pairs.append((str(i), item))
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor):
                pairs.append((str(item[0]), item[1]))
            else:
                raise TypeError(f"expected tensors or (name, tensor) pairs, got {type(item).__name__}")
    seen: set[int] = set()
    unique = []
    names: dict[str, torch.Tensor] = {}
    for name, p in pairs:
        if isinstance(p, nn.parameter.UninitializedParameter):  # a lazy module before its first forward
            raise ValueError(f"{name} is not initialised yet (a Lazy module); run one forward pass to give it its "
                             "shape first")
        if names.setdefault(name, p) is not p:  # masks and reports are keyed by name: one would hide the other
            raise ValueError(f"two different tensors are named {name!r}; give each tensor its own name")
        if id(p) not in seen:
            seen.add(id(p))
            unique.append((name, p))
    if not unique:
        raise NoPrunableParametersError(
            "the model has no prunable parameter (no Linear or Conv1d/2d/3d weight found); "
            "pass the tensors to prune explicitly, or a filter that selects some modules"
        )
    if not any(p.numel() for _, p in unique):  # nn.Linear(0, 4): nothing to rank, nothing to prune
        raise NoPrunableParametersError(
            f"the prunable weights ({', '.join(n for n, _ in unique[:3])}{', ...' if len(unique) > 3 else ''}) hold no "
            "entries at all (a layer of width 0?); give the model layers with weights"
        )
    return unique


def check_sparsity(sparsity: object, name: str = "sparsity") -> float:
    """Return ``sparsity`` as a float in [0, 1), or raise ValueError naming the value."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1), got {sparsity!r}")
    value = float(sparsity)
    if math.isnan(value) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must be in [0, 1) (the fraction of weights set to zero, e.g. 0.9), got {sparsity!r}"
        )
    return value


def num_pruned(sparsity: float, numel: int) -> int:
    """The number of weights a sparsity zeroes: floor(sparsity * numel), robust to float error."""
    # 0.98 * 100 is 97.99999999999999 in binary floating point; round first, then floor.
    return int(math.floor(round(sparsity * numel, 6)))


def refuse_meta(named: Iterable[tuple[str, torch.Tensor]], what: str) -> None:
    """ValueError naming the first tensor on the meta device: it has a shape but no values to count or compute with."""
    for name, t in named:
        if isinstance(t, torch.Tensor) and t.device.type == "meta":
            raise ValueError(f"{what}: {name} is on the meta device, which holds no values; materialise the model "
                             "first (model.to_empty(device=...), then load its weights)")
