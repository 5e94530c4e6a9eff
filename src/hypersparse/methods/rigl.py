"""RigL (Evci et al., "Rigging the Lottery", ICML 2020), written only through the public registry as a plugin would be.

Between warm-up and fine-tuning the network trains sparse: each layer keeps its share of the weights (ERK or
uniform), and every ``update_every`` steps each layer drops the ``f_t`` fraction of its kept weights that are smallest
in magnitude and grows as many where the dense gradient is largest; a grown weight starts at zero. ``f_t`` decays
from ``drop_fraction`` to 0 by a cosine over the first ``drop_until`` of the phase's steps, after which the mask holds.
The dense gradients are read only on update steps. Details and the choices made here: docs/methods.md#rigl.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hypersparse import Method, Setup, register_method
from hypersparse.config import setting
from hypersparse.params import default_ceiling, num_pruned
from hypersparse.schema import METHOD_BASE, Dict, Float, Int, Str

Masks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class RigLConfig:
    """RigL: how the sparsity is spread over the layers and how the mask moves (--method rigl only; --set rigl.KEY)."""

    distribution: str = setting("erk", "each layer's share of the kept weights: erk (Erdos-Renyi-Kernel, the "
                                "paper's: density proportional to the sum of a layer's dimensions over their product) "
                                "or uniform", Str(16, ("erk", "uniform")), flag=False)
    drop_fraction: float = setting(0.3, "fraction of each layer's kept weights dropped and regrown at the first "
                                   "update; decays to 0 by a cosine", Float(0, 1, hi_open=True), flag=False)
    update_every: int = setting(100, "optimizer steps between mask updates (Delta T)", Int(1, 10**9), flag=False)
    drop_until: float = setting(0.75, "mask updates stop at this fraction of the sparse-training steps",
                                Float(0, 1, lo_open=True), flag=False)


def drop_fraction_at(t: int, total: int, start: float = 0.3, until: float = 0.75) -> float:
    """The cosine drop fraction after ``t`` of ``total`` sparse-training steps: ``start/2 (1 + cos(pi t / T))`` with
    ``T = until * total``, and 0 from ``T`` on."""
    end = until * total
    return 0.0 if t >= end else start / 2 * (1 + math.cos(math.pi * t / end))


def layer_densities(shapes: dict[str, tuple[int, ...]], sparsity: float, distribution: str = "erk",
                    floor: float = 0.0) -> dict[str, float]:
    """Each layer's density so that the kept weights are ``1 - sparsity`` of all.

    ``uniform``: every layer at ``1 - sparsity``. ``erk``: density ``eps * sum(shape) / prod(shape)``, with the
    layers whose density would pass 1 kept dense (and, where given, none below ``floor``), ``eps`` solving the total
    (google-research/rigl ``get_sparsities_erdos_renyi``).
    """
    if distribution == "uniform":
        return {n: 1.0 - sparsity for n in shapes}
    size = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / size[n] for n, s in shapes.items()}
    kept = (1.0 - sparsity) * sum(size.values())
    fixed: dict[str, float] = {}
    while True:
        free = [n for n in shapes if n not in fixed]
        eps = (kept - sum(d * size[n] for n, d in fixed.items())) / sum(raw[n] * size[n] for n in free)
        over = [n for n in free if eps * raw[n] > 1]
        under = [n for n in free if eps * raw[n] < floor]
        if over:  # the reference: the layers of the highest raw density go dense, then eps again
            top = max(raw[n] for n in over)
            fixed.update({n: 1.0 for n in over if raw[n] == top})
        elif under:
            low = min(raw[n] for n in under)
            fixed.update({n: floor for n in under if raw[n] == low})
        else:
            return {n: fixed.get(n, eps * raw[n]) for n in shapes}


def layer_counts(shapes: dict[str, tuple[int, ...]], sparsity: float, distribution: str = "erk",
                 floor: float = 0.0) -> dict[str, int]:
    """Weights kept per layer: the densities of :func:`layer_densities`, rounded so the total is exact
    (``N - floor(sparsity * N)``, as for every method)."""
    density = layer_densities(shapes, sparsity, distribution, floor)
    size = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(size.values()) - num_pruned(sparsity, sum(size.values()))
    exact = {n: min(size[n], density[n] * size[n]) for n in shapes}
    counts = {n: int(math.floor(v)) for n, v in exact.items()}
    order = sorted(shapes, key=lambda n: (counts[n] - exact[n], n))  # largest remainder first
    i = 0
    while sum(counts.values()) < total:
        n = order[i % len(order)]
        if counts[n] < size[n]:
            counts[n] += 1
        i += 1
    return counts


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A bool mask of the ``k`` lowest scores (ties by position, so the choice is deterministic)."""
    out = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        out[torch.sort(scores.flatten(), stable=True).indices[:k]] = True
    return out.view_as(scores)


