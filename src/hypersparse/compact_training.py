"""Fine-tuning on the compacted network: once the mask is fixed, train only the units and channels that reach the
output.

:class:`CompactTraining` trains a smaller copy without the units no kept weight connects to the output (and, for an
MLP, without the input features no kept weight reads), with its own optimizer of the same kind and settings, and
writes the weights and the optimizer state back into the full-size model when asked (the engine does at every
epoch's end), so ``model.pt``, checkpoints, exports, ``eval`` and ``--resume`` see the full model. Why it is exact
(constant units kept, "orphan" parameters, BatchNorm's statistics) and what it handles: docs/methods.md, "Fine-tuning
on the compacted network".
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from hypersparse.keep_pruned import MaskHandle, apply_masks_, strip_masks_

WEIGHTED = (nn.Linear, nn.Conv2d)
# layers that act on each unit or channel alone, the same whatever else is there (no dropout: its random draws
# would differ when the layer is smaller)
CHANNELWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.ELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.MaxPool2d,
               nn.AvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


# a compacted convolution whose kept weights are at most this share of its entries trains as a sparse convolution
# (C loops whose work is proportional to the kept weights; bench/train_speed.py measures LeNet-5's conv2 at 1.3 % and
# 9.4 %). A fixed rule, not a timing: the same run must take the same path on every machine and after a resume.
SPARSE_BELOW = 0.05


def _sparse_conv_fits(conv: nn.Conv2d) -> bool:
    from hypersparse import native
    from hypersparse.sparse_conv import supported

    return (supported(conv) and conv.weight.device.type == "cpu" and conv.weight.dtype == torch.float32
            and native.conv_backward_kernels() is not None)


class _Gather(nn.Module):
    """Flattens the input and keeps the features a compacted first Linear layer reads."""

    def __init__(self, index: torch.Tensor):
        super().__init__()
        self.register_buffer("index", index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).index_select(1, self.index)


def _is_flatten(m: nn.Module) -> bool:
    return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1


def _plan(model: nn.Module) -> list[int] | None:
    """Positions of the weighted layers of a Sequential whose other layers act on each channel alone, or None."""
    if not isinstance(model, nn.Sequential):
        return None
    layers = list(model)
    weighted = [i for i, m in enumerate(layers) if isinstance(m, WEIGHTED)]
    if not weighted or not all(isinstance(m, WEIGHTED + CHANNELWISE) or _is_flatten(m) for m in layers):
        return None
    params = [p for m in layers for p in m.parameters()]
    if len({id(p) for p in params}) != len(params):  # a layer used twice, or tied weights: two positions, one tensor
        return None
    for a, b in zip(weighted, weighted[1:]):
        if isinstance(layers[a], nn.Linear) and isinstance(layers[b], nn.Conv2d):
            return None
        if isinstance(layers[a], nn.Conv2d) and layers[a].groups != 1:
            return None
        if layers[b].weight.shape[1] % layers[a].weight.shape[0]:
            return None
    return weighted


@torch.no_grad()
def _scatter(target: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """``target``'s entries at the flat (logical, row-major) positions ``index`` set to ``values``, in any layout."""
    if target.is_contiguous():
        target.view(-1)[index] = values.reshape(-1)
    else:  # channels_last: through a contiguous copy
        flat = target.contiguous().view(-1)
        flat[index] = values.reshape(-1)
        target.copy_(flat.view(target.shape))


def _gather(source: torch.Tensor, index: torch.Tensor, shape) -> torch.Tensor:
    return source.detach().reshape(-1)[index].reshape(shape).clone()


