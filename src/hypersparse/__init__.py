"""hypersparse: HyperSparse regularization and ART for extremely sparse PyTorch networks.

The names below load on first use, so ``import hypersparse`` (and the command line's start) stays fast.
"""
from __future__ import annotations

import importlib
import typing

__version__ = "0.1.0"

_HOME = {
    "hypersparse.masks": ["SparsityReport", "magnitude_masks", "masks_from_zeros", "sparsity_report"],
    "hypersparse.keep_pruned": ["MaskHandle", "apply_masks_"],
    "hypersparse.params": ["Exclude", "NoPrunableParametersError", "prunable_parameters"],
    "hypersparse.regularizers": ["L1", "L2", "HyperSparse", "Regularizer"],
    "hypersparse.schedule": ["ART", "ARTDidNotConverge"],
    "hypersparse.driver": ["ARTDriver", "Driver"],
    "hypersparse.method": ["EpochResult", "Method", "Setup", "register_method"],
    "hypersparse.export": ["load_sparse", "register_export", "save_sparse"],
    "hypersparse.inference": ["CompactMLP", "sparse_inference"],
}
_WHERE = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_WHERE)

if typing.TYPE_CHECKING:
    from hypersparse.driver import ARTDriver, Driver
    from hypersparse.export import load_sparse, register_export, save_sparse
    from hypersparse.inference import CompactMLP, sparse_inference
    from hypersparse.keep_pruned import MaskHandle, apply_masks_
    from hypersparse.masks import SparsityReport, magnitude_masks, masks_from_zeros, sparsity_report
    from hypersparse.method import EpochResult, Method, Setup, register_method
    from hypersparse.params import Exclude, NoPrunableParametersError, prunable_parameters
    from hypersparse.regularizers import L1, L2, HyperSparse, Regularizer
    from hypersparse.schedule import ART, ARTDidNotConverge


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'hypersparse' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