class RigL(Method):
    """RigL's sparse-training phase between the dense warm-up and fine-tuning (phase ``train``)."""

    sparse_phase = "train"

    def __init__(self, settings: RigLConfig, **budget):
        super().__init__(**budget)
        self.settings = settings
        self._grads: dict[str, torch.Tensor] | None = None  # |dL/dw| of the update step, read before its step

    def drop_fraction(self, t: int) -> float:
        s = self.settings
        return drop_fraction_at(t, self.sparse_steps, s.drop_fraction, s.drop_until)

    def init_mask(self, model: nn.Module) -> Masks:
        """Each layer keeps its share (ERK or uniform), its largest weights: after warm-up the dense weights say which
        matter (the paper trains from scratch, so its first mask is random)."""
        weights = self.weights(model)
        floor = 1.0 - (self.max_layer_sparsity or default_ceiling(self.sparsity))
        counts = layer_counts({n: tuple(w.shape) for n, w in weights.items()}, self.sparsity,
                              self.settings.distribution, floor)
        return {n: ~_lowest(w.detach().abs(), w.numel() - counts[n]) for n, w in weights.items()}

    def _update_due(self, t: int) -> bool:
        return t % self.settings.update_every == 0 and self.drop_fraction(t) > 0

    def before_step(self) -> None:
        if self.phase == self.sparse_phase and self.masks is not None and self._update_due(self.sparse_step + 1):
            self._grads = {n: (w.grad.detach().abs().clone() if w.grad is not None else torch.zeros_like(w))
                           for n, w in self.weights(self.model).items()}

    def update_mask(self, model: nn.Module) -> Masks | None:
        """On an update step: drop the smallest kept weights, grow where the gradient is largest, as many."""
        if self._grads is None or not self._update_due(self.sparse_step):
            return None
        grads, self._grads, fraction = self._grads, None, self.drop_fraction(self.sparse_step)
        new = {}
        for name, w in self.weights(model).items():
            keep = self.masks[name]
            k = int(fraction * int(keep.sum()))
            magnitude = w.detach().abs().masked_fill(~keep, float("inf"))
            survivors = keep & ~_lowest(magnitude, k)
            grown = ~_lowest(grads[name].masked_fill(survivors, -float("inf")), w.numel() - k)  # k highest
            new[name] = survivors | grown
            with torch.no_grad():
                w.masked_fill_(new[name] & ~keep, 0.0)  # a newly grown weight starts at zero
        return new

    def final_mask(self, model: nn.Module) -> Masks:
        """The mask RigL arrived at is the one fine-tuning keeps; with no sparse-training epoch, its first mask."""
        return self.masks if self.masks is not None else self.init_mask(model)

    def record(self, event: str) -> dict:
        return {"drop_fraction": self.drop_fraction(self.sparse_step)} if event in (self.sparse_phase, "stop") else {}


def build(setup: Setup) -> RigL:
    return RigL(setup.settings, **setup.budget)


register_method("rigl", RigLConfig, build, help="rigl (dynamic sparse training: drop by magnitude, grow by gradient)",
                state=Dict(METHOD_BASE.fields, required="all"),
                plan="sparse training epochs (RigL: drop and regrow)")
