"""hypersparse: HyperSparse regularization and ART for extremely sparse PyTorch networks.

The names below load on first use, so ``import hypersparse`` (and the command line's start) stays fast.
"""
import os as _os
import sys as _sys

# `python -m hypersparse` imports this package with the current folder first on sys.path (sys.argv[0] is "-m" while
# Python looks for the module). Drop it before importing anything, so that no module planted in a run folder (a
# __future__.py, say) is found; __main__ would drop it only after this file's imports.
if _sys.argv[:1] == ["-m"] and _sys.path:
    try:
        if _sys.path[0] in ("", _os.getcwd()):
            del _sys.path[0]
    except OSError:  # the current folder was removed: nothing can be found in it
        pass

import importlib  # noqa: E402
import typing  # noqa: E402

__version__ = "0.1.0"

_HOME = {
    "hypersparse.masks": ["SparsityReport", "magnitude_masks", "masks_from_zeros", "sparsity_report"],
    "hypersparse.keep_pruned": ["MaskHandle", "apply_masks_"],
    "hypersparse.params": ["Exclude", "NoPrunableParametersError", "prunable_parameters"],
    "hypersparse.regularizers": ["L1", "L2", "HyperSparse", "Regularizer"],
    "hypersparse.schedule": ["ART", "ARTDidNotConverge", "ARTSchedule"],
    "hypersparse.driver": ["ARTDriver", "Driver"],
    "hypersparse.method": ["EpochResult", "Method", "Setup", "register_method"],
    "hypersparse.export": ["load_sparse", "register_export", "save_sparse"],
    "hypersparse.inference": ["CompactMLP", "sparse_inference"],
}
_WHERE = {name: module for module, names in _HOME.items() for name in names}
__all__ = sorted(_WHERE)

# For type checkers and editors only (__all__ is built from _HOME, which pyflakes cannot read): at run time
# __getattr__ imports each name on first use.
if typing.TYPE_CHECKING:
    from hypersparse.driver import ARTDriver, Driver  # noqa: F401
    from hypersparse.export import load_sparse, register_export, save_sparse  # noqa: F401
    from hypersparse.inference import CompactMLP, sparse_inference  # noqa: F401
    from hypersparse.keep_pruned import MaskHandle, apply_masks_  # noqa: F401
    from hypersparse.masks import SparsityReport, magnitude_masks, masks_from_zeros, sparsity_report  # noqa: F401
    from hypersparse.method import EpochResult, Method, Setup, register_method  # noqa: F401
    from hypersparse.params import Exclude, NoPrunableParametersError, prunable_parameters  # noqa: F401
    from hypersparse.regularizers import L1, L2, HyperSparse, Regularizer  # noqa: F401
    from hypersparse.schedule import ART, ARTDidNotConverge, ARTSchedule  # noqa: F401


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'hypersparse' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
