"""Which parameters are prunable, and validation of a target sparsity.

Every other module (regularizers, masks, schedule, export) sees a model through
:func:`prunable_parameters`, so "the global weight vector w" means the same
thing everywhere.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Iterable, Union

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
    if isinstance(model_or_params, nn.Module):
        accept = filter or is_prunable_module
        for mname, module in model_or_params.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and accept(mname, module):
                pairs.append((f"{mname}.weight" if mname else "weight", weight))
    else:
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
    for name, p in pairs:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append((name, p))
    if not unique:
        raise NoPrunableParametersError(
            "the model has no prunable parameter (no Linear or Conv1d/2d/3d weight found); "
            "pass the tensors to prune explicitly, or a filter that selects some modules"
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