class CompactTraining:
    """A compacted copy of a model for fine-tuning with a fixed mask, and the way back into the model.

    Build it with :meth:`build` (None when the model's kind is not handled or nothing can be removed). Train
    :attr:`model` with :attr:`optimizer` (the full optimizer's class and settings; the mask is installed on both),
    call :meth:`sync_settings` after the full optimizer's learning rate changes, and :meth:`write_back` to copy the
    weights and the optimizer state into the full model and optimizer.
    """

    def __init__(self, full: nn.Sequential, masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                 weighted: list[int]):
        self.full, self.full_optimizer = full, optimizer
        self._names = {id(p): n for n, p in full.named_parameters()}
        self._links: list[tuple[torch.Tensor, torch.Tensor, nn.Parameter]] = []  # (full, flat index, compact)
        self._norms: list[tuple[nn.Module, nn.Module, torch.Tensor]] = []
        layers = list(full)
        self._masks_in = masks
        keep = {i: self._keep(masks, layers[i].weight) for i in weighted}
        # backward from the outputs: the units of each weighted layer that some live unit reads
        live = {weighted[-1]: torch.ones(layers[weighted[-1]].weight.shape[0], dtype=torch.bool,
                                          device=layers[weighted[-1]].weight.device)}
        for a, b in zip(reversed(weighted[:-1]), reversed(weighted[1:])):
            units = layers[a].weight.shape[0]
            k = keep[b][live[b]]
            live[a] = k.reshape(k.shape[0], units, keep[b][0].numel() // units).any(2).any(0)
        first, before = layers[weighted[0]], layers[:weighted[0]]
        self.inputs = None  # the input features the first Linear still reads (None: all of them)
        if isinstance(first, nn.Linear) and all(_is_flatten(m) or isinstance(m, nn.Identity) for m in before):
            used = keep[weighted[0]][live[weighted[0]]].any(0)
            if not bool(used.all()):
                self.inputs = torch.nonzero(used).flatten()
        self.removed = sum(int((~v).sum()) for v in live.values()) + (
            first.weight.shape[1] - len(self.inputs) if self.inputs is not None else 0)
        compact: list[nn.Module] = [_Gather(self.inputs)] if self.inputs is not None else []
        rows_in = None  # (live units, all units) of the previous weighted layer
        for i, m in enumerate(layers):
            if i < weighted[0] and self.inputs is not None:
                continue  # the Flatten is inside _Gather
            if isinstance(m, WEIGHTED):
                rows = torch.nonzero(live[i]).flatten()
                compact.append(self._sliced(m, rows, self._columns(m, rows_in, i == weighted[0])))
                rows_in = (rows, m.weight.shape[0])
            elif isinstance(m, BATCHNORM):
                rows = rows_in[0] if rows_in is not None else torch.arange(m.num_features)
                compact.append(self._sliced_norm(m, rows))
            else:
                compact.append(strip_masks_(copy.deepcopy(m)))  # a layer without parameters: the same settings
        self.model = nn.Sequential(*compact).train(full.training)
        if any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in full.parameters()):
            self.model.to(memory_format=torch.channels_last)
        compact_masks = {}
        for name, p in self.model.named_parameters():
            full_p, index = next((f, ix) for f, ix, c in self._links if c is p)
            full_name = self._names[id(full_p)]
            if full_name in masks:
                keep = _gather(masks[full_name].to(full_p.device), index, p.shape)
                if not bool(keep.all()):  # a sparse convolution holds kept weights only: nothing to mask
                    compact_masks[name] = keep
        self._orphans = self._orphan_parameters(masks)
        self._links += self._orphans
        self.optimizer = self._optimizer_like(optimizer)
        self._copy_state(into_compact=True)
        self.handle: MaskHandle = apply_masks_(self.model, compact_masks, self.optimizer)
        self._orphan_hook = self.optimizer.register_step_pre_hook(self._orphan_grads)

    @classmethod
    def build(cls, model: nn.Module, masks: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer
              ) -> "CompactTraining | None":
        """The compacted copy of ``model`` (its mask ``masks``, trained by ``optimizer``), or None if ``model`` is
        not a handled kind or no unit can go."""
        weighted = _plan(model)
        if weighted is None:
            return None
        out = cls(model, masks, optimizer, weighted)
        if not out.removed:
            out.handle.remove()
            out._orphan_hook.remove()
            return None
        return out

    # -- building ---------------------------------------------------------------------------------------------
    def _keep(self, masks: dict, weight: torch.Tensor) -> torch.Tensor:
        keep = masks.get(self._names[id(weight)])
        return torch.ones(weight.shape, dtype=torch.bool, device=weight.device) if keep is None else \
            keep.to(weight.device, torch.bool)

    def _columns(self, m: nn.Module, rows_in, first: bool) -> torch.Tensor | None:
        """The input columns (Linear) or channels (Conv2d) of ``m`` that the compact copy keeps."""
        if first:
            return self.inputs
        kept, units = rows_in
        if isinstance(m, nn.Linear) and m.weight.shape[1] != units:  # after a Flatten: a block of features per channel
            per = m.weight.shape[1] // units
            return (kept[:, None] * per + torch.arange(per, device=kept.device)).flatten()
        return kept

    def _take(self, full_p: torch.Tensor, index: torch.Tensor, shape) -> nn.Parameter:
        p = nn.Parameter(_gather(full_p, index, shape), requires_grad=full_p.requires_grad)
        self._links.append((full_p, index, p))
        return p

    def _sliced(self, m: nn.Module, rows: torch.Tensor, cols: torch.Tensor | None) -> nn.Module:
        w = m.weight
        cols = torch.arange(w.shape[1], device=w.device) if cols is None else cols
        if isinstance(m, nn.Conv2d) and _sparse_conv_fits(m):
            keep = self._keep(self._masks_in, w)[rows][:, cols]
            if keep.numel() and float(keep.float().mean()) <= SPARSE_BELOW:
                return self._sparse_conv(m, rows, cols, keep)
        inner = w[0, 0].numel() if w.dim() > 2 else 1
        index = ((rows[:, None] * w.shape[1] + cols[None, :]).reshape(-1, 1) * inner
                 + torch.arange(inner, device=w.device)).flatten()
        if isinstance(m, nn.Linear):
            new = nn.Linear(len(cols), len(rows), bias=m.bias is not None, device=w.device, dtype=w.dtype)
        else:
            new = nn.Conv2d(len(cols), len(rows), m.kernel_size, m.stride, m.padding, m.dilation, 1,
                            m.bias is not None, m.padding_mode, device=w.device, dtype=w.dtype)
        new.weight = self._take(w, index, (len(rows), len(cols), *w.shape[2:]))
        if m.bias is not None:
            new.bias = self._take(m.bias, rows, (len(rows),))
        return new

    def _sparse_conv(self, m: nn.Conv2d, rows: torch.Tensor, cols: torch.Tensor, keep: torch.Tensor) -> nn.Module:
        """The compacted convolution as its kept weights only, trained by the C loops of SparseConvTrainable."""
        from hypersparse.sparse_conv import SparseConvTrainable

        w = m.weight
        at = keep.nonzero()  # (out, in, ky, kx) in compacted coordinates, grouped by output channel
        kh, kw = w.shape[2:]
        index = ((rows[at[:, 0]] * w.shape[1] + cols[at[:, 1]]) * kh + at[:, 2]) * kw + at[:, 3]
        new = SparseConvTrainable(len(cols), len(rows), m.kernel_size, m.stride, m.padding, keep.cpu(),
                                  torch.zeros(len(index)), None)
        new.vals = self._take(w, index, (len(index),))
        if m.bias is not None:
            new._buffers.pop("bias")
            new.bias = self._take(m.bias, rows, (len(rows),))
        return new

    def _sliced_norm(self, m: nn.Module, rows: torch.Tensor) -> nn.Module:
        new = m.__class__(len(rows), m.eps, m.momentum, m.affine, m.track_running_stats)
        if m.affine:
            new.weight = self._take(m.weight, rows, (len(rows),))
            new.bias = self._take(m.bias, rows, (len(rows),))
        if m.track_running_stats:
            new.running_mean, new.running_var = m.running_mean[rows].clone(), m.running_var[rows].clone()
            new.num_batches_tracked = m.num_batches_tracked.clone()
            self._norms.append((m, new, rows))
        return new

    def _orphan_parameters(self, masks: dict) -> list[tuple[torch.Tensor, torch.Tensor, nn.Parameter]]:
        """Per full parameter, the entries that the compact copy does not hold and the mask does not prune."""
        out = []
        for name, full_p in self.full.named_parameters():
            free = torch.ones(full_p.numel(), dtype=torch.bool, device=full_p.device)
            for f, index, _ in self._links:
                if f is full_p:
                    free[index] = False
            if name in masks:
                free &= masks[name].to(full_p.device).reshape(-1)
            index = torch.nonzero(free).flatten()
            if len(index):
                out.append((full_p, index, nn.Parameter(_gather(full_p, index, (len(index),)),
                                                        requires_grad=full_p.requires_grad)))
        return out

    def _optimizer_like(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """The full optimizer's class and groups, over the compact parameters and the orphans of each group."""
        self._group_of = {id(p): g for g, group in enumerate(optimizer.param_groups) for p in group["params"]}
        groups = [{k: v for k, v in group.items() if k != "params"} | {"params": []}
                  for group in optimizer.param_groups]
        for full_p, _, p in self._links:
            groups[self._group_of[id(full_p)]]["params"].append(p)
        self._groups = [g for g, group in enumerate(groups) if group["params"]]  # full group of each compact one
        return optimizer.__class__([groups[g] for g in self._groups], **optimizer.defaults)

    # -- training ---------------------------------------------------------------------------------------------
    def _orphan_grads(self, *_) -> None:
        for _, _, p in self._orphans:  # zero, not None: weight decay and momentum act on them as in the full model
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    def sync_settings(self) -> None:
        """Copy the full optimizer's group settings (the learning rate the schedule set) into the compact one."""
        for group, g in zip(self.optimizer.param_groups, self._groups):
            group.update({k: v for k, v in self.full_optimizer.param_groups[g].items() if k != "params"})

    @torch.no_grad()
    def _copy_state(self, into_compact: bool) -> None:
        """Optimizer state (momentum, moments, step) between the full optimizer and the compact one."""
        for full_p, index, p in self._links:
            if into_compact:
                state = self.full_optimizer.state.get(full_p)
                if state:
                    self.optimizer.state[p] = {
                        k: _gather(v, index, p.shape) if isinstance(v, torch.Tensor) and v.shape == full_p.shape
                        else (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
                continue
            state = self.optimizer.state.get(p)
            if not state:
                continue
            out = self.full_optimizer.state[full_p]
            for k, v in state.items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.dim() > 0:
                    if not isinstance(out.get(k), torch.Tensor) or out[k].shape != full_p.shape:
                        out[k] = torch.zeros_like(full_p)
                    _scatter(out[k], index, v)
                else:
                    out[k] = v.clone() if isinstance(v, torch.Tensor) else v

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the compact weights, the orphans, BatchNorm's statistics and the optimizer state into the full ones."""
        for full_p, index, p in self._links:
            _scatter(full_p, index, p)
        for m, new, rows in self._norms:
            m.running_mean[rows] = new.running_mean
            m.running_var[rows] = new.running_var
            m.num_batches_tracked.copy_(new.num_batches_tracked)
        self._copy_state(into_compact=False)

    def close(self) -> None:
        """Write back, and take the compact copy's hooks out."""
        self.write_back()
        self.handle.remove()
        self._orphan_hook.remove()
