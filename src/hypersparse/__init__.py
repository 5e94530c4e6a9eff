"""hypersparse: HyperSparse regularization and ART for extremely sparse PyTorch networks."""
from hypersparse.masks import MaskHandle, SparsityReport, apply_masks_, magnitude_masks, sparsity_report
from hypersparse.params import NoPrunableParametersError, prunable_parameters
from hypersparse.regularizers import L1, L2, HyperSparse, Regularizer
from hypersparse.schedule import ART, ARTDidNotConverge
from hypersparse.driver import ARTDriver, Driver
from hypersparse.method import EpochResult, Method
from hypersparse.export import load_sparse, save_sparse
from hypersparse.inference import CompactMLP, sparse_inference

__version__ = "0.1.0"

__all__ = [
    "ART",
    "ARTDidNotConverge",
    "ARTDriver",
    "Driver",
    "EpochResult",
    "Method",
    "CompactMLP",
    "HyperSparse",
    "L1",
    "L2",
    "MaskHandle",
    "NoPrunableParametersError",
    "Regularizer",
    "SparsityReport",
    "apply_masks_",
    "load_sparse",
    "magnitude_masks",
    "prunable_parameters",
    "save_sparse",
    "sparsity_report",
    "sparse_inference",
]
