"""Sparsity regularizers over the global vector of prunable weights.

Each regularizer offers two equivalent forms:

* ``loss()``: an autograd term to add to the task loss (simple, builds a graph);
* ``add_grad_(strength)``: adds ``strength * gradient`` to every ``.grad`` in
  place, without a graph. This is the fast path the engine uses: call it after
  ``loss.backward()`` and before ``optimizer.step()``.
"""
from __future__ import annotations

import math
import numbers
import shutil
import warnings
import weakref
from typing import NamedTuple, Sequence

import torch
from torch.optim import optimizer as torch_optimizer

from hypersparse.params import (
    ModelOrParams,
    ModuleFilter,
    check_leaves,
    check_sparsity,
    num_pruned,
    prunable_parameters,
    refuse_meta,
)

#: s * |w|_(k) sits on the inflection point of sech^2: artanh(1/sqrt(3)) ~= 0.6585.
INFLECTION = math.atanh(1.0 / math.sqrt(3.0))
#: Below this many prunable weights the ~10 s compile costs more than it saves
#: (measured on LeNet-300: 4.4 -> 1.1 ms per step).
COMPILE_MIN_NUMEL = 200_000


def _finite(x: torch.Tensor) -> torch.Tensor:
    """A coefficient capped at float32's largest value: an overflow to inf would turn 0 * inf into NaN gradients."""
    big = torch.finfo(torch.float32).max
    return x.clamp(-big, big)


def _as_tensor(x: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32, device=like.device)


def _kth_near(flat: torch.Tensor, k: int, near: float, width: float = 0.05) -> torch.Tensor | None:
    """The k-th smallest of ``flat`` (CPU) if it lies within ``width`` of ``near`` (relative), found among the
    magnitudes of that band only: a few elementwise passes instead of a selection over all of them. None when the
    band misses it (or is empty), for the caller to select over everything."""
    lo, hi = near * (1 - width), near * (1 + width)
    n_lo = int((flat < lo).sum())
    if n_lo >= k:
        return None
    band = flat[(flat >= lo) & (flat < hi)]
    if k - n_lo > band.numel():
        return None
    return torch.kthvalue(band, k - n_lo).values


def cut_magnitude(flat: torch.Tensor, k: int, near: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The magnitude HyperSparse puts on the inflection point, and how many magnitudes lie below it.

    ``flat`` holds the magnitudes. Normally the cut is the k-th smallest, ``|w|_(k)``. A model that already has at
    least k exact zeros (a pruned checkpoint made sparser, zero embedding rows) would give a cut of 0 and an
    infinite s; its zeros are pruned already, so the cut moves to the weight nearest it that is still alive: the
    smallest nonzero magnitude (docs/methods.md, "Weights that are already zero"). With no nonzero weight the cut is
    infinite and the gradient zero. The cut is never below float32's smallest normal number, so s stays finite.
    """
    t = _kth_near(flat, k, near) if near and flat.device.type == "cpu" else None  # the last cut, a step ago
    if t is None:
        source = flat if flat.device.type in ("cpu", "cuda") else flat.cpu()  # MPS lacks kthvalue
        t = torch.kthvalue(source, k).values.to(flat.device)
    if flat.device.type == "cpu" and t > 0:  # the usual case, decided without two more passes (no sync on the CPU)
        return t.clamp_min(torch.finfo(torch.float32).tiny), torch.as_tensor(k)
    zeros = flat == 0
    smallest_alive = flat.masked_fill(zeros, float("inf")).min()
    cut = torch.where(t > 0, t, smallest_alive).clamp_min(torch.finfo(torch.float32).tiny)
    below = torch.where(t > 0, torch.as_tensor(k, device=flat.device), zeros.sum())
    return cut, below


_TINY = torch.finfo(torch.float32).tiny
_BLOCK = 4096  # entries per partial sum of the C kernel (hs_hypersparse in hypersparse.native)


class _SGDStep(NamedTuple):
    """SGD's settings and momentum buffers for each prunable tensor, for the fused pass."""

    lrs: list[float]
    wds: list[float]
    momenta: list[float]
    bufs: list[torch.Tensor | None]
    first: list[int]


#: optimizer -> ((its parameter count, id of each group list), the group of each prunable tensor): built once
_GROUPS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple]" = weakref.WeakKeyDictionary()


