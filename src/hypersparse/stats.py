"""Statistics of the weights for the run report (one JSON line per logged epoch in ``stats.jsonl``).

The engine logs them at every regularization epoch, at each phase change and
at the last epoch, and at other epochs only while their cost stays within 5 %
of the training time (so a run of tiny epochs logs every few epochs). At the
target sparsity kappa: how many weights entered and left the kept (largest
1 - kappa) set since the previous logged epoch, the threshold |w|_(k) and
s, a fixed-size sample of the sorted magnitudes with the regularizer's
gradient at the same weights, a log-binned magnitude histogram, and the
per-layer sparsity a global cut would give. Costs one selection and a few
passes over the weights per epoch.
"""
from __future__ import annotations

import time

import torch

from hypersparse.masks import magnitude_masks
from hypersparse.regularizers import INFLECTION, Regularizer

SAMPLE = 512
SHARE = 0.05  # outside the epochs the report needs, the statistics may cost at most this share of training time
HIST_EDGES = (-10.0, 1.0, 66)  # log10 |w| from 1e-10 to 10, 65 bins; exact zeros are counted apart


class StatsCollector:
    """Computes one epoch's statistics; keeps the previous kept-set to count exchanges, and its own time budget."""

    def __init__(self, names: list[str], params: list[torch.Tensor], sparsity: float, seed: int = 0,
                 share: float = SHARE, max_layer_sparsity: float | None = None):
        self.names, self.params, self.sparsity, self.share = names, params, sparsity, share
        self.max_layer_sparsity = max_layer_sparsity
        self.budget = 0.0  # seconds of statistics the run may still spend
        self.cost = 0.0  # what the last collection took
        n = sum(p.numel() for p in params)
        g = torch.Generator().manual_seed(seed + 7)
        # a fixed random subset of weight positions whose magnitudes (and gradients) we keep, sorted
        self.index = torch.randperm(n, generator=g)[: min(n, 20_000)]  # enough for 512 quantiles; sorting it is cheap
        self.prev_keep: torch.Tensor | None = None

    def maybe_collect(self, regularizer: Regularizer | None, epoch_seconds: float, needed: bool) -> dict | None:
        """This epoch's statistics if ``needed`` (the report reads them) or if the budget allows, else None."""
        self.budget += self.share * epoch_seconds
        if not (needed or self.budget >= self.cost):
            return None
        t0 = time.perf_counter()
        out = self.collect(regularizer)
        self.cost = time.perf_counter() - t0
        self.budget -= self.cost
        return out

    @torch.no_grad()
    def collect(self, regularizer: Regularizer | None) -> dict:
        flat = torch.cat([p.detach().flatten().float().cpu() for p in self.params])
        mags = flat.abs()
        masks = magnitude_masks(list(zip(self.names, self.params)), self.sparsity,
                                max_layer_sparsity=self.max_layer_sparsity)
        keep = torch.cat([m.flatten().cpu() for m in masks.values()])
        out: dict = {"kept": int(keep.sum())}
        if self.prev_keep is not None:
            out["entered"] = int((keep & ~self.prev_keep).sum())
            out["left"] = int((~keep & self.prev_keep).sum())
        self.prev_keep = keep
        # |w|_(k) is the largest pruned magnitude (the mask zeroes exactly the k smallest); at kappa 0, the smallest
        pruned = mags[~keep]
        t = float(pruned.max()) if pruned.numel() else float(mags.min())
        out["threshold"] = t
        out["s"] = INFLECTION / t if t > 0 else None
        sample = mags[self.index]
        order = torch.argsort(sample)
        picks = order[torch.linspace(0, len(order) - 1, min(SAMPLE, len(order))).long()]
        out["sorted_magnitudes"] = sample[picks].tolist()
        if regularizer is not None:
            grad = torch.cat([g.flatten().float().cpu() for g in regularizer.gradient()])
            out["sorted_gradient"] = grad[self.index][picks].tolist()
        lo, hi, bins = HIST_EDGES
        nonzero = mags[mags > 0]
        out["hist_log10"] = torch.histc(nonzero.log10().clamp(lo, hi), bins=bins - 1, min=lo, max=hi).long().tolist()
        out["exact_zeros"] = int((mags == 0).sum())
        out["layer_sparsity_at_kappa"] = {n: 1 - float(m.float().mean()) for n, m in masks.items()}
        out["layer_zeros"] = {n: float((p == 0).float().mean()) for n, p in zip(self.names, self.params)}
        return out

    def state_dict(self) -> dict:
        return {"prev_keep": self.prev_keep, "budget": self.budget, "cost": self.cost}

    def load_state_dict(self, state: dict) -> None:
        keep, n = state["prev_keep"], sum(p.numel() for p in self.params)
        if keep is not None and (keep.dtype != torch.bool or tuple(keep.shape) != (n,)):
            raise ValueError(f"its stats.prev_keep is a {keep.dtype} tensor of shape {tuple(keep.shape)}, not the "
                             f"model's {n} weights as bool")
        self.prev_keep, self.budget, self.cost = keep, state["budget"], state["cost"]
