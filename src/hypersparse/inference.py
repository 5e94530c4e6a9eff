"""Sparse models that are really faster on the CPU: dead units removed, small kernels chosen by measurement.

:class:`CompactMLP` runs a chain ``Flatten → Linear → ReLU → … → Linear`` without the units that no longer matter
(inputs no kept weight reads, hidden units nothing reads from, constant units folded into the next bias), as small
dense or CSR products or one C call (:mod:`hypersparse.native`). CNNs lose their empty channels first
(:mod:`hypersparse.compaction`) and keep convolutions as :class:`~hypersparse.sparse_conv.SparseConv2d` where that
is faster. :func:`sparse_inference` measures every choice on the input each layer sees and keeps only what is
faster; why and how: docs/methods.md, "Sparse inference".
"""
from __future__ import annotations

import copy
import ctypes
import statistics
import time
import warnings
from collections import OrderedDict

import torch
from torch import nn

from hypersparse import native as _native
from hypersparse.compaction import CompactBlock, CompactResNet, compact_channels
from hypersparse.errors import first_line
from hypersparse.keep_pruned import strip_masks_
from hypersparse.params import refuse_meta
from hypersparse.sparse_conv import SparseConv2d, supported

_NOOPS = (nn.ReLU, nn.Dropout, nn.Identity)  # what may sit between two Linear layers of a chain (eval mode)
# a replacement must be this much faster (median time ratio) to be kept: timings on a shared CPU wobble by a few %,
# and a swap that wins by noise alone can leave the model slower than before
MARGIN = 0.97
KERNELS = ("dense", "csr", "native")


def median_latency(fn, x: torch.Tensor, reps: int, warmup: int = 2) -> float:
    """Median wall time in seconds of ``fn(x)`` without autograd, after ``warmup`` calls."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_latency(fns: dict, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Median seconds per call of each ``fns[name](x)``, alternating call by call so that machine noise hits all alike.

    Each timed call follows one untimed call of the same function, so its caches are warm as in steady use.
    """
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(median_latency(fn, x, 1, warmup=1))
    return {name: statistics.median(t) for name, t in times.items()}


def _compact(layers: list[tuple[nn.Linear, bool]]):
    """Input columns kept, and per layer (W, b, relu) restricted to the units that reach the outputs."""
    weights = [lin.weight.detach().float() for lin, _ in layers]
    biases = [lin.bias.detach().float() if lin.bias is not None else torch.zeros(lin.out_features) for lin, _ in layers]
    # backward: the units of each layer that some output depends on
    rows = [None] * len(layers)
    rows[-1] = torch.arange(weights[-1].shape[0])
    for i in range(len(layers) - 1, 0, -1):
        rows[i - 1] = torch.nonzero(weights[i][rows[i]].ne(0).any(0)).flatten()
    inputs = torch.nonzero(weights[0][rows[0]].ne(0).any(0)).flatten()
    # forward: drop units with no incoming weight, folding their constant output into the next bias
    out, cols = [], inputs
    const_idx, const_val = torch.zeros(0, dtype=torch.long), torch.zeros(0)
    for i, (w_full, b_full) in enumerate(zip(weights, biases)):
        w, relu = w_full[rows[i]], layers[i][1]
        b = b_full[rows[i]] + w[:, const_idx] @ const_val
        w = w[:, cols]
        if i < len(layers) - 1:
            dead = ~w.ne(0).any(1)
            const_idx, const_val = rows[i][dead], b[dead].relu() if relu else b[dead]
            w, b, cols = w[~dead], b[~dead], rows[i][~dead]
        out.append((w.contiguous(), b.contiguous(), relu))
    return inputs, out