def _groups_of(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> list[dict | None]:
    """The param group holding each of ``params`` (None where none does), looked up again only when the groups
    change (``add_param_group``, a group's list replaced)."""
    groups = optimizer.param_groups
    key = tuple((id(g["params"]), len(g["params"])) for g in groups)
    cached = _GROUPS.get(optimizer)
    if cached is None or cached[0] != key or len(cached[1]) != len(params):
        group_of = {id(p): g for g in groups for p in g["params"]}
        cached = _GROUPS[optimizer] = (key, [group_of.get(id(p)) for p in params])
    return cached[1]


def _only_zeroing_hooks(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the step hooks ``optimizer.step()`` would run are at most the masks' global one, which only zeroes
    masked weights after the step (the fused pass leaves the rest of the step to ``optimizer.step()``)."""
    if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks \
            or torch_optimizer._global_optimizer_pre_hooks:
        return False
    return all(getattr(h, "keeps_pruned_zero", False) for h in torch_optimizer._global_optimizer_post_hooks.values())


def _sgd_step(optimizer, params: list[torch.Tensor]) -> _SGDStep | None:
    """What ``optimizer.step()`` would do to ``params``, if it is a plain ``torch.optim.SGD`` step the fused C pass
    takes exactly (float32 CPU tensors, dampening 0, no Nesterov, not maximize, float settings); None otherwise.
    A missing momentum buffer is created here and filled by the pass (torch's first step: the buffer is the
    gradient)."""
    if type(optimizer) is not torch.optim.SGD or not _only_zeroing_hooks(optimizer):
        return None  # a subclass or a hook may do more than the step written out in C
    step = _SGDStep([], [], [], [], [])
    state = optimizer.state
    for p, group in zip(params, _groups_of(optimizer, params)):
        if group is None or group.get("nesterov") or group.get("dampening", 0) != 0 or group.get("maximize") \
                or group.get("differentiable") or p.grad is None or not p.is_contiguous():
            return None
        lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        if type(lr) not in _NUMBERS or type(wd) not in _NUMBERS or type(momentum) not in _NUMBERS:
            return None  # a tensor learning rate (capturable schedules) is not the C pass's float
        momentum = float(momentum)
        buf = state[p].get("momentum_buffer") if momentum else None
        first = momentum != 0 and buf is None
        if first:
            buf = torch.empty_like(p, memory_format=torch.contiguous_format)
        if buf is not None and not (buf.dtype == torch.float32 and buf.is_contiguous() and buf.device.type == "cpu"):
            return None
        step.lrs.append(float(lr))
        step.wds.append(float(wd))
        step.momenta.append(momentum)
        step.bufs.append(buf)
        step.first.append(int(first))
    return step


_NUMBERS = (float, int)


@torch.no_grad()
def native_sgd_step_(optimizer: torch.optim.Optimizer, skip: Sequence[torch.Tensor] = ()) -> bool:
    """``optimizer.step()`` for its parameters with a gradient (but those in ``skip``), in C, one pass per tensor
    (torch's takes four, and about 0.1 ms of calls), each ``.grad`` then None so that the ``optimizer.step()``
    that follows has nothing left to do. Equal to torch's step to float rounding, in SGD's order of operations.

    Returns False, having changed nothing, unless ``optimizer`` is a plain ``torch.optim.SGD`` (dampening 0, no
    Nesterov, no step hooks but the masks' zeroing one) over float32 CPU tensors, the C kernel is available, and
    the step is one thread's work (one thread set, or under 128k entries): torch splits a large step across
    threads."""
    from hypersparse import native

    if type(optimizer) is not torch.optim.SGD or not _only_zeroing_hooks(optimizer):
        return False  # first: a masked phase's optimizer (it has the mask's hooks) declines here at every step
    skipped = {id(p) for p in skip}
    params = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in skipped and p.grad is not None]
    if not params or not all(p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous()
                             and p.grad.layout == torch.strided and p.grad.dtype == torch.float32
                             and p.grad.is_contiguous() for p in params):
        return False
    if torch.get_num_threads() > 1 and sum(p.numel() for p in params) >= 32 * _BLOCK:
        return False
    kernel = native.sgd_kernel()
    sgd = _sgd_step(optimizer, params) if kernel is not None else None
    if sgd is None:
        return False
    for p, lr, wd, momentum, buf, first in zip(params, sgd.lrs, sgd.wds, sgd.momenta, sgd.bufs, sgd.first):
        kernel(p.data_ptr(), p.grad.data_ptr(), buf.data_ptr() if buf is not None else None, p.numel(), lr, wd,
               momentum, first)
        if first:
            optimizer.state[p]["momentum_buffer"] = buf
        p.grad = None
    return True


class _NativePass:
    """HyperSparse's pass in C over float32 CPU tensors, its blocks split across torch's threads (ctypes lets go of
    the GIL). The partial sums of every block are added in one fixed order, so the result does not depend on the
    number of threads."""

    def __init__(self, params: list[torch.Tensor]):
        from hypersparse import native

        self.kernel = native.hypersparse_kernel()
        self.sgd_kernel = native.hypersparse_sgd_kernel()
        self.sizes = [p.numel() for p in params]
        starts = [0]
        for n in self.sizes:
            starts.append(starts[-1] + -(-n // _BLOCK))
        self.starts = starts  # first block of each tensor
        self.out = torch.zeros(starts[-1], 3, dtype=torch.float64)
        self._parts: dict[int, list[list[tuple[int, int, int]]]] = {}

    @staticmethod
    def available(params: list[torch.Tensor]) -> bool:
        if not all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params):
            return False
        from hypersparse import native

        return native.hypersparse_kernel() is not None

    def fits(self, grads: list[torch.Tensor]) -> bool:
        return all(g.dtype == torch.float32 and g.device.type == "cpu" and g.is_contiguous() for g in grads)

    def parts(self, threads: int) -> list[list[tuple[int, int, int]]]:
        """(tensor, first block, blocks) runs of about equal size for each of ``threads`` threads."""
        if threads not in self._parts:
            per = -(-self.starts[-1] // threads)
            parts, current, room = [], [], per
            for i, n in enumerate(self.sizes):
                first, blocks = 0, -(-n // _BLOCK)
                while blocks:
                    take = min(blocks, room)
                    current.append((i, first, take))
                    first, blocks, room = first + take, blocks - take, room - take
                    if room == 0:
                        parts.append(current)
                        current, room = [], per
            self._parts[threads] = parts + ([current] if current else [])
        return self._parts[threads]

    def __call__(self, params, grads, s: float, t: float, coef: float,
                 sgd: _SGDStep | None = None) -> tuple[float, float, int]:
        """The sums of ``params`` (before any step); with ``grads``, ``grads += coef * gradient``, or with ``sgd``
        as well, SGD's step on ``params`` taken with ``grads + coef * gradient`` (``grads`` unchanged)."""
        ws = [p.detach() if p.is_contiguous() else p.detach().contiguous() for p in params]
        out, stride = self.out.data_ptr(), 3 * 8  # bytes per block's three doubles

        def run(part):
            for i, first, blocks in part:
                at = first * _BLOCK
                n = min(blocks * _BLOCK, self.sizes[i] - at)
                g = grads[i].data_ptr() + 4 * at if grads is not None else None
                sums = out + stride * (self.starts[i] + first)
                if sgd is None:
                    self.kernel(ws[i].data_ptr() + 4 * at, g, n, s, t, coef, sums)
                else:
                    buf = sgd.bufs[i].data_ptr() + 4 * at if sgd.bufs[i] is not None else None
                    self.sgd_kernel(ws[i].data_ptr() + 4 * at, g, buf, n, s, t, coef, sgd.lrs[i], sgd.wds[i],
                                    sgd.momenta[i], sgd.first[i], sums)

        threads = torch.get_num_threads() if self.starts[-1] >= 32 else 1  # below ~128k weights one thread wins
        parts = self.parts(max(1, threads))
        if len(parts) == 1:
            run(parts[0])
        else:
            from hypersparse.native import thread_pool

            jobs = [thread_pool(len(parts)).submit(run, part) for part in parts[1:]]
            run(parts[0])
            for job in jobs:
                job.result()
        l1, total, below = self.out.sum(0).tolist()
        return l1, total, int(below)


class Regularizer:
    """Common part: the prunable tensors, their names, and ``.grad`` handling."""

    name = "regularizer"

    def __init__(self, model_or_params: ModelOrParams, filter: ModuleFilter | None = None):
        if filter is not None and not callable(filter):
            raise TypeError(f"filter must be a callable (name, module) -> bool or None, got {filter!r}"
                            + ("; L1 and L2 take no sparsity (their strength is add_grad_'s)"
                               if isinstance(filter, numbers.Real) else ""))
        named = prunable_parameters(model_or_params, filter)
        check_leaves(named)
        refuse_meta(named, type(self).__name__)  # its gradients would be meta tensors: nothing added, no error
        self.names: list[str] = [n for n, _ in named]
        self.params: list[torch.Tensor] = [p for _, p in named]
        self.numel: int = sum(p.numel() for p in self.params)

    def loss(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def gradient(self) -> list[torch.Tensor]:
        """The regularizer's gradient per tensor (not added anywhere)."""
        grads = [torch.zeros_like(p) for p in self.params]
        self._accumulate(grads, 1.0)
        return grads

    def add_grad_(self, strength: float | torch.Tensor) -> None:
        """Add ``strength * d(loss)/dw`` to each tensor's ``.grad`` (created if missing).

        ``strength`` is a finite number >= 0 or a one-element tensor (a tensor's value is not read: that would
        synchronise with the device at every step). With ``torch.amp.GradScaler``, call it after
        ``scaler.unscale_(optimizer)``: added to still-scaled gradients, the step would divide it by the scale."""
        if isinstance(strength, torch.Tensor):
            if strength.numel() != 1:
                raise ValueError(f"add_grad_ takes one strength, got a tensor of shape {tuple(strength.shape)}")
        elif isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not math.isfinite(strength) \
                or strength < 0:
            raise ValueError(f"add_grad_ takes a finite strength >= 0 (lambda), got {strength!r}")
        # a frozen parameter (requires_grad False) gets no .grad, which an optimizer would use to move it; its share
        # goes nowhere. A plain tensor passed in a list gets one, as it asked for.
        frozen = [isinstance(p, torch.nn.Parameter) and not p.requires_grad for p in self.params]
        for p, f in zip(self.params, frozen):
            if p.grad is None and not f:
                p.grad = torch.zeros_like(p)
        self._accumulate([torch.zeros_like(p) if f else p.grad for p, f in zip(self.params, frozen)], strength)

    def _accumulate(self, grads: list[torch.Tensor], strength: float | torch.Tensor) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class L1(Regularizer):
    """``sum |w|``: pushes every weight toward zero with the same force."""

    name = "l1"

    def loss(self) -> torch.Tensor:
        return sum(p.abs().sum() for p in self.params)

    @torch.no_grad()
    def _accumulate(self, grads, strength):
        params = [p.detach() for p in self.params]
        torch._foreach_add_(grads, torch._foreach_mul(torch._foreach_sign(params), float(strength)))


class L2(Regularizer):
    """``sum w^2``: force proportional to the weight, so large weights shrink most."""

    name = "l2"

    def loss(self) -> torch.Tensor:
        return sum(p.square().sum() for p in self.params)

    @torch.no_grad()
    def _accumulate(self, grads, strength):
        torch._foreach_add_(grads, [p.detach() for p in self.params], alpha=2.0 * float(strength))


def _hs_reduce(ws: Sequence[torch.Tensor], s: torch.Tensor, t: torch.Tensor):
    """Sum |w|, sum tanh(s|w|) and the count of |w| < t, in one pass."""
    l1 = s.new_zeros(())
    total = s.new_zeros(())
    below = torch.zeros((), dtype=torch.int64, device=s.device)
    for w in ws:
        a = w.abs().float()
        l1 = l1 + a.sum()
        total = total + torch.tanh(s * a).sum()
        below = below + (a < t).sum()
    return l1, total, below


def _hs_update(ws: Sequence[torch.Tensor], gs: Sequence[torch.Tensor], s: torch.Tensor, coef: torch.Tensor):
    """g += coef * sign(w) * sech^2(s|w|), with sech^2 = 1 - tanh^2."""
    for w, g in zip(ws, gs):
        th = torch.tanh(s * w.abs().float())
        g.add_((coef * torch.sign(w) * (1.0 - th * th)).to(g.dtype))


def _hs_fused(ws, gs, s, t, coef):
    """The update with a given coefficient, and the reductions for the next step, in one pass."""
    l1 = s.new_zeros(())
    total = s.new_zeros(())
    below = torch.zeros((), dtype=torch.int64, device=s.device)
    for w, g in zip(ws, gs):
        a = w.abs().float()
        th = torch.tanh(s * a)
        l1 = l1 + a.sum()
        total = total + th.sum()
        below = below + (a < t).sum()
        g.add_((coef * torch.sign(w) * (1.0 - th * th)).to(g.dtype))
    return l1, total, below


class HyperSparse(Regularizer):
    """HyperSparse (Glandorf et al., 2023) at target sparsity ``kappa``.

    Gradient: ``g_i = sign(w_i) s sech^2(s|w_i|) ||w||_1 / sum_j tanh(s|w_j|)``
    with ``s = artanh(1/sqrt 3) / |w|_(k)``, the k-th smallest magnitude,
    ``k = floor(kappa N)`` over all prunable weights. Weights below the cut are
    pushed to zero like L1; weights above it are released smoothly.

    ``refresh_every=1`` (default) computes the exact threshold (``kthvalue``) and normalisation at every call.
    ``refresh_every=K`` is the fast mode: the threshold is recomputed every K calls, or at once when its rank has
    drifted by more than ``max_rank_drift * N`` (checked exactly every call), and ``||w||_1`` and ``sum tanh`` come
    from the previous call's fused pass: in C for float32 on the CPU (:mod:`hypersparse.native`), elsewhere through
    ``torch.compile`` (``compile``: auto, on from 200,000 weights; False keeps PyTorch's eager kernels).
    """

    name = "hs"

    def __init__(
        self,
        model_or_params: ModelOrParams,
        sparsity: float,
        filter: ModuleFilter | None = None,
        refresh_every: int = 1,
        max_rank_drift: float = 1e-3,
        compile: bool | None = None,
    ):
        super().__init__(model_or_params, filter)
        self.sparsity = check_sparsity(sparsity)
        if int(refresh_every) < 1:
            raise ValueError(f"refresh_every must be >= 1, got {refresh_every!r}")
        self.refresh_every = int(refresh_every)
        if isinstance(max_rank_drift, bool) or not isinstance(max_rank_drift, numbers.Real) or \
                not 0 <= max_rank_drift <= 1:
            raise ValueError(f"max_rank_drift is a share of the weights in [0, 1], got {max_rank_drift!r}")
        self.max_rank_drift = float(max_rank_drift)
        # k >= 1 so that s is defined at sparsity 0 (it then sits on the smallest magnitude).
        self.k = max(num_pruned(self.sparsity, self.numel), 1)
        auto = compile is None
        if auto:
            compile = self.numel >= COMPILE_MIN_NUMEL and (
                self.params[0].device.type == "cuda" or shutil.which("cc") is not None
            )
        self._reduce, self._update, self._fused = _hs_reduce, _hs_update, _hs_fused
        self._native = _NativePass(self.params) if auto and _NativePass.available(self.params) else None
        self.compiled = bool(compile) and self._native is None
        if self.compiled:
            self._reduce, self._update, self._fused = (torch.compile(f) for f in (_hs_reduce, _hs_update, _hs_fused))
        self.refreshes = 0
        self._reset_lazy()

    def _reset_lazy(self) -> None:
        self._rank: torch.Tensor | None = None  # how many magnitudes lay below the cut when it was computed
        self._t: torch.Tensor | None = None
        self._s: torch.Tensor | None = None
        self._coef: torch.Tensor | None = None
        self._since = 0

    # -- the exact pieces -------------------------------------------------
    @torch.no_grad()
    def threshold(self) -> torch.Tensor:
        """The cut |w|_(k) (exact selection, no sort), or, when at least k weights are exactly zero, the smallest
        nonzero magnitude (:func:`cut_magnitude`)."""
        return cut_magnitude(torch.cat([p.detach().abs().flatten().float() for p in self.params]), self.k)[0]

    def scale(self) -> torch.Tensor:
        """s = artanh(1/sqrt 3) / |w|_(k)."""
        return INFLECTION / self.threshold()

    def loss(self) -> torch.Tensor:
        """``sum_i |w_i| T / sg(T) - ||w||_1``: value 0, gradient the HyperSparse gradient."""
        s = self.scale()
        mags = [p.abs().float() for p in self.params]
        l1 = sum(a.sum() for a in mags)
        total = sum(torch.tanh(s * a).sum() for a in mags)
        return l1 * total / total.detach().clamp_min(torch.finfo(torch.float32).tiny) - l1

    @torch.no_grad()
    def gradient(self) -> list[torch.Tensor]:
        """The exact gradient per tensor, without touching ``.grad`` or the fast path's cached threshold."""
        ws = [p.detach() for p in self.params]
        grads = [torch.zeros_like(p) for p in self.params]
        t = self.threshold()
        s = INFLECTION / t
        l1, total, _ = _hs_reduce(ws, s, t)
        _hs_update(ws, grads, s, _finite(s * l1 / total.clamp_min(torch.finfo(torch.float32).tiny)))
        return grads

    # -- the fast path ----------------------------------------------------
    @torch.no_grad()
    def _accumulate(self, grads, strength):
        if self._native is not None and self._native.fits(grads):
            return self._accumulate_native(grads, float(strength))
        ws = [p.detach() for p in self.params]
        strength = _as_tensor(strength, ws[0])
        tiny = torch.finfo(torch.float32).tiny
        refresh = self.refresh_every == 1 or self._t is None or self._since >= self.refresh_every
        if refresh:
            t, self._rank = cut_magnitude(torch.cat([w.abs().flatten().float() for w in ws]), self.k)
            s = INFLECTION / t
            l1, total, _ = self._call("reduce", ws, s, t)
            coef = _finite(s * l1 / total.clamp_min(tiny))
            self._call("update", ws, grads, s, _finite(strength * coef))
            self._t, self._s, self._coef, self._since = t, s, coef, 1
            self.refreshes += 1
            return
        if not isinstance(self._s, torch.Tensor):  # cut in C (or read back from a checkpoint that was)
            self._t, self._s, self._coef = (torch.as_tensor(v, dtype=torch.float32, device=ws[0].device)
                                            for v in (self._t, self._s, self._coef))
        l1, total, below = self._call("fused", ws, grads, self._s, self._t, _finite(strength * self._coef))
        self._coef = _finite(self._s * l1 / total.clamp_min(tiny))
        self._since += 1
        if abs(int(below) - int(self._rank)) > self.max_rank_drift * self.numel:
            self._since = self.refresh_every  # the stale cut drifted too far: refresh on the next call

    @torch.no_grad()
    def step_sgd_(self, optimizer: torch.optim.Optimizer, strength: float) -> bool:
        """``add_grad_(strength)`` and ``optimizer.step()`` for the prunable weights, in one pass in C.

        The optimizer's other parameters (biases, norms) take SGD's step in C too, when all of them are float32 CPU
        tensors. Every ``.grad`` stepped is set to None afterwards, so the ``optimizer.step()`` that follows has
        nothing left to do, or moves only what was left to it. Weights and momentum buffers equal those of the two
        calls to float rounding (the order of operations is SGD's). Returns False, having changed nothing, unless
        ``optimizer`` is a plain ``torch.optim.SGD`` (dampening 0, no Nesterov, no step hooks) over float32 CPU
        tensors and the C kernel is available: then call the two instead."""
        if self._native is None or self._native.sgd_kernel is None or isinstance(strength, torch.Tensor) \
                or not math.isfinite(strength) or strength < 0:
            return False
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads) or not self._native.fits(grads) \
                or not all(p.is_contiguous() for p in self.params):
            return False
        sgd = _sgd_step(optimizer, self.params)
        if sgd is None:
            return False
        self._accumulate_native(grads, float(strength), sgd)
        for p, buf, first in zip(self.params, sgd.bufs, sgd.first):
            if first:
                optimizer.state[p]["momentum_buffer"] = buf
            p.grad = None
        self._step_the_rest(optimizer)
        return True

    def _step_the_rest(self, optimizer: torch.optim.Optimizer) -> None:
        """SGD's step for the optimizer's other parameters (biases, norms) in C as well: torch's step costs about
        0.1 ms a call even for LeNet-300's three biases, some 5 % of its training step."""
        native_sgd_step_(optimizer, skip=self.params)

    def _accumulate_native(self, grads: list[torch.Tensor], strength: float, sgd: _SGDStep | None = None) -> None:
        """The fast path in C, with the scalars as Python floats: the same steps as the torch path's (with ``sgd``,
        the optimizer's step taken in the same pass)."""
        native, big = self._native, torch.finfo(torch.float32).max
        refresh = self.refresh_every == 1 or self._t is None or self._since >= self.refresh_every
        if refresh:
            ws = [p.detach() for p in self.params]
            near = float(self._t) if self._t is not None else None
            t, self._rank = cut_magnitude(torch.cat([w.abs().flatten().float() for w in ws]), self.k, near)
            t = float(t)
            s = INFLECTION / t
            l1, total, _ = native(self.params, None, s, t, 0.0)
            coef = min(s * l1 / max(total, _TINY), big)
            native(self.params, grads, s, t, min(strength * coef, big), sgd)
            self._t, self._s, self._coef, self._since = t, s, coef, 1
            self.refreshes += 1
            return
        s, t = float(self._s), float(self._t)
        l1, total, below = native(self.params, grads, s, t, min(strength * float(self._coef), big), sgd)
        self._coef = min(s * l1 / max(total, _TINY), big)
        self._since += 1
        if abs(below - int(self._rank)) > self.max_rank_drift * self.numel:
            self._since = self.refresh_every

    def _call(self, which: str, *args):
        fn = getattr(self, "_" + which)
        try:
            return fn(*args)
        except Exception as exc:  # a missing compiler or unsupported backend: fall back to eager, once
            if not self.compiled:
                raise
            warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); using eager HyperSparse kernels")
            self.compiled = False
            self._reduce, self._update, self._fused = _hs_reduce, _hs_update, _hs_fused
            return getattr(self, "_" + which)(*args)

    def state_dict(self) -> dict:
        def tensor(v):  # the C path keeps Python floats: stored as float64, which holds them exactly
            return torch.tensor(v, dtype=torch.float64) if isinstance(v, float) else v

        return {"t": tensor(self._t), "s": tensor(self._s), "coef": tensor(self._coef), "since": self._since,
                "refreshes": self.refreshes, "rank": self._rank}

    def load_state_dict(self, state: dict) -> None:
        # a checkpoint's numbers, checked before they steer the gradient: the cut is positive (infinite once no
        # weight is left), s and the scale finite, and as many weights lie below the cut as there are, at most
        for name, top in (("t", math.inf), ("s", math.nextafter(math.inf, 0)), ("coef", math.nextafter(math.inf, 0)),
                          ("rank", self.numel)):
            value = state.get(name)
            if value is None:
                continue
            ok = isinstance(value, (torch.Tensor, float, int)) and torch.as_tensor(value).numel() == 1
            if not ok or not (0 <= float(value) <= top) or (name == "t" and float(value) == 0):
                raise ValueError(f"its regularizer.{name} is {value!r}, outside what a run writes")
        self._t, self._s, self._coef = state["t"], state["s"], state["coef"]
        if self._native is not None and self._s is not None:  # the C path computes with Python floats
            self._t, self._s, self._coef = float(self._t), float(self._s), float(self._coef)
        self._rank = state.get("rank", torch.as_tensor(self.k))  # checkpoints written before the zero rule
        self._since, self.refreshes = state["since"], state["refreshes"]


REGULARIZERS = {"hs": HyperSparse, "l1": L1, "l2": L2}


def make_regularizer(name: str, model_or_params: ModelOrParams, sparsity: float, **kwargs) -> Regularizer:
    """Build a regularizer by its short name: ``hs``, ``l1`` or ``l2``."""
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; choose one of {', '.join(REGULARIZERS)}")
    if name == "hs":
        return HyperSparse(model_or_params, sparsity, **kwargs)
    return REGULARIZERS[name](model_or_params, kwargs.get("filter"))
