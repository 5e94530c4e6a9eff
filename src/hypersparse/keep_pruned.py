"""Keeping pruned weights at exactly zero: the one mask mechanism that training, copies and exports share.

:func:`apply_masks_` installs a mask and returns the :class:`MaskHandle` that owns everything it installed: with an
optimizer, a step pre-hook that masks the gradients (and a post-hook on the weights for optimizers outside
:data:`ZERO_STAYS_ZERO`); on the model, a bool buffer ``<name>_mask`` and one :class:`Keeper` per module, so copies
keep their zeros; without an optimizer, a tensor hook. While any mask exists, one global step post-hook zeroes the
pruned weights that any other optimizer steps (a new one made for fine-tuning, an earlier one, a copy's).
:meth:`MaskHandle.update_` changes the mask in place, :meth:`MaskHandle.remove` takes out all of it, and masks applied
again replace the old ones. :func:`strip_masks_` cleans a copy that has no handle. How each part works and what it
costs: docs/methods.md, "Keeping pruned weights at zero".
"""
from __future__ import annotations

import sys
import weakref
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.optim import optimizer as torch_optimizer
from torch.utils.hooks import RemovableHandle

from hypersparse.params import ModelOrParams, ModuleFilter, check_leaves, prunable_parameters, refuse_scripted

Masks = dict[str, torch.Tensor]


#: Optimizers whose step leaves a weight at +0.0 when its gradient and its state are zero (each of them updates a
#: weight from its own gradient, state and value alone). For these the masked gradients and state keep pruned
#: weights at zero, and the mask costs one pass per step; any other optimizer gets the weights masked after its step.
ZERO_STAYS_ZERO = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam,
                   torch.optim.Adamax, torch.optim.Adagrad, torch.optim.RMSprop, torch.optim.Adadelta)


def _suffix(attr: str) -> str:
    return f"{attr}_mask"


@torch.no_grad()
def zero_pruned_(tensors: Iterable[torch.Tensor], masks: Iterable[torch.Tensor]) -> None:
    """Set each tensor's entries where its keep-mask is False to +0.0, once (nothing is installed)."""
    for t, keep in zip(tensors, masks):
        t.masked_fill_(~keep.to(device=t.device, dtype=torch.bool), 0.0)  # +0.0; a multiply leaves -0.0