class CompactMLP(nn.Module):
    """A chain of Linear layers (ReLU, Dropout or nothing between them) reduced to the units that matter.

    ``flatten`` means the chain began with ``nn.Flatten()``; otherwise the input
    is ``(..., in_features)`` like a Linear layer's. ``kernel`` is ``"dense"``
    (``addmm`` on the compacted weights), ``"csr"`` (``sparse.mm`` on them) or
    ``"native"`` (the whole chain in one C call over CSR rows, see
    :mod:`hypersparse.native`; CPU, inference only: its output has no autograd history).
    Outputs equal the original chain's up to float rounding (the sums run in
    another order), in eval mode.
    """

    def __init__(self, layers: list[tuple[nn.Linear, bool]], flatten: bool = False, kernel: str = "dense"):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}, got {kernel!r}")
        if kernel == "native" and _native.unavailable():
            raise RuntimeError(_native.unavailable())
        self.flatten, self.kernel = flatten, kernel
        self.in_features = layers[0][0].in_features
        inputs, compact = _compact(layers)
        self.out_features = compact[-1][0].shape[0]
        # no gather when every input is read; the native kernel reads the inputs by index itself
        self.register_buffer("index", inputs if len(inputs) < self.in_features else None)
        self.shapes = [tuple(w.shape) for w, _, _ in compact]
        self.relu = [relu for _, _, relu in compact]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
            for i, (w, b, _) in enumerate(compact):
                if kernel == "native":
                    if i == 0:  # columns back to input features: the C loop reads x itself, no gather
                        w = torch.zeros(w.shape[0], self.in_features).index_copy_(1, inputs, w)
                    csr = w.to_sparse_csr()
                    self.register_buffer(f"r{i}", csr.crow_indices().long().contiguous())
                    self.register_buffer(f"c{i}", csr.col_indices().long().contiguous())
                    self.register_buffer(f"v{i}", csr.values().contiguous())
                else:  # addmm wants W^T; sparse.mm wants W itself, as CSR
                    self.register_buffer(f"w{i}", w.t().contiguous() if kernel == "dense" else w.to_sparse_csr())
                self.register_buffer(f"b{i}", b)

        self._ops = None

    def _apply(self, fn, *args, **kwargs):
        self._ops = None  # .to() and friends replace the buffers
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state["_ops"] = None  # C pointers: rebuilt on the first call after copy or unpickling
        return state

    def _load_from_state_dict(self, *args, **kwargs):
        self._ops = None  # load_state_dict(assign=True) replaces the buffers
        return super()._load_from_state_dict(*args, **kwargs)

    def _native_ops(self):
        kernel = _native.chain_kernel()
        if kernel is None:  # e.g. unpickled on a machine without a C compiler
            raise RuntimeError(_native.unavailable())
        tensors = [[getattr(self, f"{k}{i}") for i in range(len(self.relu))] for k in "rcvb"]
        if any(t.device.type != "cpu" for group in tensors for t in group):
            raise RuntimeError("CompactMLP(kernel='native') runs on the CPU only; use kernel='dense' on other devices")
        # the C code reads these exact types; a wrong one would be read as garbage, not converted
        wanted = {"r": torch.int64, "c": torch.int64, "v": torch.float32, "b": torch.float32}
        for k, group in zip("rcvb", tensors):
            if any(t.dtype != wanted[k] or not t.is_contiguous() for t in group):
                raise RuntimeError("CompactMLP(kernel='native') computes in float32 with int64 indices; "
                                   "convert the module back with .float(), or use kernel='dense' for other dtypes")
        width = torch.tensor([self.in_features] + [s[0] for s in self.shapes], dtype=torch.int64)
        relu = torch.tensor(self.relu, dtype=torch.int32)

        def pointers(group):
            return (ctypes.c_void_p * len(group))(*[t.data_ptr() for t in group])

        arrays = [pointers(g) for g in tensors]
        spec = _native.ChainSpec(len(self.relu), self.in_features, max(s[0] for s in self.shapes),
                                width.data_ptr(), *[ctypes.addressof(a) for a in arrays], relu.data_ptr())
        # the tensors and arrays ride along so that the memory the pointers name stays alive
        return kernel, ctypes.addressof(spec), (spec, arrays, width, relu, tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "native":
            return self._forward_native(x)
        if self._ops is None:  # plain attributes: at batch 1, buffer lookups cost as much as the products
            self._index = self.index
            self._ops = [(getattr(self, f"w{i}"), getattr(self, f"b{i}"), relu) for i, relu in enumerate(self.relu)]
        lead = None if self.flatten or x.dim() == 2 else x.shape[:-1]
        h = x.reshape(-1, self.in_features)
        if self._index is not None:
            h = h.index_select(1, self._index)
        if self.kernel == "dense":
            for w, b, relu in self._ops:
                h = torch.addmm(b, h, w)
                if relu:
                    h = h.relu_()
        else:
            for w, b, relu in self._ops:
                h = torch.sparse.mm(w, h.t()).t() + b
                if relu:
                    h = h.relu_()
        return h if lead is None else h.reshape(*lead, h.shape[-1])

    def _forward_native(self, x: torch.Tensor) -> torch.Tensor:
        if self._ops is None:
            self._ops = self._native_ops()
        fn, spec, _ = self._ops
        # the C loop trusts the shape it is given, so it is checked here
        if self.flatten:
            fits = x.dim() >= 2 and x.shape[1:].numel() == self.in_features
        else:
            fits = x.dim() >= 1 and x.shape[-1] == self.in_features
        if not fits:
            raise ValueError(f"expected {'(N, ...) with' if self.flatten else '(..., in_features) with'} "
                             f"{self.in_features} features per sample, got shape {tuple(x.shape)}")
        if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
            x = x.to("cpu", torch.float32).contiguous()
        n = x.numel() // self.in_features
        out = torch.empty(n, self.out_features, dtype=torch.float32)
        if fn(spec, x.data_ptr(), n, out.data_ptr()):
            raise MemoryError("CompactMLP native kernel: out of memory for its scratch buffer")
        return out if self.flatten or x.dim() == 2 else out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, inputs={len(self.index) if self.index is not None else self.in_features}, " \
               f"layers={self.shapes}"


def _is_flatten(m: nn.Module) -> bool:
    return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1


def find_chains(model: nn.Module) -> list[dict]:
    """Every maximal ``[Flatten] Linear [ReLU/Dropout] … Linear [ReLU]`` run in an nn.Sequential, and every other
    Linear layer as a chain of one: ``{"parent", "keys", "layers", "flatten", "name"}``."""
    chains, covered = [], set()
    for pname, parent in model.named_modules():
        if not isinstance(parent, nn.Sequential):
            continue
        keys = list(parent._modules)
        mods = [parent._modules[k] for k in keys]
        i = 0
        while i < len(mods):
            j, flatten = i, _is_flatten(mods[i])
            j += flatten
            if j >= len(mods) or not isinstance(mods[j], nn.Linear):
                i += 1
                continue
            layers = []
            while j < len(mods) and isinstance(mods[j], nn.Linear):
                lin, relu = mods[j], False
                j += 1
                while j < len(mods) and isinstance(mods[j], _NOOPS):
                    relu |= isinstance(mods[j], nn.ReLU)
                    j += 1
                layers.append((lin, relu))
                covered.add(id(lin))
            prefix = f"{pname}." if pname else ""
            chains.append({"parent": parent, "keys": keys[i:j], "layers": layers, "flatten": flatten,
                           "name": f"{prefix}{keys[i]}..{keys[j - 1]}" if j - i > 1 else f"{prefix}{keys[i]}"})
            i = j
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module) not in covered:
            parent_name, _, attr = name.rpartition(".")
            chains.append({"parent": model.get_submodule(parent_name), "keys": [attr], "layers": [(module, False)],
                           "flatten": False, "name": name})
    return chains


