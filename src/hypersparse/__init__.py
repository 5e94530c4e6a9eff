"""hypersparse: HyperSparse regularization and ART for extremely sparse PyTorch networks."""
from hypersparse.masks import MaskHandle, SparsityReport, apply_masks_, magnitude_masks, sparsity_report
from hypersparse.params import NoPrunableParametersError, prunable_parameters
from hypersparse.regularizers import L1, L2, HyperSparse, Regularizer
from hypersparse.schedule import ART, ARTDidNotConverge

__version__ = "0.1.0"

__all__ = [
    "ART",
    "ARTDidNotConverge",
    "HyperSparse",
    "L1",
    "L2",
    "MaskHandle",
    "NoPrunableParametersError",
    "Regularizer",
    "SparsityReport",
    "apply_masks_",
    "magnitude_masks",
    "prunable_parameters",
    "sparsity_report",
]
