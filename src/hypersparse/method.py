"""The contract between a training loop and a sparsification method, and the registry behind ``--method``.

A method is a small class: subclass :class:`Method` and write only its decisions (:meth:`Method.update_mask`, and
where it needs them :meth:`Method.init_mask` and :meth:`Method.final_mask`); the base class keeps the bookkeeping
(epochs, phases, masks, checkpoint state). :func:`register_method` makes it ``--method NAME``: one entry supplies its
settings section, its help, its ``--compare`` entry, its run label and what ``tune``, ``eval``, ``export`` and
``report`` need. The built-in methods register through the same call (:mod:`hypersparse.methods`), and a plugin
through its entry point or ``--plugin`` (see docs/extending.md).

Every front end (the CLI engine, the Lightning and Hugging Face callbacks) drives a method through
:class:`~hypersparse.driver.Driver`, which calls the members of :class:`Method` and nothing else. ART
(:class:`~hypersparse.schedule.ART`) has its own schedule and implements those members itself.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from hypersparse.errors import refuse_builtin_override
from hypersparse.masks import Masks, check_ceiling, magnitude_masks, zero_pruned_
from hypersparse.params import ModuleFilter, check_sparsity, prunable_parameters
from hypersparse.plugins import note_registrar
from hypersparse.regularizers import Regularizer

Score = Callable[[nn.Module], float]


class EpochResult(str):
    """What an epoch ended with: the event (equal to ``"warmup"``, ``"regularize"``, ``"stop"``, ...) and its record.

    The event is the phase the epoch trained in, or ``"stop"`` when the mask
    was fixed at its end. ``record`` holds the method's own fields for the
    metrics row.
    """

    record: dict

    def __new__(cls, event: str, record: dict | None = None) -> "EpochResult":
        out = super().__new__(cls, event)
        out.record = dict(record or {})
        return out

    @property
    def event(self) -> str:
        return str(self)


class Method(ABC):
    """A sparsification method with the bookkeeping done: a subclass writes :meth:`update_mask` (and, if it needs
    them, :meth:`init_mask`, :meth:`final_mask`, :meth:`before_step` and :meth:`record`).

    Phases: ``warmup`` (``dense_epochs``, dense) -> :attr:`sparse_phase` (``sparse_epochs``: the method's own) ->
    ``finetune`` (``finetune_epochs``, the mask fixed). The mask is ``masks`` (``{name: bool tensor}``, True =
    kept, names as :func:`~hypersparse.params.prunable_parameters` gives them); the driver keeps pruned weights at
    zero from the next step on. ``step`` counts optimizer steps since the run began.
    """

    regularizer: Regularizer | None = None  # none: nothing is added to the gradients
    lam = 0.0
    needs_scores = False  # end_epoch is given no accuracies
    sparse_phase = "prune"  # the middle phase's name in the logs
    mask_moves = True  # False: the mask init_mask chooses holds for good (pruning at initialization)
    _STATE = ("epoch", "finetune_done", "phase", "masks", "chosen_epoch", "step")  # what a checkpoint keeps

    def __init__(self, sparsity: float, dense_epochs: int = 0, sparse_epochs: int = 0, finetune_epochs: int = 0,
                 steps_per_epoch: int = 1, filter: ModuleFilter | None = None,
                 max_layer_sparsity: float | None = None):
        self.sparsity = check_sparsity(sparsity)
        self.filter = filter  # which weights are prunable (default: every Linear/Conv weight)
        # None: the default ceiling, 1 - (1 - sparsity) / 10 (masks.global_keep)
        self.max_layer_sparsity = None if max_layer_sparsity is None else check_ceiling(max_layer_sparsity,
                                                                                         self.sparsity)
        self.dense_epochs, self.sparse_epochs = int(dense_epochs), int(sparse_epochs)
        self.finetune_epochs = int(finetune_epochs)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.epoch = self.finetune_done = self.step = 0
        self.phase = "warmup" if self.dense_epochs else self.sparse_phase if self.sparse_epochs else "finetune"
        self.masks: Masks | None = None
        self.chosen_epoch: int | None = None
        self.model: nn.Module | None = None  # the model start() was given

    # -- the method's own decisions ----------------------------------------------------------------------------
    def init_mask(self, model: nn.Module) -> Masks | None:
        """The mask the sparse phase starts from; None: dense until :meth:`update_mask` gives one."""
        return None

    @abstractmethod
    def update_mask(self, model: nn.Module) -> Masks | None:
        """After each optimizer step of the sparse phase: a new mask (a new dict), or None to keep the current one."""

    def final_mask(self, model: nn.Module) -> Masks:
        """The mask fine-tuning keeps (default: the global magnitude mask at the target sparsity)."""
        return self.magnitude_masks(model, self.sparsity)

    def before_step(self) -> None:
        """After backward, before the optimizer's step: ``p.grad`` holds the dense gradients, pruned weights'
        included (the mask is applied to them inside the step)."""

    def record(self, event: str) -> dict:
        """The method's own fields for this epoch's metrics row (``event``: what the epoch ended with)."""
        return {}

    # -- helpers for those decisions ---------------------------------------------------------------------------
    @property
    def sparse_start(self) -> int:
        """The optimizer step at which the sparse phase begins."""
        return self.dense_epochs * self.steps_per_epoch

    @property
    def sparse_steps(self) -> int:
        """The sparse phase's length in optimizer steps."""
        return max(1, self.sparse_epochs * self.steps_per_epoch)

    @property
    def sparse_step(self) -> int:
        """Optimizer steps done in the sparse phase."""
        return self.step - self.sparse_start

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The prunable weights, by the names the masks use."""
        return dict(prunable_parameters(model, self.filter))

    def magnitude_masks(self, model: nn.Module, sparsity: float) -> Masks:
        """Global magnitude masks at ``sparsity`` under this run's per-layer ceiling."""
        return magnitude_masks(model, sparsity, filter=self.filter, max_layer_sparsity=self.max_layer_sparsity)

    # -- what the loop calls (through the driver) ----------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.phase == "finetune" and self.finetune_done >= self.finetune_epochs

    @property
    def fine_tuning(self) -> bool:
        """The learning-rate schedule's steps apply."""
        return self.phase == "finetune"

    @property
    def mask_fixed(self) -> bool:
        """The mask holds for good (fine-tuning, or a mask chosen at initialization): the loop may compact."""
        return self.masks is not None and (self.phase == "finetune" or not self.mask_moves)

    @property
    def warmup_ends(self) -> bool:
        """True during the last dense epoch (before its end_epoch): the dense baseline is measured now."""
        return self.phase == "warmup" and self.epoch + 1 >= self.dense_epochs

    def start(self, model: nn.Module) -> None:
        """Before the first epoch and after a resume: a run without dense epochs takes its first mask now."""
        self.model = model
        if self.epoch == 0 and self.masks is None and self.phase != "warmup":
            self._set(model, self.init_mask(model))
            if self.masks is None and self.phase == "finetune":
                self._set(model, self.final_mask(model))

    def begin_epoch(self, lr: float, momentum: float, steps_per_epoch: int) -> str | None:
        return None

    def after_step(self, model: nn.Module) -> None:
        self.step += 1
        if self.phase == self.sparse_phase and self.mask_moves:
            self._set(model, self.update_mask(model))

    def end_epoch(self, model: nn.Module, dense_acc: float | None = None, pruned_acc: Score | None = None
                  ) -> EpochResult:
        event = self.phase
        self.epoch += 1
        if self.phase == "finetune":
            self.finetune_done += 1
        elif self.phase == "warmup" and self.epoch >= self.dense_epochs:
            if self.sparse_epochs:
                self.phase = self.sparse_phase
                self._set(model, self.init_mask(model))
            else:
                event = self._fix(model)
        elif self.phase == self.sparse_phase and self.epoch >= self.dense_epochs + self.sparse_epochs:
            event = self._fix(model)
        return EpochResult(event, self.record(event))

    def _fix(self, model: nn.Module) -> str:
        """The sparse phase ends: the final mask (``"stop"``), or the one chosen at initialization kept."""
        event = self.phase
        if self.mask_moves or self.masks is None:
            self._set(model, self.final_mask(model))
            if self.masks is None:  # fine-tuning would train a dense model and call it sparse
                raise RuntimeError(f"{type(self).__name__}.final_mask gave no mask; it must return one")
            self.chosen_epoch, event = self.epoch, "stop"
        self.phase = "finetune"
        return event

    def _set(self, model: nn.Module, masks: Masks | None) -> None:
        """Hold ``masks`` and zero what it prunes now (the driver keeps it zero from the next step on)."""
        if masks is None:
            return
        if self.masks is None and not self.mask_moves:
            self.chosen_epoch = self.epoch
        self.masks = masks
        named = self.weights(model)
        zero_pruned_([named[n] for n in masks], masks.values())

    def state_dict(self) -> dict:
        return {k: copy.deepcopy(getattr(self, k)) for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            if k in state:  # "step" is absent from checkpoints of before it was kept (oneshot, snip)
                setattr(self, k, copy.deepcopy(state[k]))


# -- the registry ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """What a method's ``build`` is given: the run's settings and budget, and the model."""

    cfg: Any  # the run's TrainConfig
    model: nn.Module
    settings: Any  # the method's own settings section (an instance of its dataclass), or None
    sparsity: float
    dense_epochs: int  # warm-up (0 with --pretrained)
    sparse_epochs: int  # the epochs between warm-up and fine-tuning (--prune-epochs, scaled)
    finetune_epochs: int
    steps_per_epoch: int
    first_batch: Callable[[], tuple]  # () -> (inputs, labels): one training batch, e.g. to score at initialization
    filter: ModuleFilter | None
    max_layer_sparsity: float | None

    @property
    def budget(self) -> dict:
        """:class:`Method`'s arguments for this run, so that ``MyMethod(**setup.budget)`` runs on its phases."""
        return {"sparsity": self.sparsity, "dense_epochs": self.dense_epochs, "sparse_epochs": self.sparse_epochs,
                "finetune_epochs": self.finetune_epochs, "steps_per_epoch": self.steps_per_epoch,
                "filter": self.filter, "max_layer_sparsity": self.max_layer_sparsity}


@dataclass(frozen=True)
class MethodEntry:
    """One registered method (see :func:`register_method` for the fields)."""

    name: str
    settings: type | None
    build: Callable[[Setup], Any]
    help: str
    uses: tuple[str, ...]
    compare: bool
    tune: bool
    label: Callable[[dict], str] | None
    rules: Callable[[Any, str], str | None] | None
    state: Any
    plan: str

    @property
    def sections(self) -> tuple[str, ...]:
        """The settings sections that apply to this method: its own, then those it uses."""
        return ((self.name,) if self.settings is not None else ()) + self.uses


#: what this registry holds, in messages and in the error boundary's record of who registered what
KIND = "method"
_METHODS: dict[str, MethodEntry] = {}
_SECTIONS: dict[str, type] = {}  # the methods' settings sections, in registration order
_NAME = r"[a-z][a-z0-9_-]{0,31}"
_builtins_loaded = False


def register_method(name: str, settings: type | None, build: Callable[[Setup], Any], *, help: str = "",
                    uses: tuple[str, ...] = ("baseline",), compare: bool = True, tune: bool = False,
                    label: Callable[[dict], str] | None = None, rules: Callable[[Any, str], str | None] | None = None,
                    state: Any = None, plan: str = "pruning epochs") -> None:
    """Make ``build(setup) -> Method`` available as ``--method name``.

    Args:
        settings: a frozen dataclass: its fields become the settings of section ``name`` (``--set name.field``,
            a flag each unless the field's metadata says ``flag: False``), or None for a method without any.
        build: called once per run with a :class:`Setup`.
        help: one line for ``--method``'s help.
        uses: other sections it reads; ``baseline`` gives it ``--prune-epochs``, the epochs between warm-up and
            fine-tuning (its ``sparse_epochs``). A setting of a section the chosen method neither owns nor uses is
            an error.
        compare: ``--compare`` may name it. tune: ``hypersparse tune`` applies (it searches ART's lambda_init and eta).
        label: ``config.json``'s settings -> the run's label in tables and figures (default: ``name``).
        rules: ``(cfg, "section.key") -> why the setting does not apply``, or None, for its own sections' settings.
        state: a :mod:`hypersparse.schema` spec of its ``state_dict()``, checked when a checkpoint is read.
        plan: what its middle phase does, for the plan line (``"12 pruning epochs"``).
    """
    _load_builtins()  # the built-in methods come first, in --help and in the sections' order
    if not isinstance(name, str) or not re.fullmatch(_NAME, name):
        raise ValueError(f"a method's name is lower-case letters, digits, - and _ (at most 32), got {name!r}")
    if settings is not None and not (dataclasses.is_dataclass(settings) and isinstance(settings, type)):
        raise TypeError(f"register_method({name!r}): settings must be a dataclass or None, got {settings!r}")
    if settings is not None and _SECTIONS.get(name, settings) is not settings:
        raise ValueError(f"register_method({name!r}): section {name!r} already holds {_SECTIONS[name].__name__}")
    if not callable(build):
        raise TypeError(f"register_method({name!r}): build must be callable, got {build!r}")
    old = _METHODS.get(name)
    refuse_builtin_override(KIND, name, old.build if old is not None else None, build)
    note_registrar(KIND, name)
    if settings is not None:
        _SECTIONS[name] = settings
    _METHODS[name] = MethodEntry(name, settings, build, help or name, tuple(uses), compare, tune, label, rules, state,
                                 plan)


def register_section(name: str, settings: type) -> None:
    """A settings section that several methods share (``uses=``), such as ``baseline``."""
    _load_builtins()
    if not re.fullmatch(_NAME, name) or not dataclasses.is_dataclass(settings):
        raise ValueError(f"register_section needs a lower-case name and a dataclass, got {name!r}, {settings!r}")
    _SECTIONS[name] = settings


def _load_builtins() -> None:
    """The built-in methods register when :mod:`hypersparse.methods` is imported, on the first look-up."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True  # first: the import reads the registry too
        try:
            importlib.import_module("hypersparse.methods")
        except BaseException:
            _builtins_loaded = False
            raise


def method_entries() -> dict[str, MethodEntry]:
    """Every registered method by name, the built-in ones first."""
    _load_builtins()
    return _METHODS


def method_sections() -> dict[str, type]:
    """The settings sections the registered methods bring, in registration order."""
    _load_builtins()
    return _SECTIONS


def method_entry(name: str) -> MethodEntry | None:
    """The method registered as ``name``; installed plugins (entry points) are imported first if it is not yet."""
    _load_builtins()
    if name not in _METHODS:
        from hypersparse.plugins import load_entry_points

        load_entry_points()
    return _METHODS.get(name)