def _replace(chain: dict, new: nn.Module) -> None:
    parent, keys = chain["parent"], chain["keys"]
    if not isinstance(parent, nn.Sequential):
        setattr(parent, keys[0], new)
        return
    # the chain's first key now holds the whole chain; Sequential runs its modules in insertion order
    parent._modules = OrderedDict((k, new if k == keys[0] else m) for k, m in parent._modules.items()
                                  if k == keys[0] or k not in keys)


def _inputs_of(model: nn.Module, modules: list[nn.Module], example: torch.Tensor) -> dict[int, torch.Tensor]:
    """What ``modules[k]`` receives when ``model`` runs on ``example``, by ``k`` (modules off that path are absent)."""
    inputs: dict[int, torch.Tensor] = {}

    def remember(k):
        def hook(module, args):  # returns None, so the input is left as it is
            inputs.setdefault(k, args[0].detach())

        return hook

    hooks = [m.register_forward_pre_hook(remember(k)) for k, m in enumerate(modules)]
    model(example)
    for h in hooks:
        h.remove()
    return inputs


def _choose_chain(chain: dict, x: torch.Tensor, kernels: list[str], reps: int, native: bool) -> dict:
    """Time one chain as it is and compacted with each kernel; swap in the fastest if it is 3 % faster."""
    as_is = nn.Sequential(*[chain["parent"]._modules[key] for key in chain["keys"]])
    candidates = {"dense": as_is, **{f"compact-{kern}": CompactMLP(chain["layers"], chain["flatten"], kern)
                                      for kern in kernels}}
    us = {name: t * 1e6 for name, t in interleaved_latency(candidates, x, reps).items()}
    best = min(us, key=us.get)
    if us[best] > MARGIN * us["dense"]:
        best = "dense"
    choice = {"layer": "chain", "kind": best, "us": us, "sparse": best != "dense",
              "shapes": candidates["compact-dense"].shapes}
    if native and "native" not in kernels:
        choice["native"] = _native.unavailable()
    if best != "dense":
        _replace(chain, candidates[best])
    return choice


