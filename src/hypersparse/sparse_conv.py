"""Direct sparse convolution on the CPU (after Park et al., ICLR 2017): no im2col, no dense weight.

Each kept weight ``w[o, i, ky, kx]`` adds the input plane ``i``, shifted by its tap and scaled by ``w``, to the
output plane ``o``; the work is proportional to the kept weights, so a layer at 99 % sparsity does 1/100 of a dense
convolution's multiply-adds. The loop is C (:mod:`hypersparse.native`); a batch can be split across threads (the
call releases the GIL). :func:`hypersparse.sparse_inference` swaps it in per layer where it measures faster.
"""
from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from hypersparse import native as _native

_pool: ThreadPoolExecutor | None = None


def _threads(n: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers < n:
        _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="hypersparse-conv")
    return _pool


def conv_spec(rowptr, ic, ky, kx, vals, bias, in_channels: int, out_channels: int, kernel_size, stride, padding,
              h: int, w: int, relu: bool):
    """The C description (:class:`hypersparse.native.ConvSpec`) of a sparse convolution for ``h`` x ``w`` inputs:
    its address, the output size, and the tensors its pointers name (keep them alive while it is used)."""
    tensors = (rowptr, ic, ky, kx, vals, bias)
    wanted = (torch.int64, torch.int32, torch.int32, torch.int32, torch.float32, torch.float32)
    if any(t.dtype != d or t.device.type != "cpu" for t, d in zip(tensors, wanted)):
        raise RuntimeError("SparseConv2d computes on the CPU in float32; move it back with .cpu().float()")
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {h}x{w} input is smaller than the {kh}x{kw} kernel with padding {tuple(padding)}")
    # output (oy, ox) reads input (oy * sh + dy, ox * sw + dx): each weight reaches the outputs whose input lies
    # inside the image, a block [y0, y0 + rows) x [x0, x0 + cols), worked out here once and not per call
    dy, dx = ky.long() - ph, kx.long() - pw
    y0, x0 = (-dy + sh - 1).div(sh, rounding_mode="floor").clamp_min(0), \
        (-dx + sw - 1).div(sw, rounding_mode="floor").clamp_min(0)
    y1 = ((h - 1 - dy).div(sh, rounding_mode="floor") + 1).clamp(0, oh)
    x1 = ((w - 1 - dx).div(sw, rounding_mode="floor") + 1).clamp(0, ow)
    rows, cols = (y1 - y0).clamp_min(0), (x1 - x0).clamp_min(0)
    off = ic.long() * (h * w) + (y0 * sh + dy) * w + (x0 * sw + dx)
    off = torch.where((rows > 0) & (cols > 0), off, torch.zeros_like(off)).contiguous()
    blocks = [t.to(torch.int32).contiguous() for t in (y0, rows, x0, cols)]
    rowptr, vals, bias = (t.contiguous() for t in (rowptr, vals, bias))
    spec = _native.ConvSpec(in_channels * h * w, out_channels, oh * ow, ow, sh * w, sw,
                            *[t.data_ptr() for t in (rowptr, off, *blocks, vals, bias)], int(relu))
    return ctypes.addressof(spec), (oh, ow), (spec, rowptr, off, blocks, vals, bias)


def supported(conv: nn.Module) -> bool:
    """Whether :class:`SparseConv2d` computes ``conv`` exactly: a plain 2-D convolution with zero padding."""
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.dilation == (1, 1)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


