"""Magnitude masks: which weights to zero, and counting zeros (keeping them zero: :mod:`hypersparse.keep_pruned`)."""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch

from hypersparse.keep_pruned import MaskHandle, Masks, apply_masks_, strip_masks_, zero_pruned_  # noqa: F401
from hypersparse.params import (
    ModelOrParams,
    ModuleFilter,
    check_sparsity,
    default_ceiling,
    num_pruned,
    prunable_parameters,
    refuse_meta,
)


def _prune_lowest(magnitudes: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask over a flat tensor that drops exactly the k smallest entries.

    Ties at the threshold are broken by position (lower flat index is pruned
    first), so the result is deterministic and the count is exact.
    """
    n = magnitudes.numel()
    keep = torch.ones(n, dtype=torch.bool, device=magnitudes.device)
    if k <= 0:
        return keep
    if k >= n:
        return ~keep
    if torch.isnan(magnitudes).any():
        raise ValueError("weights contain NaN; the run has diverged, masks cannot be computed")
    # kthvalue is a selection (O(n)), not a sort; MPS lacks it, so select on the CPU there.
    source = magnitudes if magnitudes.device.type in ("cpu", "cuda") else magnitudes.cpu()
    threshold = torch.kthvalue(source, k).values.to(magnitudes.device)
    below = magnitudes < threshold
    tied = torch.nonzero(magnitudes == threshold).flatten()
    n_tied_pruned = k - int(below.sum())
    keep &= ~below
    keep[tied[:n_tied_pruned]] = False
    return keep


def check_ceiling(max_layer_sparsity: object, sparsity: float) -> float:
    """``max_layer_sparsity`` as a float in (sparsity, 1], or ValueError naming the value (1 = no ceiling)."""
    if isinstance(max_layer_sparsity, bool) or not isinstance(max_layer_sparsity, numbers.Real) \
            or not sparsity < float(max_layer_sparsity) <= 1.0:
        raise ValueError(f"max_layer_sparsity must be above the sparsity {sparsity} and at most 1 (1 = no ceiling), "
                         f"got {max_layer_sparsity!r}")
    return float(max_layer_sparsity)


def global_keep(scores: list[torch.Tensor], sparsity: float,
                max_layer_sparsity: float | None = None) -> list[torch.Tensor]:
    """Keep-masks that drop exactly floor(sparsity * N) of the lowest ``scores`` across all tensors.

    Each tensor first reserves its ``numel - floor(max_layer_sparsity * numel)`` highest scores, so global ranking
    cannot empty a layer (an MLP's output layer, Q and K of a small transformer). ``max_layer_sparsity`` 1 reserves
    nothing. None (the default) is :func:`~hypersparse.params.default_ceiling`'s ``1 - (1 - sparsity) / 10``; where
    the weights kept are too few for every tensor's share (a tiny model at extreme sparsity), one weight per tensor,
    and none if even that is too many: the count stays exact.
    """
    sparsity = check_sparsity(sparsity)
    device = scores[0].device
    flat = [s.detach().flatten().to(device) for s in scores]
    sizes = [f.numel() for f in flat]
    k = num_pruned(sparsity, sum(sizes))
    if max_layer_sparsity is None:
        reserve = [n - num_pruned(default_ceiling(sparsity), n) for n in sizes]
        room = sum(sizes) - k  # the weights kept
        if sum(reserve) > room:
            reserve = [min(n, 1) for n in sizes] if sum(min(n, 1) for n in sizes) <= room else [0] * len(sizes)
    else:
        ceiling = check_ceiling(max_layer_sparsity, sparsity)
        reserve = [n - num_pruned(ceiling, n) for n in sizes]
        allowed = sum(sizes) - sum(reserve)
        if k > allowed:
            raise ValueError(f"sparsity {sparsity} needs {k} zeros, but max_layer_sparsity {ceiling} allows {allowed}; "
                             "raise max_layer_sparsity")
    reserved = []
    for f, top in zip(flat, reserve):
        if top:
            r = torch.zeros_like(f, dtype=torch.bool)
            r[torch.topk(f, top).indices] = True  # topk is exact; the reserved count must be, too
            f = f.masked_fill(r, float("inf"))
        reserved.append(f)
    keep = _prune_lowest(torch.cat(reserved), k)
    out, offset = [], 0
    for s in scores:
        out.append(keep[offset : offset + s.numel()].view_as(s).to(s.device))
        offset += s.numel()
    return out


def magnitude_masks(
    model_or_params: ModelOrParams,
    sparsity: float,
    scope: str = "global",
    filter: ModuleFilter | None = None,
    max_layer_sparsity: float | None = None,
) -> Masks:
    """Keep-masks (bool, True = kept) that zero the smallest-magnitude weights.

    ``scope="global"`` ranks all prunable weights together and zeroes exactly
    ``floor(sparsity * N)`` of them, at most ``max_layer_sparsity`` of any one
    tensor (default: ``1 - (1 - sparsity) / 10``, so no layer is emptied; 1: no
    ceiling; see :func:`global_keep`); ``scope="layer"`` zeroes
    ``floor(sparsity * n_l)`` in each layer.
    Returns ``{name: mask}`` with the names of
    :func:`~hypersparse.params.prunable_parameters`.

    >>> masks = magnitude_masks(model, 0.9)
    >>> apply_masks_(model, masks)
    """
    sparsity = check_sparsity(sparsity)
    named = prunable_parameters(model_or_params, filter)
    refuse_meta(named, "magnitude_masks")
    if scope == "layer":
        if max_layer_sparsity is not None:  # a flag that does not apply is an error, not ignored
            raise ValueError("max_layer_sparsity applies to scope='global' only (scope='layer' prunes each layer at "
                             "the sparsity itself); leave it out")
        return {
            name: _prune_lowest(_magnitude(p).flatten(), num_pruned(sparsity, p.numel())).view_as(p)
            for name, p in named
        }
    if scope != "global":
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    keep = global_keep([_magnitude(p) for _, p in named], sparsity, max_layer_sparsity)
    return {name: k for (name, _), k in zip(named, keep)}


def _magnitude(p: torch.Tensor) -> torch.Tensor:
    """|p| as a floating-point tensor: an integer weight (quantised by hand) ranked by its value; taken in double
    first, since an int8 -128 has no int8 magnitude and int64 values are not exact in float32."""
    return p.detach().abs() if p.is_floating_point() else p.detach().double().abs()


def _masked_tensors(
    model_or_params: ModelOrParams, masks: Masks, filter: ModuleFilter | None
) -> dict[str, torch.Tensor]:
    """The prunable tensors by name, after checking that every mask names one of them."""
    named = dict(prunable_parameters(model_or_params, filter))
    unknown = sorted(set(masks) - set(named))
    if unknown:
        raise ValueError(f"masks name tensors the model does not have as prunable: {unknown[:5]}")
    return named


def pruned_mass(model_or_params: ModelOrParams, masks: Masks, filter: ModuleFilter | None = None) -> float:
    """Share of the prunable weights' L1 norm that ``masks`` would remove (0 when the norm is 0).

    A diagnostic for ART: near 0 the pruned copy is almost the dense model, so
    its accuracy is about to catch up; HyperSparse drives this toward 0.
    """
    named = _masked_tensors(model_or_params, masks, filter)
    total = removed = 0.0
    for name, keep in masks.items():
        # float64 sums: a million small magnitudes in float32 lose the digits this ratio lives in
        w = named[name].detach().abs().to(torch.float64)
        total += float(w.sum())
        removed += float(w[~keep.to(device=w.device, dtype=torch.bool)].sum())
    return removed / total if total > 0 else 0.0


def masks_from_zeros(model_or_params: ModelOrParams, filter: ModuleFilter | None = None) -> Masks:
    """The masks a saved sparse model declares: every prunable weight that is exactly zero is pruned.

    Files (``model.pt``, the sparse export) store no separate mask; this reads it back, e.g.
    ``apply_masks_(model, masks_from_zeros(model))`` after loading, before training further.
    """
    named = prunable_parameters(model_or_params, filter)
    refuse_meta(named, "masks_from_zeros")
    return {name: p.detach() != 0 for name, p in named}


@dataclass
class LayerCount:
    name: str
    shape: tuple[int, ...]
    numel: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class SparsityReport:
    """Per-layer and total counts of exactly-zero prunable weights."""

    layers: list[LayerCount] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def kept(self) -> int:
        return self.numel - self.zeros

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0

    @property
    def dead_layers(self) -> list[str]:
        """Layers whose every weight is zero: they pass nothing on (global pruning can empty a whole tensor)."""
        return [layer.name for layer in self.layers if layer.numel and layer.zeros == layer.numel]

    def to_dict(self) -> dict:
        return {
            "numel": self.numel,
            "zeros": self.zeros,
            "sparsity": self.sparsity,
            "dead_layers": self.dead_layers,
            "layers": [
                {"name": layer.name, "shape": list(layer.shape), "numel": layer.numel, "zeros": layer.zeros}
                for layer in self.layers
            ],
        }

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer':<{width}}  {'weights':>10}  {'zeros':>10}  {'sparsity':>8}"]
        for layer in self.layers:
            dead = "  <- every weight zero: this layer passes nothing on" if layer.name in self.dead_layers else ""
            lines.append(f"{layer.name:<{width}}  {layer.numel:>10}  {layer.zeros:>10}  {layer.sparsity:>8.2%}{dead}")
        lines.append(f"{'total':<{width}}  {self.numel:>10}  {self.zeros:>10}  {self.sparsity:>8.2%}")
        return "\n".join(lines)


def sparsity_report(model_or_params: ModelOrParams, filter: ModuleFilter | None = None) -> SparsityReport:
    """Count exactly-zero weights per prunable layer and in total."""
    named = prunable_parameters(model_or_params, filter)
    refuse_meta(named, "sparsity_report")
    return SparsityReport([LayerCount(name, tuple(p.shape), p.numel(), int((p.detach() == 0).sum()))
                           for name, p in named])