_said: set[str] = set()


def _say_once(message: str) -> None:
    """A warning the user sees once per process, not once per call."""
    if message not in _said:
        _said.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _compacted_if_faster(model: nn.Module, example: torch.Tensor, reps: int) -> tuple[nn.Module, dict | None]:
    """``model`` channel-compacted if that is at least 3 % faster on ``example``, and the decision (None: no
    convolution, nothing to decide)."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model, None
    compacted, removed = compact_channels(model)
    if removed == 0:
        return model, {"removed": 0, "kept": False}
    us = interleaved_latency({"dense": model, "compacted": compacted}, example, reps)
    faster = us["compacted"] <= MARGIN * us["dense"]
    return (compacted if faster else model), {"removed": removed, "kept": faster,
                                               "us": {k: v * 1e6 for k, v in us.items()}}


def _relu_after(model: nn.Module) -> dict[str, tuple | None]:
    """Convolutions whose output goes straight into a ReLU, by name: ``(parent, key of the ReLU)``, or ``None``
    for a residual block's second convolution (its ReLU follows the shortcut's sum, which the kernel adds)."""
    found: dict[str, tuple | None] = {}
    for pname, parent in model.named_modules():
        prefix = f"{pname}." if pname else ""
        if isinstance(parent, nn.Sequential):
            keys = list(parent._modules)
            for k, nxt in zip(keys, keys[1:]):
                if supported(parent._modules[k]) and type(parent._modules[nxt]) is nn.ReLU:
                    found[prefix + k] = (parent, nxt)
        elif isinstance(parent, CompactBlock):
            found[prefix + "conv1"] = (parent, "act1")
            found[prefix + "conv2"] = None
        elif isinstance(parent, CompactResNet):
            found[prefix + "stem"] = (parent, "act")
    return found


def _swap(model: nn.Module, name: str, sparse: SparseConv2d, fusable: dict) -> None:
    """``sparse`` in place of the convolution ``name``; the ReLU it now applies itself leaves the model."""
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, sparse)
    if fusable.get(name) and sparse.relu:
        holder, key = fusable[name]
        if isinstance(holder, nn.Sequential):
            del holder._modules[key]
        else:
            setattr(holder, key, nn.Identity())


def swap_convs(model: nn.Module, threads: int = 1) -> nn.Module:
    """``model`` (changed in place) with every convolution :class:`SparseConv2d` computes exactly swapped for one,
    whatever it costs, a ReLU or residual sum right after each done in the same pass. See :func:`sparse_inference`
    for the swaps that are measured faster."""
    fusable = _relu_after(model)
    for name in [name for name, m in model.named_modules() if supported(m)]:
        _swap(model, name, SparseConv2d(model.get_submodule(name), relu=name in fusable, threads=threads), fusable)
    return model


def _choose_convs(model: nn.Module, example: torch.Tensor, reps: int) -> dict:
    """Swap each convolution for a :class:`SparseConv2d` (one thread, or the batch split across threads) where that
    is 3 % faster on the input it sees (see :func:`swap_convs`); the decisions, by layer name."""
    names = [name for name, m in model.named_modules() if supported(m)]
    inputs = _inputs_of(model, [model.get_submodule(name) for name in names], example)
    fusable = _relu_after(model)
    threads = torch.get_num_threads()
    choices = {}
    for k, name in enumerate(names):
        if k not in inputs:
            continue
        conv, x, relu = model.get_submodule(name), inputs[k], name in fusable
        candidates = {"dense": conv, "sparse": SparseConv2d(conv, relu=relu)}
        if x.shape[0] > 1 and threads > 1:
            candidates["sparse-threads"] = SparseConv2d(conv, relu=relu, threads=threads)
        # a fused ReLU is timed with the sparse candidate only: the comparison leans towards dense
        us = {k: t * 1e6 for k, t in interleaved_latency(candidates, x, reps).items()}
        best = min(us, key=us.get)
        if us[best] > MARGIN * us["dense"]:
            best = "dense"
        choices[name] = {"layer": "conv", "kind": best, "us": us, "sparse": best != "dense",
                         "relu": relu and best != "dense",
                         "kept": int(candidates["sparse"].vals.numel()), "weights": conv.weight.numel()}
        if best != "dense":
            _swap(model, name, candidates[best], fusable)
    return choices


def _choose_chains(model: nn.Module, example: torch.Tensor, reps: int, native: bool) -> dict:
    """Swap each Linear chain for its fastest :class:`CompactMLP` (see :func:`_choose_chain`); the decisions."""
    chains = find_chains(model)
    inputs = _inputs_of(model, [c['parent']._modules[c['keys'][0]] for c in chains], example)
    kernels = [k for k in KERNELS if k != "native" or (native and not _native.unavailable())]
    return {chain["name"]: _choose_chain(chain, inputs[k], kernels, reps, native)
            for k, chain in enumerate(chains) if k in inputs}  # chains off this input's path stay as they are


@torch.no_grad()
def _check_values(model: nn.Module) -> None:
    """ValueError unless every tensor of ``model`` holds values (not the meta device), all finite: the sparse kernels
    skip pruned entries and compaction folds units, so a NaN would not propagate as it does in the model."""
    named = [*model.named_parameters(), *model.named_buffers()]
    refuse_meta(named, "sparse_inference")
    bad = next((n for n, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise ValueError(f"sparse_inference: {bad} holds NaN or inf (the model has diverged); its outputs could not be "
                         "the model's: train it again, or load a finite checkpoint")


def sparse_inference(model: nn.Module, example: torch.Tensor, reps: int = 30, native: bool = True) -> nn.Module:
    """A copy of ``model`` (eval mode, CPU) whose layers run compacted or sparse, where measured faster.

    ``example`` is an input of the batch size you will use; ``native=False`` keeps PyTorch's kernels. Channel
    compaction, each convolution and each chain of Linear layers (:func:`find_chains`) is timed on ``example`` and
    kept only if at least 3 % faster (the rules: docs/methods.md, "Sparse inference"). A model that is a single
    chain comes back as its :class:`CompactMLP`. Outputs equal the dense model's within 1e-5 (1e-4 relative after
    compaction or with sparse convolutions); a model holding NaN or inf is refused, since the sparse kernels and
    compaction would not carry them. ``.hypersparse_choices`` on the result records each layer's decision by
    name (``layer``: ``conv`` or ``chain``), ``.hypersparse_compaction`` the compaction's (None without convolutions).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"sparse_inference expects model to be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"sparse_inference expects example to be a tensor (one input batch), got "
                        f"{type(example).__name__}")
    if int(reps) < 1:
        raise ValueError(f"reps must be at least 1 (timed calls per candidate), got {reps!r}")
    if example.dim() == 0 or example.shape[0] == 0:  # kernels are chosen by timing this batch: nothing to time
        raise ValueError(f"sparse_inference: the example must be a batch of at least one input (the batch size "
                         f"you will run), got shape {tuple(example.shape)}")
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()} \
        | ({example.dtype} if example.is_floating_point() else set())  # token ids stay integers
    if dtypes != {torch.float32}:
        names = ", ".join(sorted(str(d).removeprefix("torch.") for d in dtypes))
        raise ValueError(f"sparse_inference runs float32 models and inputs on the CPU, got {names}; pass "
                         "model.float() and example.float()")
    _check_values(model)
    # a copy without installed masks: its zeros are the mask, and compaction and the kernels change layer shapes
    work = strip_masks_(copy.deepcopy(model)).eval().cpu()
    try:  # once before any timing, so that the model's own error is not raised from deep inside the candidates
        with torch.no_grad():
            work(example)
    except (RuntimeError, ValueError, IndexError) as exc:
        first = first_line(exc, 300)
        raise ValueError(f"sparse_inference: the example (shape {tuple(example.shape)}) does not fit the model: "
                         f"{first}") from exc
    original, compaction = _compacted_if_faster(work, example, reps)
    model = copy.deepcopy(original)  # swapped in place; original stays as it is, the fallback
    if native and _native.unavailable() and (find_chains(model) or any(map(supported, model.modules()))):
        _say_once(f"sparse_inference uses PyTorch kernels only: {_native.unavailable()}")
    choices = _choose_convs(model, example, reps) if native and not _native.unavailable() else {}
    choices.update(_choose_chains(model, example, reps, native))
    if any(c["sparse"] for c in choices.values()):
        # per-layer timings need not add up (caches, dispatch): keep the swaps only if the whole model is faster,
        # and only if the layers' own, precise timings say they save 3 % of the model's time: a classifier's
        # microseconds inside a convolutional network's milliseconds would be a win by noise alone
        whole = interleaved_latency({"dense": original, "sparse": model}, example, reps)
        saved = sum(c["us"]["dense"] - c["us"][c["kind"]] for c in choices.values() if c["sparse"]) / 1e6
        if whole["sparse"] > MARGIN * whole["dense"] or saved < (1 - MARGIN) * whole["dense"]:
            for c in choices.values():
                c["kind"], c["sparse"] = "dense", False
                if c["layer"] == "conv":
                    c["relu"] = False
            model = original
    if isinstance(model, nn.Sequential) and len(model) == 1 and isinstance(model[0], CompactMLP):
        model = model[0]  # the whole model was one chain: one module call less per input
    model.hypersparse_choices, model.hypersparse_compaction = choices, compaction
    return model.eval()  # for inference, whatever mode the model came in (dropout off, BatchNorm's statistics fixed)