class SparseConv2d(nn.Module):
    """``conv`` (groups 1, dilation 1, zero padding) computed from its nonzero weights only, in float32 on the CPU.

    ``relu`` applies a ReLU to the output in the same pass; ``threads`` > 1 splits a batch across that many threads.
    Inference only: the weights are buffers, not parameters.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = False, threads: int = 1):
        super().__init__()
        if not supported(conv):
            raise ValueError("SparseConv2d handles nn.Conv2d with groups=1, dilation=1 and numeric zero padding only")
        w = conv.weight.detach().to("cpu", torch.float32)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.relu, self.threads = bool(relu), max(1, int(threads))
        where = w.nonzero()  # row-major: grouped by output channel, as the kernel walks them
        counts = torch.bincount(where[:, 0], minlength=self.out_channels)
        self.register_buffer("rowptr", torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]))
        for k, name in enumerate(("ic", "ky", "kx"), start=1):
            self.register_buffer(name, where[:, k].to(torch.int32).contiguous())
        self.register_buffer("vals", w[tuple(where.t())].contiguous())
        bias = conv.bias.detach().to("cpu", torch.float32) if conv.bias is not None else torch.zeros(self.out_channels)
        self.register_buffer("bias", bias.contiguous())
        self._specs: dict = {}
        self._dense: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight (zeros where pruned), rebuilt from the stored nonzeros on first use and kept: for code
        around the layer that reads a convolution's weight (a model's forward asking its dtype, say)."""
        if self._dense is None:
            w = torch.zeros(self.out_channels, self.in_channels, *self.kernel_size, dtype=self.vals.dtype,
                            device=self.vals.device)
            rows = torch.repeat_interleave(torch.arange(self.out_channels, device=self.vals.device), self.rowptr.diff())
            w[rows, self.ic.long(), self.ky.long(), self.kx.long()] = self.vals
            self._dense = w
        return self._dense

    def _apply(self, fn, *args, **kwargs):
        self._specs, self._dense = {}, None  # .to() and friends replace the buffers the specs point at
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state["_specs"], state["_dense"] = {}, None  # C pointers: rebuilt on the first call after copy or unpickling
        return state

    def _load_from_state_dict(self, *args, **kwargs):
        self._specs, self._dense = {}, None
        return super()._load_from_state_dict(*args, **kwargs)

    def _check(self, kh: int, kw: int) -> None:
        """The C loop indexes memory with these buffers: after load_state_dict they must still describe a layer."""
        n, rp = self.vals.numel(), self.rowptr
        fits = (rp.numel() == self.out_channels + 1 and int(rp[0]) == 0 and int(rp[-1]) == n
                and bool((rp[1:] >= rp[:-1]).all()) and self.bias.numel() == self.out_channels
                and all(t.numel() == n for t in (self.ic, self.ky, self.kx)))
        if fits and n:
            fits = (0 <= int(self.ic.min()) and int(self.ic.max()) < self.in_channels and 0 <= int(self.ky.min())
                    and int(self.ky.max()) < kh and 0 <= int(self.kx.min()) and int(self.kx.max()) < kw)
        if not fits:
            raise ValueError("SparseConv2d's buffers do not describe a convolution of its shape; rebuild it from "
                             "the nn.Conv2d with SparseConv2d(conv)")

    def _spec(self, h: int, w: int):
        """The C description of this layer for ``h`` x ``w`` inputs (kept, with the tensors its pointers name)."""
        self._check(*self.kernel_size)
        return conv_spec(self.rowptr, self.ic, self.ky, self.kx, self.vals, self.bias, self.in_channels,
                         self.out_channels, self.kernel_size, self.stride, self.padding, h, w, self.relu)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution of ``x``; ``residual`` (the output's shape) is added before the ReLU, in the same pass."""
        kernel = _native.conv_kernel()
        if kernel is None:  # e.g. unpickled on a machine without a C compiler
            raise RuntimeError(_native.unavailable())
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
            x = x.to("cpu", torch.float32).contiguous()
        n, _, h, w = x.shape
        if (h, w) not in self._specs:
            self._specs[(h, w)] = self._spec(h, w)
        spec, (oh, ow), _ = self._specs[(h, w)]
        out = torch.empty(n, self.out_channels, oh, ow)
        res = 0
        if residual is not None:
            if residual.shape != out.shape:  # the C loop trusts the size it is given
                raise ValueError(f"residual of shape {tuple(residual.shape)} for an output of {tuple(out.shape)}")
            residual = residual.to("cpu", torch.float32).contiguous()
            res = residual.data_ptr()
        parts = min(self.threads, n)
        if parts <= 1:
            kernel(spec, x.data_ptr(), n, out.data_ptr(), res or None)
            return out
        step, per_in, per_out = -(-n // parts), x[0].numel() * 4, out[0].numel() * 4
        jobs = [_threads(parts).submit(kernel, spec, x.data_ptr() + s * per_in, min(step, n - s),
                                       out.data_ptr() + s * per_out, res + s * per_out if res else None)
                for s in range(0, n, step)]
        for job in jobs:
            job.result()
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, kept={self.vals.numel()}, relu={self.relu}, threads={self.threads}")


# -- training a sparse convolution -----------------------------------------------------------------------------------
CHUNKS = 2  # the batch is always cut in this many parts, so the sums do not depend on how many threads run them


def _chunks(n: int) -> list[tuple[int, int]]:
    step = -(-n // CHUNKS)
    return [(s, min(step, n - s)) for s in range(0, n, step)]


def _in_parallel(calls: list) -> None:
    if len(calls) == 1 or torch.get_num_threads() == 1:
        for call in calls:
            call()
        return
    jobs = [_native.thread_pool(len(calls)).submit(call) for call in calls[1:]]
    calls[0]()
    for job in jobs:
        job.result()


class _SparseConvFunction(torch.autograd.Function):
    """The convolution of :class:`SparseConvTrainable` and its gradients (for the input, the kept weights, the bias)."""

    @staticmethod
    def forward(ctx, x, vals, bias, layer):
        x = x.detach().to(torch.float32).contiguous()
        spec, (oh, ow) = layer.spec(x.shape[2], x.shape[3])
        out = torch.empty(x.shape[0], layer.out_channels, oh, ow)
        forward = _native.conv_kernel()
        per_in, per_out = x[0].numel() * 4, out[0].numel() * 4
        _in_parallel([lambda s=s, m=m: forward(spec, x.data_ptr() + s * per_in, m, out.data_ptr() + s * per_out, None)
                      for s, m in _chunks(x.shape[0])])
        ctx.save_for_backward(x, vals)
        ctx.layer, ctx.has_bias = layer, bias.requires_grad
        return out

    @staticmethod
    def backward(ctx, gy):
        x, vals = ctx.saved_tensors
        layer = ctx.layer
        gy = gy.to(torch.float32).contiguous()
        spec, _ = layer.spec(x.shape[2], x.shape[3])
        back_input, back_weight = _native.conv_backward_kernels()
        parts = _chunks(x.shape[0])
        per_in, per_out = x[0].numel() * 4, gy[0].numel() * 4
        gx = gv = gb = None
        calls = []
        if ctx.needs_input_grad[0]:
            gx = torch.zeros_like(x)
            calls += [lambda s=s, m=m: back_input(spec, gy.data_ptr() + s * per_out, m, gx.data_ptr() + s * per_in)
                      for s, m in parts]
        if ctx.needs_input_grad[1]:
            partial = torch.zeros(len(parts), vals.numel())
            calls += [lambda i=i, s=s, m=m: back_weight(spec, x.data_ptr() + s * per_in, gy.data_ptr() + s * per_out,
                                                         m, partial[i].data_ptr())
                      for i, (s, m) in enumerate(parts)]
        _in_parallel(calls)
        if ctx.needs_input_grad[1]:
            gv = partial.sum(0)
        if ctx.has_bias:
            gb = gy.sum((0, 2, 3))
        return gx, gv, gb, None


class SparseConvTrainable(nn.Module):
    """A convolution that stores and trains only its kept weights: ``vals`` (a parameter, one entry per kept weight,
    grouped by output channel) and ``bias``; forward and backward are C loops whose work is proportional to the kept
    weights (:func:`hypersparse.native.conv_backward_kernels`). CPU, float32, groups 1, dilation 1, zero padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding, keep: torch.Tensor,
                 vals: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = tuple(kernel_size), tuple(stride), tuple(padding)
        where = keep.nonzero()
        counts = torch.bincount(where[:, 0], minlength=out_channels)
        self.register_buffer("rowptr", torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]))
        for k, name in enumerate(("ic", "ky", "kx"), start=1):
            self.register_buffer(name, where[:, k].to(torch.int32).contiguous())
        self.vals = nn.Parameter(vals.detach().to(torch.float32).clone())
        if bias is not None:
            self.bias = nn.Parameter(bias.detach().to(torch.float32).clone())
        else:
            self.register_buffer("bias", torch.zeros(out_channels))
        self._specs: dict = {}

    @staticmethod
    def positions(keep: torch.Tensor) -> torch.Tensor:
        """The flat (row-major) positions of the kept weights in the order ``vals`` holds them."""
        return torch.nonzero(keep.reshape(-1)).flatten()

    def spec(self, h: int, w: int):
        key = (h, w, self.vals.data_ptr(), self.bias.data_ptr())
        if key not in self._specs:
            self._specs = {key: conv_spec(self.rowptr, self.ic, self.ky, self.kx, self.vals.detach(),
                                          self.bias.detach(), self.in_channels, self.out_channels, self.kernel_size,
                                          self.stride, self.padding, h, w, relu=False)}
        address, size, _ = self._specs[key]
        return address, size

    def __getstate__(self):
        state = super().__getstate__()
        state["_specs"] = {}  # C pointers
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}")
        return _SparseConvFunction.apply(x, self.vals, self.bias, self)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, kept={self.vals.numel()}")