def _masked_sparse(g: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """A sparse gradient (an ``Embedding(sparse=True)``'s) with its entries at pruned positions zeroed: each stored
    value is multiplied by the mask at its index (rows of dense values for a hybrid tensor)."""
    g = g.coalesce().clone()  # a copy: autograd may hold the tensor it passes
    g.values().mul_(keep.to(g.device)[tuple(g.indices())].to(g.dtype))  # values() of a coalesced tensor is its own
    return g


class _Derived:
    """Forms of a mask (its complement, or a float copy) computed once and reused until the mask changes: a mask
    tensor that is replaced (``.to()``) or changed in place (``update_``, which bumps its version) is recomputed."""

    def __init__(self):
        self._cache: dict = {}

    def get(self, keep: torch.Tensor, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
        key = (dtype, device)
        hit = self._cache.get(key)
        if hit is None or hit[0] is not keep or hit[1] != keep._version:
            value = (~keep).to(device) if dtype is None else keep.to(device=device, dtype=dtype)
            hit = self._cache[key] = (keep, keep._version, value)
        return hit[2]


class Keeper:
    """One module's masked tensors, kept at zero in copies of the module that no optimizer hook reaches.

    It is the module's forward pre-hook and ``load_state_dict`` post-hook, so ``copy.deepcopy`` and pickling carry
    it. Before a forward it zeroes the masked entries of, and hooks the gradient of, each tensor it has not seen
    (a copy's tensors are new objects); the tensors an optimizer-backed handle enforces are marked as seen instead.

    Nothing here holds a weak reference to a tensor: ``torch.utils.swap_tensors`` (``.half()`` or ``.to()`` under
    ``torch.__future__.set_swap_module_params_on_conversion(True)``) refuses a tensor that has one. A swap keeps the
    tensor object but gives it new contents, which its gradient hooks no longer reach, so a tensor whose ``_cdata``
    changed is hooked again.
    """

    def __init__(self, names: list[str], owner: "MaskHandle | None" = None):
        self.names = list(names)
        # held, not weakly: a handle the caller drops keeps enforcing the mask for as long as the model carries it
        self.owner = owner
        self.module: nn.Module | None = None  # the module whose hooks it is (set when installed)
        self.entries: list[_Entry] = []  # the handle's entries for that module (none in a copy)
        self._seen: dict[str, tuple[torch.Tensor, int, RemovableHandle | None]] = {}  # tensor, its impl, its hook
        self._records: dict[str, torch.Tensor] = {}  # a copy's masks as they were copied (a handle's are its entries)

    def __getstate__(self) -> dict:
        # what this keeper saw and who owns it concern the original, not a copy; its module is the copy's (a deepcopy
        # or pickle maps it to the module being copied), so a copy whose masked module never runs its own forward
        # (MultiheadAttention's out_proj, a parent calling F.linear with its weight) is still found at a step. The
        # mask buffers, as objects: the copy's record of its masks (the same tensors as its buffers, until
        # Module.to_empty replaces those with uninitialised ones)
        buffers = self.module._buffers if self.module is not None else {}
        return {"names": self.names, "module": self.module,
                "masks": {n: buffers[_suffix(n)] for n in self.names if buffers.get(_suffix(n)) is not None}}

    def __setstate__(self, state: dict) -> None:
        self.names, self.owner, self._seen, self.entries = state["names"], None, {}, []
        self.module = state.get("module")
        self._records = dict(state.get("masks") or {})
        _COPIES.add(self)
        _changed()

    def adopt(self, module: nn.Module) -> None:
        """Mark the module's current tensors as enforced elsewhere (by an optimizer's step hooks)."""
        for name in self.names:
            self._forget(name)
            t = getattr(module, name)
            self._seen[name] = (t, t._cdata, None)

    def cover(self, module: nn.Module) -> None:
        """Zero the masked entries and hook the gradient of every masked tensor not seen yet (a copy's).

        A tensor standing in for one this keeper has seen, which is still alive, is left as it is: that is
        ``torch.func.functional_call`` (or another stateless call) passing the caller's own tensors for one forward,
        and they are the caller's, not this model's to zero."""
        for name in self.names:
            _refuse_recomputed(module, name)
            t = getattr(module, name)
            seen = self._seen.get(name)
            if seen is not None:
                old, impl, hook = seen
                if old is t and (hook is None or t._cdata == impl):
                    continue
                # a count in place of a weak reference (swap_tensors refuses those): a tensor standing in for the one
                # seen (functional_call) is left alone while the original lives on elsewhere, and a replaced tensor
                # is covered once nothing but this keeper holds the one it replaced
                if old is not t and _references(old) > _ONLY_KEEPER:
                    continue
            self._forget(name)
            if seen is not None and seen[0] is t and t._backward_hooks is not None:
                # swapped: the tensor's hook dict stayed with the object but no longer reaches its new contents;
                # assigning it again installs it there (the user's hooks in it, which the swap had silenced, too)
                t._backward_hooks = t._backward_hooks
            zero_pruned_([t], [getattr(module, _suffix(name))])
            hook = None
            if t.requires_grad:
                hook = t.register_hook(self._gradient_hook(module, name))
            self._seen[name] = (t, t._cdata, hook)
            _COVERED[id(t)] = (weakref.ref(module), name)
            _changed()

    def _gradient_hook(self, module: nn.Module, name: str):
        derived = _Derived()

        def hook(g: torch.Tensor) -> torch.Tensor:  # the mask as it is now (update_ may change it)
            keep = getattr(module, _suffix(name))
            return _masked_sparse(g, keep) if g.is_sparse else g.masked_fill(derived.get(keep, None, g.device), 0)

        return hook

    def _forget(self, name: str) -> None:
        old = self._seen.pop(name, None)
        if old is not None:
            t, _, hook = old
            if hook is not None:
                hook.remove()
            if id(t) in _COVERED:
                del _COVERED[id(t)]  # t is alive (held here), so the entry under its id is its own
                _changed()

    def release(self) -> None:
        """Remove the tensor hooks this keeper registered."""
        for name in list(self._seen):
            self._forget(name)

    def before_forward(self, module: nn.Module, args) -> None:
        self._check_masks()
        self.cover(module)

    def _check_masks(self) -> None:
        """A mask buffer replaced by one of other values (``Module.to_empty``, which leaves every buffer
        uninitialised; the masks are not in the state_dict a load brings) gets the recorded mask back: the handle's,
        or in a copy the one copied. One that only moved (``.to()``) becomes the record."""
        for e in self.entries:
            e._keep = _restored(e.module._buffers.get(_suffix(e.attr)), e._keep)
        for name, record in self._records.items():
            self._records[name] = _restored(self.module._buffers.get(_suffix(name)), record)

    def after_load(self, module: nn.Module, incompatible_keys) -> None:
        """Zero the loaded weights where the mask prunes. ``load_state_dict(assign=True)`` puts new tensors in the
        module: they are its own now (a stand-in never loads), so they are covered as a copy's are."""
        self._check_masks()
        for name in self.names:
            seen = self._seen.get(name)
            if seen is not None and seen[0] is not getattr(module, name):
                self._forget(name)
        self.cover(module)
        zero_pruned_([getattr(module, n) for n in self.names], [getattr(module, _suffix(n)) for n in self.names])


def _restored(buf: torch.Tensor | None, record: torch.Tensor) -> torch.Tensor:
    """The record of a mask, given the module's buffer now: a buffer of other values gets the record's back, one that
    only moved (``.to()``) becomes the record."""
    if buf is None or buf is record or buf.device.type == "meta":  # a meta buffer holds no values: keep the record
        return record
    try:
        differs = buf.shape == record.shape and not torch.equal(buf, record.to(buf.device))
    except RuntimeError:  # under vmap or torch.export the buffer's values cannot be read: the record stands
        return record
    if differs:
        buf.copy_(record.to(buf.device))
    return buf


def _refuse_recomputed(module: nn.Module, name: str) -> None:
    """A masked weight that something recomputes at every forward since it was masked (weight_norm, a
    parametrization, torch.nn.utils.prune) comes from other tensors, where the mask does not reach: an error, not a
    silent revival; so is a mask buffer that something removed (torch.nn.utils.prune.remove takes the name). Cheap
    checks first: this runs at every forward."""
    if _suffix(name) not in module._buffers:
        raise ValueError(f"{type(module).__name__}.{name} is masked, but its mask buffer '{_suffix(name)}' was "
                         "removed since (torch.nn.utils.prune.remove takes that name); apply the masks again, or take "
                         "them off (handle.remove())")
    recomputed = "parametrizations" in module._modules and parametrize.is_parametrized(module, name)
    if not recomputed and len(module._forward_pre_hooks) > 1:  # the keeper's own is one
        recomputed = any(getattr(hook, "name", getattr(hook, "_tensor_name", None)) == name
                         and isinstance(hook, _RECOMPUTING_HOOKS) for hook in module._forward_pre_hooks.values())
    if recomputed:
        raise ValueError(f"{type(module).__name__}.{name} is masked and has been recomputed from other tensors "
                         "since (weight_norm, a parametrization or torch.nn.utils.prune), where the mask does not "
                         "reach; undo that, or take the masks off (handle.remove()) before adding it")


def _recomputing_hooks() -> tuple[type, ...]:
    """torch's hook-based forms that replace a weight by one computed at every forward."""
    from torch.nn.utils.prune import BasePruningMethod
    from torch.nn.utils.weight_norm import WeightNorm

    return (WeightNorm, BasePruningMethod)


_RECOMPUTING_HOOKS = _recomputing_hooks()


def _references(t: object) -> int:
    return sys.getrefcount(t)


def _baseline() -> int:
    """What :func:`_references` counts for an object held only the way a Keeper holds a tensor it saw (in a tuple,
    unpacked into a local name, as ``cover`` does), measured rather than assumed: it differs between Python
    versions."""
    seen = (object(),)
    old = seen[0]
    return _references(old)


#: a tensor a Keeper saw, counted by cover() at this or below, is referenced by nothing but that Keeper
_ONLY_KEEPER = _baseline()


def _keepers(module: nn.Module) -> list[tuple[dict, int, Keeper]]:
    """The (hook dict, key, keeper) of every Keeper hook on ``module``."""
    found = []
    for hooks in (module._forward_pre_hooks, module._load_state_dict_post_hooks):
        for key, hook in hooks.items():
            keeper = getattr(hook, "__self__", None)
            if isinstance(keeper, Keeper):
                found.append((hooks, key, keeper))
    return found


def _uninstall(module: nn.Module) -> None:
    """Take every Keeper, its tensor hooks and its mask buffers off ``module``."""
    keepers = {}
    for hooks, key, keeper in _keepers(module):
        del hooks[key]
        keepers[id(keeper)] = keeper
    for keeper in keepers.values():
        _COPIES.discard(keeper)
        keeper.release()
        if keeper.owner is not None:
            keeper.owner._forget(module)
        for name in keeper.names:
            if _suffix(name) in module._non_persistent_buffers_set:  # ours; a persistent one is someone else's
                module._buffers.pop(_suffix(name), None)
                module._non_persistent_buffers_set.discard(_suffix(name))


def strip_masks_(model: nn.Module) -> nn.Module:
    """Remove the mask buffers and hooks from ``model`` and its submodules (e.g. a copy); the weights stay as they
    are."""
    for module in model.modules():
        _uninstall(module)
    return model


def has_masks(model: nn.Module) -> bool:
    """Whether any module of ``model`` carries masks installed by :func:`apply_masks_`."""
    return any(_keepers(m) for m in model.modules())


class _Entry:
    """One masked tensor: where it lives, and its mask as the tensor's own dtype (one multiply per step)."""

    __slots__ = ("name", "module", "attr", "tensor", "_keep", "_derived", "hook")

    def __init__(self, name: str, module: nn.Module | None, attr: str | None, tensor: torch.Tensor,
                 keep: torch.Tensor):
        self.name, self.module, self.attr, self.tensor, self._keep = name, module, attr, tensor, keep
        self._derived = _Derived()
        self.hook: RemovableHandle | None = None  # the gradient hook of a tensor in a list, without an optimizer

    @property
    def keep(self) -> torch.Tensor:
        """The bool mask (True = kept): the module's buffer, which ``.to()`` moves along with the model."""
        return getattr(self.module, _suffix(self.attr)) if self.module is not None else self._keep

    def scale(self, like: torch.Tensor) -> torch.Tensor:
        """The mask as ``like``'s dtype and device, for one multiply (a bool ``masked_fill_`` is 7x slower)."""
        return self._derived.get(self.keep, like.dtype, like.device)


class MaskHandle:
    """Everything one :func:`apply_masks_` call installed; :meth:`update_` changes the masks, :meth:`remove` undoes
    it."""

    def __init__(self, optimizer: torch.optim.Optimizer | None = None):
        # weakly: the model keeps its handle (through its keepers), and must not keep a replaced optimizer alive
        self._optimizer = weakref.ref(optimizer) if optimizer is not None else None
        self._entries: list[_Entry] = []
        self._hooks: list[RemovableHandle] = []  # this handle's optimizer hooks
        self._modules: dict[int, nn.Module] = {}  # where this handle's keepers are
        self._pre_hook: int | None = None  # the id of its optimizer step pre-hook
        self._trusted = False  # whether its optimizer keeps a zero weight with a zero gradient and state at zero
        self._late = False  # whether a step pre-hook runs after the mask's in the step under way
        self._gone = False  # whether it masked tensors and masks none now (removed, or taken over)

    def __reduce__(self):
        # a copy (deepcopy, or pickling a model that keeps its handle as an attribute) owns nothing: the copied
        # model's masks travel as its buffers and keepers. A copy of this handle's hooks would take the original's
        # out on remove()
        return (MaskHandle, ())

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer whose steps enforce the mask (None without one, or once it is gone)."""
        return self._optimizer() if self._optimizer is not None else None

    @property
    def masks(self) -> Masks:
        """A copy of the masks enforced now (change them with :meth:`update_`: an edit of the copy changes nothing)."""
        return {e.name: e.keep.clone() for e in self._entries}

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [e.tensor for e in self._entries]

    def reapply_(self) -> None:
        """Zero the masked weights again, and the optimizer's state at pruned positions (a weight or a momentum
        buffer changed by hand, outside any optimizer's step)."""
        if self._gone:
            raise ValueError("this handle masks nothing: it was removed, or a later apply_masks_ took its tensors "
                             "over; reapply through the handle that apply_masks_ returned last")
        zero_pruned_(self.tensors, [e.keep for e in self._entries])
        self._mask_state(self._entries)

    def _after_step(self, optimizer, *_) -> None:
        """Zero the pruned weights after a step, where the step may have moved them: an optimizer not known to keep a
        zero at zero (or one whose ``eps`` is 0 in the weights' dtype), or a step pre-hook registered after the
        mask's (gradient noise, clipping by hand), which also leaves momentum at pruned positions: that is zeroed
        too, or it would revive them once the hook is gone."""
        if not (self._trusted and _keeps_zero(optimizer, self._entries)):
            self._mask_weights(exact=True)  # its step's arithmetic is not known to leave them finite
        elif self._late:
            self._mask_weights(exact=False)  # moved by the hook's finite changes: one multiply clears them
        if self._late:
            self._mask_state(self._entries, exact=False)

    def _before_step(self, optimizer, args: tuple, kwargs: dict):
        """Mask the gradients before the update; a step given a closure (Lightning, LBFGS) computes them inside
        ``step``, so the closure is wrapped to mask them as soon as it has run."""
        # the hooks run in the order they were registered: one the user added after apply_masks_ runs after this
        self._late = next(reversed(optimizer._optimizer_step_pre_hooks), self._pre_hook) != self._pre_hook
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)  # args[0] is the optimizer
        if closure is None:
            self._mask_grads()
            return None

        def masked_closure():
            loss = closure()
            self._mask_grads()
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": masked_closure}
        return (args[0], masked_closure, *args[2:]), kwargs

    @torch.no_grad()
    def _mask_grads(self, *_) -> None:
        grads, scales = [], []
        for e in self._entries:
            g = e.tensor.grad
            if g is not None and g.is_sparse:
                e.tensor.grad = _masked_sparse(g, e.keep)
            elif g is not None:
                grads.append(g)
                scales.append(e.scale(g))
        if grads:
            torch._foreach_mul_(grads, scales)

    @torch.no_grad()
    def _mask_weights(self, exact: bool) -> None:
        """``exact``: +0.0 at pruned positions whatever the step left there (a NaN from 0/0 with eps 0 included); else
        one multiply by the mask, ten times cheaper, for values known to be finite."""
        if exact:
            for e in self._entries:
                e.tensor.masked_fill_(e._derived.get(e.keep, None, e.tensor.device), 0)
        elif self._entries:
            torch._foreach_mul_(self.tensors, [e.scale(e.tensor) for e in self._entries])

    @torch.no_grad()
    def _mask_state(self, entries: list[_Entry], exact: bool = True) -> None:
        """Zero the optimizer's per-weight state (momentum, Adam's moments) where the mask prunes; ``exact=False``
        multiplies by the mask instead (each step after a late pre-hook: its values are finite, and that is cheaper)."""
        optimizer = self.optimizer
        if optimizer is None:
            return
        for e in entries:
            for value in optimizer.state.get(e.tensor, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == e.tensor.shape and not value.is_sparse:
                    if exact:
                        value.masked_fill_(e._derived.get(e.keep, None, value.device), 0)
                    elif value.is_floating_point():
                        value.mul_(e.scale(value))

    def _after_load(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer's state was loaded (a resume): momentum saved before the mask would revive pruned
        weights, so it is masked again."""
        self._mask_state(self._entries)

    def update_(self, masks: Masks) -> None:
        """New masks for the same tensors, in place: newly pruned weights (and their optimizer state) become zero,
        newly kept ones start from their current value. Nothing is installed again."""
        if set(masks) != {e.name for e in self._entries}:
            raise ValueError("update_ takes masks for the same tensors this handle masks; call apply_masks_ for others")
        for e in self._entries:
            e.keep.copy_(_as_keep(e.name, masks[e.name], e.tensor))  # in place: a new version, derived forms renewed
            e._keep = e.keep  # the record of the mask: a buffer moved by .to() is the mask now
        self.reapply_()
        self._mask_state(self._entries)

    def _forget(self, module: nn.Module) -> None:
        """Another apply_masks_ took ``module`` over: stop enforcing its tensors."""
        self._modules.pop(id(module), None)
        self._drop([e for e in self._entries if e.module is module])

    def _drop(self, entries: list[_Entry]) -> None:
        """Stop enforcing ``entries``; a handle left with none takes its optimizer hooks out too."""
        gone = {id(e) for e in entries}
        for e in entries:
            if e.hook is not None:
                e.hook.remove()
            owner = _OWNERS.get(id(e.tensor))
            if owner is not None and owner() is self:
                del _OWNERS[id(e.tensor)]
        self._entries = [e for e in self._entries if id(e) not in gone]
        self._gone = self._gone or bool(gone and not self._entries)
        _changed()
        if not self._entries:
            for h in self._hooks:
                h.remove()
            self._hooks.clear()

    def remove(self) -> None:
        """Take out every hook and buffer this handle installed. The weights keep their values (pruned ones stay 0
        until training changes them), and training without the mask works."""
        for module in list(self._modules.values()):
            _uninstall(module)
        self._modules.clear()
        self._drop(list(self._entries))


#: id(tensor) -> its handle, weakly: a tensor has one handle, the last apply_masks_ that named it. The handle holds
#: the tensor, so while the handle lives and has an entry for the tensor, the id is that tensor's (no weak reference
#: to a tensor anywhere: swap_tensors refuses one)
_OWNERS: dict[int, weakref.ref] = {}
#: id(tensor) -> (its module weakly, its name there): a copy's tensors, which its Keeper covers (they have no
#: handle); valid while the module's attribute of that name is the tensor of that id
_COVERED: dict[int, tuple] = {}
#: id(optimizer) -> (the optimizer weakly, (mask generation, the ids of its parameters) when read, the entries it
#: steps but does not enforce); by id, since an optimizer class may define __eq__ and so not be hashable
_FOREIGN: dict[int, tuple] = {}
#: the keepers of copies (deepcopy, pickle), weakly: their modules' tensors are masked at any optimizer's step even
#: when the module's own forward, which covers them, never runs
_COPIES: "weakref.WeakSet[Keeper]" = weakref.WeakSet()
_GENERATION = [0]
_GLOBAL_HOOK: list[RemovableHandle] = []


def _changed() -> None:
    """Which tensors are masked, or by whom, has changed: forget what each optimizer was found to step, and have
    the global step hook in place exactly while masks exist."""
    _GENERATION[0] += 1
    _FOREIGN.clear()
    if _GENERATION[0] % 256 == 0:  # short-lived copies (each registers its tensors) leave dead entries behind
        _purge()
    if (_OWNERS or _COVERED or _COPIES) and not _GLOBAL_HOOK:
        _GLOBAL_HOOK.append(torch_optimizer.register_optimizer_step_post_hook(_after_any_step))
    elif not (_OWNERS or _COVERED or _COPIES):
        for hook in _GLOBAL_HOOK:
            hook.remove()
        _GLOBAL_HOOK.clear()


def _foreign(optimizer: torch.optim.Optimizer) -> list[_Entry]:
    """The masked tensors ``optimizer`` steps without enforcing their mask itself: another handle's (a new
    optimizer for fine-tuning, an earlier one), a handle's without an optimizer, or a copy's."""
    found, index, live = [], _Index(), None
    for group in optimizer.param_groups:
        for p in group["params"]:
            handle, entry = index.owner(p)
            if entry is not None:
                if handle.optimizer is not optimizer:
                    found.append(entry)
                continue
            module, attr = _COVERED.get(id(p), (None, None))
            module = module() if module is not None else None
            if module is None or getattr(module, attr, None) is not p:
                live = _live_attributes() if live is None else live
                module, attr = live.get(id(p), (None, None))
            if module is not None and getattr(module, attr, None) is p and hasattr(module, _suffix(attr)):
                found.append(_Entry(attr, module, attr, p, None))
    return found


def _live_attributes() -> dict[int, tuple[nn.Module, str]]:
    """What each masked module holds now under each masked name, by the tensor's id. A tensor put there by hand
    since (a parametrization removed with ``leave_parametrized=True`` leaves a new Parameter) is in no registry,
    yet the module's mask is its mask."""
    modules: dict[int, nn.Module] = {}
    for ref in list(_OWNERS.values()):
        handle = ref()
        if handle is not None:
            modules.update(handle._modules)
    for ref, _ in list(_COVERED.values()):
        module = ref()
        if module is not None:
            modules[id(module)] = module
    for keeper in list(_COPIES):
        if keeper.module is not None:
            modules[id(keeper.module)] = keeper.module
    live = {}
    for module in modules.values():
        for _, _, keeper in _keepers(module):
            for name in keeper.names:
                live[id(getattr(module, name, None))] = (module, name)
    return live


@torch.no_grad()
def _after_any_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """After any optimizer's step: zero the pruned weights it moved without enforcing their mask (one multiply over
    those tensors; nothing for the optimizer a handle enforces at, nor for one that steps no masked tensor)."""
    # which tensors it steps, exactly: a parameter list changed in place, even to as many others, is read again
    key = (_GENERATION[0], tuple(id(p) for g in optimizer.param_groups for p in g["params"]))
    cached = _FOREIGN.get(id(optimizer))
    if cached is None or cached[0]() is not optimizer or cached[1] != key:
        cached = _FOREIGN[id(optimizer)] = (weakref.ref(optimizer), key, _foreign(optimizer))
    for e in cached[2]:  # +0.0 where pruned, whatever the step left there (a NaN of a row weight_norm divided by 0)
        e.tensor.masked_fill_(e._derived.get(e.keep, None, e.tensor.device), 0)


_after_any_step.keeps_pruned_zero = True  # it only zeroes masked weights: the fused SGD step may run beside it


def _take_over(tensors: Iterable[torch.Tensor]) -> None:
    """Earlier handles stop enforcing ``tensors``: the new masks replace theirs, they do not stack."""
    index = _Index()
    for t in tensors:
        owner, entry = index.owner(t)
        _OWNERS.pop(id(t), None)
        if entry is not None:
            owner._drop([entry])
    _purge()
    _changed()


def _purge() -> None:
    """Forget the tensors, handles and modules that are gone."""
    index = _Index()
    for key in [k for k, owner in _OWNERS.items() if index.entry(owner(), k) is None]:
        del _OWNERS[key]
    for key in [k for k, (module, attr) in _COVERED.items() if id(getattr(module(), attr, None)) != k]:
        del _COVERED[key]


class _Index:
    """Each handle's entries by their tensor's id, built once per use (a lookup per tensor would scan them all)."""

    def __init__(self):
        self._by_handle: dict[int, dict[int, _Entry]] = {}

    def entry(self, handle: MaskHandle | None, key: int) -> _Entry | None:
        if handle is None:
            return None
        entries = self._by_handle.get(id(handle))
        if entries is None:
            entries = self._by_handle[id(handle)] = {id(e.tensor): e for e in handle._entries}
        return entries.get(key)

    def owner(self, t: torch.Tensor) -> tuple[MaskHandle | None, _Entry | None]:
        """The live handle that masks ``t`` and its entry for it (None, None if none does)."""
        ref = _OWNERS.get(id(t))
        handle = ref() if ref is not None else None
        entry = self.entry(handle, id(t))
        return (handle, entry) if entry is not None and entry.tensor is t else (None, None)


def _as_keep(name: str, mask: object, tensor: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask for {name} must be a bool tensor (True = kept), got "
                        f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    if mask.shape != tensor.shape:
        raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, the weight has {tuple(tensor.shape)}")
    if mask.device.type == "meta" or tensor.device.type == "meta":
        raise ValueError(f"mask for {name}: a tensor on the meta device holds no values to mask; materialise the "
                         "model (and the mask) first")
    with torch.inference_mode(False):  # a mask made under inference_mode would have no version for _Derived
        return mask.to(device=tensor.device, copy=True)  # the handle's own: update_ changes it, never the caller's


def _targets(model_or_params: ModelOrParams, masks: Masks, filter: ModuleFilter | None) -> dict[str, torch.Tensor]:
    """The tensors the masks name: on a model, any parameter by its dotted name; else the listed tensors."""
    refuse_scripted(model_or_params)
    odd = next((k for k in masks if not isinstance(k, str)), None)
    if odd is not None:
        raise TypeError(f"masks are keyed by tensor name (a str such as '0.weight'), got the key {odd!r}")
    if isinstance(model_or_params, nn.Module) and filter is None:
        out = {}
        for name in masks:
            prefix, _, attr = name.rpartition(".")
            try:
                module = model_or_params.get_submodule(prefix)
                t = getattr(module, attr)
            except AttributeError:
                t = None
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"masks name tensors the model does not have: {name!r}")
            if attr in module._buffers:  # BatchNorm's running statistics: the module writes them, no step does
                raise ValueError(f"masks name {name!r}, a buffer the module updates itself, which no mask can hold "
                                 "at zero; masks name parameters (weights)")
            out[name] = t
        return out
    named = dict(prunable_parameters(model_or_params, filter))
    unknown = sorted(set(masks) - set(named))
    if unknown and filter is not None and isinstance(model_or_params, nn.Module):
        excluded = [n for n in unknown if n in dict(prunable_parameters(model_or_params))]
        if excluded:
            raise ValueError(f"masks name tensors the filter leaves out: {excluded[:5]}; drop them from the masks "
                             "or from the filter's exclusions")
    if unknown:
        raise ValueError(f"masks name tensors the model does not have as prunable: {unknown[:5]}")
    return {n: named[n] for n in masks}


def apply_masks_(
    model_or_params: ModelOrParams,
    masks: Masks,
    optimizer: torch.optim.Optimizer | None = None,
    filter: ModuleFilter | None = None,
) -> MaskHandle:
    """Zero the masked weights now and keep them zero; returns the handle that owns what was installed.

    ``masks`` maps tensor names (``"0.weight"``: any parameter of a model, by dotted name) to bool keep-masks of the
    same shape. With ``optimizer``, its state is masked once and the mask is enforced once per ``optimizer.step()``
    (gradients before it, weights after it), so momentum, weight decay and Adam cannot revive a pruned weight.
    Without one, a gradient hook zeroes the pruned weights' gradients. Any other optimizer that steps the masked
    weights (one made later, one a second ``apply_masks_`` displaced) has them multiplied by the mask after its step;
    a weight changed by hand outside an optimizer needs ``handle.reapply_()``.
    On a model the masks also travel with it as ``<name>_mask`` buffers, so a ``copy.deepcopy``, a pickled copy or
    ``load_state_dict`` keeps the pruned weights at zero. Masks on a module that has some replace them.
    """
    if not isinstance(masks, dict):
        raise TypeError(f"masks must be a dict of name -> bool tensor, got {type(masks).__name__}")
    targets = _targets(model_or_params, masks, filter)
    check_leaves(targets)
    if optimizer is not None and targets:
        _check_holds(optimizer, targets)
    keeps = {n: _as_keep(n, masks[n], t) for n, t in targets.items()}
    _check_tied(targets, keeps)
    if isinstance(model_or_params, nn.Module):
        _check_names_free(model_or_params, targets)  # before anything changes
    handle = MaskHandle(optimizer)
    _take_over(targets.values())
    if isinstance(model_or_params, nn.Module):
        _install_on_model(handle, model_or_params, targets, keeps)
    else:
        _install_on_tensors(handle, targets, keeps)
    for e in handle._entries:
        _OWNERS[id(e.tensor)] = weakref.ref(handle)
    _changed()
    handle.reapply_()
    if optimizer is not None:
        handle._mask_state(handle._entries)
        handle._hooks.append(optimizer.register_step_pre_hook(handle._before_step))
        handle._pre_hook = handle._hooks[-1].id
        handle._hooks.append(optimizer.register_load_state_dict_post_hook(handle._after_load))
        handle._trusted = type(optimizer) in ZERO_STAYS_ZERO
        handle._hooks.append(optimizer.register_step_post_hook(handle._after_step))
    return handle


_EPS_SEEN: dict[tuple, bool] = {}


def _eps_of(optimizer: torch.optim.Optimizer) -> tuple | None:
    """Each group's ``eps`` as a float (None where a group has none, as SGD's); None if one cannot be read as a
    number (a tensor of several values, say), which :func:`_keeps_zero` takes as unsafe."""
    out = []
    for group in optimizer.param_groups:
        eps = group.get("eps")
        if eps is None:
            out.append(None)
            continue
        try:  # a float, a numpy scalar or a one-value tensor: the number the step adds
            out.append(float(eps))
        except (TypeError, ValueError, RuntimeError):
            return None
    return tuple(out)


def _keeps_zero(optimizer: torch.optim.Optimizer, entries: list[_Entry]) -> bool:
    """Whether a step of ``optimizer`` (one of :data:`ZERO_STAYS_ZERO`) leaves a weight with zero gradient and state
    at +0.0 now: not if a group's ``eps`` is 0 (or not a number) in the weights' dtype (Adam's 0 / (0 + eps) is NaN
    then, and the default 1e-8 is 0 in float16). Checked at each step, since a group's settings and the weights' dtype
    can change; the answer is kept by the eps values as floats and the dtypes."""
    eps = _eps_of(optimizer)
    if eps is None:
        return False
    key = (eps, tuple(sorted({e.tensor.dtype for e in entries}, key=str)))
    seen = _EPS_SEEN.get(key)
    if seen is None:
        if len(_EPS_SEEN) > 1024:  # an eps that changes at every step: the memo stays small
            _EPS_SEEN.clear()
        seen = _EPS_SEEN[key] = all(value > 0 and float(torch.tensor(value, dtype=dtype)) > 0
                                    for value in eps if value is not None for dtype in key[1])
    return seen


def _check_tied(targets: dict[str, torch.Tensor], keeps: Masks) -> None:
    """A tensor reached under two names (tied weights: an embedding shared with the output layer) has one mask."""
    first: dict[int, str] = {}
    for name, t in targets.items():
        other = first.setdefault(id(t), name)
        if other != name and not torch.equal(keeps[other], keeps[name]):
            raise ValueError(f"masks for {other!r} and {name!r} differ, but they name one tied tensor; give both the "
                             "same mask (e.g. the first one's)")


def _check_names_free(model: nn.Module, targets: dict[str, torch.Tensor]) -> None:
    """The mask of ``weight`` is the buffer ``weight_mask``: a module holding that name already, and not from masks
    of ours (torch.nn.utils.prune's, or the user's own), would lose it."""
    for name in targets:
        prefix, _, attr = name.rpartition(".")
        module = model.get_submodule(prefix)
        ours = _suffix(attr) in module._non_persistent_buffers_set and any(
            attr in keeper.names for _, _, keeper in _keepers(module))
        if not ours and hasattr(module, _suffix(attr)):
            raise ValueError(f"{name}: the module already has a '{_suffix(attr)}' (torch.nn.utils.prune's, or its "
                             "own), the name the mask's buffer takes; remove it first (torch.nn.utils.prune.remove)")


def _check_holds(optimizer: torch.optim.Optimizer, targets: dict[str, torch.Tensor]) -> None:
    """An optimizer that trains none of the masked tensors would enforce the mask on nothing: a wrong argument."""
    held = {id(p) for group in getattr(optimizer, "param_groups", []) for p in group["params"]}
    if not any(id(t) in held for t in targets.values()):
        raise ValueError("the optimizer holds none of the masked tensors; pass the optimizer that trains this "
                         "model (built on its parameters), or none")


def _install_on_tensors(handle: MaskHandle, targets: dict[str, torch.Tensor], keeps: Masks) -> None:
    """A list of tensors: the handle keeps the masks; without an optimizer, a gradient hook per tensor, which also
    keeps the handle alive for as long as the tensor has it."""
    handle._entries = [_Entry(n, None, None, t, keeps[n]) for n, t in targets.items()]
    if handle.optimizer is None:
        for e in handle._entries:
            if e.tensor.requires_grad:
                e.hook = e.tensor.register_hook(
                    lambda g, e=e, derived=_Derived(), owner=handle: _masked_sparse(g, e.keep) if g.is_sparse
                    else g.masked_fill(derived.get(e.keep, None, g.device), 0))


def _install_on_model(handle: MaskHandle, model: nn.Module, targets: dict[str, torch.Tensor], keeps: Masks) -> None:
    """On each module: the masks as buffers and one Keeper (replacing any earlier one), so copies keep them too."""
    by_module: dict[str, list[str]] = {}
    for name in targets:
        prefix, _, attr = name.rpartition(".")
        by_module.setdefault(prefix, []).append(attr)
    for prefix, attrs in by_module.items():
        module = model.get_submodule(prefix)
        _uninstall(module)  # masks installed earlier on this module are replaced, not stacked
        for attr in attrs:
            name = f"{prefix}.{attr}" if prefix else attr
            module.register_buffer(_suffix(attr), keeps[name], persistent=False)
            handle._entries.append(_Entry(name, module, attr, targets[name], keeps[name]))
        keeper = Keeper(attrs, handle)
        keeper.module, keeper.entries = module, [e for e in handle._entries if e.module is module]
        module.register_forward_pre_hook(keeper.before_forward)
        module.register_load_state_dict_post_hook(keeper.after_load)
        handle._modules[id(module)] = module
        if handle.optimizer is not None:
            keeper.adopt(module)  # the optimizer's hooks enforce this module's own tensors
        else:
            keeper.cover(module)
