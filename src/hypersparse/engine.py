"""The training loop: a config in; epochs driven through :class:`~hypersparse.driver.Driver`; a run directory out.

Each epoch: train (the driver adds the regularizer's gradient before every
step), score on the validation split, let the method decide
(:meth:`Driver.end_epoch`), log a row, checkpoint. What the rows and files look
like is :mod:`hypersparse.run_write`'s business; what a method does is its own.
"""
from __future__ import annotations

import copy
import math
import os
import shlex
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from hypersparse.checkpoint import VERSION, remove_temporaries
from hypersparse.compact_training import CompactTraining
from hypersparse.config import TrainConfig, transformer_defaults
from hypersparse.data import Splits, load_dataset
from hypersparse.data.loader import DeviceLoader
from hypersparse.device import autocast, pick_device
from hypersparse.distributed import init_distributed, is_rank0, state_digest
from hypersparse.driver import Driver
from hypersparse.errors import RunDiverged, RunStopped, Terminated, UserError, first_line
from hypersparse.evaluate import evaluate, input_record
from hypersparse.masks import sparsity_report
from hypersparse.methods import make_method
from hypersparse.models import check_fit, create_model
from hypersparse.params import prunable_parameters
from hypersparse.plugins import CODE_FLAGS, code_settings, load_plugins, trust_line
from hypersparse.progress import MARK, expected_epochs, plan_text
from hypersparse.run_read import CHECKPOINT, CONFIG, load_run_checkpoint, load_weights, read_json
from hypersparse.run_write import (
    RunFiles,
    RunLock,
    art_course,
    default_run_dir,
    in_use,
    prepare_run_dir,
    remove_created,
)
from hypersparse.stats import StatsCollector
from hypersparse.threads import choose_threads, describe, step_macs, thread_scope
from hypersparse.tracking import check_tracker, open_tracker

#: in summary.json beside the thread count (measured: bench/results/threads-cpu.md)
THREADS_NOTE = ("results can differ in the last digits, and ART's stop epoch with them, under another thread count: "
                "floating-point sums are split across threads; 0 = auto picks the count from the model, not the "
                "machine")


def _check_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """ValueError unless every tensor of the optimizer's per-parameter state (momentum, moments) has its parameter's
    shape and holds finite numbers: torch loads any, and a wrong one would fail or poison the first step."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    if value.shape != p.shape:
                        raise ValueError(f"the optimizer's {key} has shape {tuple(value.shape)} for a parameter of "
                                         f"shape {tuple(p.shape)}")
                    if value.is_floating_point() and not torch.isfinite(value).all():
                        raise ValueError(f"the optimizer's {key} holds NaN or inf")


class Trainer:
    """One run from a config; :meth:`run` trains to the end and returns the summary."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, progress: bool | None = None, out=None,
                 quiet: bool = False, label: str = ""):
        out = sys.stdout if out is None else out  # the stream at call time (a caller may redirect it)
        self.cfg = cfg.validate()
        self._join_processes(Path(run_dir), progress, out, quiet, label)
        torch.manual_seed(cfg.run.seed)
        load_plugins(cfg.run.plugin)
        self.data: Splits = load_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.run.seed, cfg.data.download)
        channels_last = self._build_model()
        self._build_loaders(channels_last)
        self._build_method()
        self._start_records()
        if self.dist.is_main:
            check_tracker(self.cfg.run.log, run_dir)  # before the run folder is made; the tracker opens in run()

    # -- setting up (in this order) ---------------------------------------------
    def _join_processes(self, run_dir: Path, progress: bool | None, out, quiet: bool, label: str) -> None:
        """Under torchrun: one process per rank; only rank 0 prints and writes."""
        self.dist, self.device = init_distributed(pick_device(self.cfg.run.device))
        batch_size = self.cfg.schedule.batch_size
        if self.dist.active and batch_size % self.dist.world:
            raise UserError(f"--batch-size {batch_size} must be divisible by the {self.dist.world} processes; each "
                            "rank trains on an equal share of every batch")
        self.progress = self.dist.is_main and (sys.stderr.isatty() if progress is None else progress)
        self.files = RunFiles(run_dir, self.dist.is_main, out, self.progress, quiet, label)

    def _build_model(self) -> bool:
        """The model on the device, its prunable weights checked; returns whether it runs channels-last."""
        cfg, d = self.cfg, self.data
        self.model = create_model(cfg.model.model, d.num_classes, d.in_channels, d.image_size)
        if cfg.model.model.startswith("hf:"):
            self.cfg = cfg = transformer_defaults(cfg, self.model)
        self.selection = cfg.selection  # which weights are prunable, and the per-layer ceiling
        self.prunable = self.selection["filter"]
        if self.prunable is not None:
            try:
                self.prunable.check(self.model)
            except ValueError as exc:
                raise UserError(f"--{exc}") from None
        if cfg.model.pretrained:
            load_weights(self.model, cfg.model.pretrained, cfg.model.model, what="--pretrained")
            start = sparsity_report(self.model, self.prunable).sparsity
            if start > cfg.sparsity.sparsity + 1e-9:  # allowed (a denser model from a sparse one), but said
                target = cfg.sparsity.sparsity
                warnings.warn(f"--pretrained {cfg.model.pretrained} is {start:.2%} sparse already, more than "
                              f"--sparsity {target:g}: the run ends {target:.2%} sparse, so weights that are zero now "
                              "may grow back", stacklevel=2)
        # NHWC convolutions: 1.8x faster LeNet-5 steps on CPU, the fast layout for bf16 on GPU
        channels_last = self.device.type == "cuda" or any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        self.model.to(self.device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        return channels_last

    def _build_loaders(self, channels_last: bool) -> None:
        """The training batches (this rank's share), the thread count, and the subset that scores pruned copies."""
        cfg, d, s = self.cfg, self.data, self.cfg.schedule
        self.train_loader = DeviceLoader(d.train_x, d.train_y, s.batch_size, d.mean, d.std, self.device, d.augment,
                                         True, cfg.run.seed, channels_last, s.epoch_fraction)
        # before the run folder exists: a model that cannot take the data fails here, with nothing written
        check_fit(self.model, cfg.model.model, self.train_loader.normalize(d.train_x[:2]), d.num_classes)
        self.threads = choose_threads(cfg.run.threads, self.device, lambda: step_macs(
            self.model, next(iter(self.train_loader.batches(epoch=-1)))[0]))
        self.shard_loader = self.train_loader  # what this rank trains on
        if self.dist.active:
            self.shard_loader = copy.copy(self.train_loader)
            self.shard_loader.rank, self.shard_loader.world = self.dist.rank, self.dist.world
        # the fixed training subset that scores pruned copies (and, with the matched criterion, the dense model)
        n = len(d.train_x) if cfg.art.pruned_eval_size == 0 else min(cfg.art.pruned_eval_size, len(d.train_x))
        subset = torch.randperm(len(d.train_x), generator=torch.Generator().manual_seed(cfg.run.seed + 1))[:n]
        self.subset = (d.train_x[subset].to(self.device), d.train_y[subset].to(self.device))

    def _build_method(self) -> None:
        """The method, the driver that runs it, and the optimizer."""
        cfg, s = self.cfg, self.cfg.schedule
        self.method = make_method(cfg, self.model, len(self.train_loader),
                                  lambda: next(iter(self.train_loader.batches(epoch=-1))))
        art = cfg.sparsity.method == "art"
        self.driver = Driver(self.method, cfg.art.criterion if art else "matched",
                             reset_optimizer=cfg.art.reset_optimizer if art else True)
        # foreach: one call per operation for all tensors rather than one per tensor, the same arithmetic (on the CPU
        # torch's default is per tensor; compacted fine-tuning's small tensors pay its per-call cost)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=s.lr, momentum=s.momentum,
                                         weight_decay=s.weight_decay,
                                         foreach=True if self.device.type == "cpu" else None)
        self.ddp: nn.Module | None = None
        self.compact: CompactTraining | None = None  # the compacted network fine-tuning trains, once the mask is fixed

    def _start_records(self) -> None:
        """What the run keeps as it goes (all of it checkpointed) and the statistics collector."""
        cfg = self.cfg
        self.metrics: list[dict] = []
        self.best: dict | None = None  # best validation accuracy among sparse epochs
        self.dense: dict | None = None
        self.phase_seconds: dict[str, float] = {}
        self.pruned_per_class: list[float] = []
        named = prunable_parameters(self.model, self.prunable)
        self.stats = StatsCollector([n for n, _ in named], [p for _, p in named], cfg.sparsity.sparsity, cfg.run.seed,
                                    max_layer_sparsity=self.selection["max_layer_sparsity"]) \
            if cfg.run.stats and self.dist.is_main else None
        self._compile_said = False
        self.show_summary = True  # False when the caller's step after the run shows it (engine.train's ``then``)
        self.files.expected = lambda: expected_epochs(self.cfg, self.metrics, self.method.phase)

    # -- pieces ---------------------------------------------------------------
    def _lr(self) -> float:
        lr = self.cfg.schedule.lr
        if not self.method.fine_tuning:
            return lr
        steps = sum(self.method.finetune_done >= m for m in self.cfg.milestones)
        return lr * self.cfg.schedule.lr_decay ** steps

    def _evaluate(self, model, x, y, per_class: list | None = None) -> float:
        """Accuracy on ``x, y``; under torchrun each rank scores its share and the counts are summed."""
        normalize = self.train_loader.normalize
        if not self.dist.active:
            return evaluate(model, x, y, normalize, per_class=per_class)
        x, y = x[self.dist.rank :: self.dist.world], y[self.dist.rank :: self.dist.world]
        acc = evaluate(model, x, y, normalize, per_class=per_class)  # per class: rank 0's share only
        correct, n = self.dist.sum(round(acc * len(x)), len(x))
        return correct / max(1.0, n)

    def accuracy(self, split: str) -> float:
        x, y = {"val": (self.data.val_x, self.data.val_y), "test": (self.data.test_x, self.data.test_y)}[split]
        return self._evaluate(self.model, x, y)

    def pruned_accuracy(self, model) -> float:
        """Scores a model on the fixed training subset (and keeps its per-class accuracy for the report)."""
        return self._evaluate(model, *self.subset, per_class=self.pruned_per_class)

    def _forward_model(self) -> nn.Module:
        """The model the training step calls: wrapped in DistributedDataParallel under torchrun."""
        if not self.dist.active:
            return self.model
        if self.ddp is None:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        return self.ddp

    def _compacted(self) -> CompactTraining | None:
        """The compacted network to train this epoch: built once the mask is fixed (also after a resume)."""
        if self.compact is None and self.method.mask_fixed and self.cfg.run.compact_finetune and not self.dist.active:
            self.compact = self.driver.compacted(self.model, self.optimizer)
        if self.compact is not None:
            self.compact.sync_settings()  # this epoch's learning rate
        return self.compact

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training set; returns (mean loss, running training accuracy)."""
        model, opt, driver = self.model, self.optimizer, self.driver
        forward = self._forward_model()
        compact = self._compacted()
        if compact is not None:  # the same training on fewer units; written back below
            forward, opt = compact.model, compact.optimizer
        forward.train()
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        batches, seen, n = self.shard_loader.batches(epoch), 0, len(self.shard_loader)
        total, how = expected_epochs(self.cfg, self.metrics, self.method.phase)
        for i, (xb, yb) in enumerate(batches):
            if self.progress:  # the line as after the last epoch, with this one's batches counted
                self.files.show(f"{self.method.phase} · epoch {epoch + 1}/{MARK[how]}{total}, batch {i + 1}/{n}")
            with autocast(self.device):
                out = forward(xb)
                loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # under DDP the task gradients are averaged over the ranks here
            driver.before_step(opt)  # SGD's step may be taken here, in C (fused with HyperSparse while it acts)
            opt.step()
            driver.after_step(model)
            total_loss += loss.detach().float() * len(yb)
            correct += (out.argmax(1) == yb).sum()
            seen += len(yb)
        if compact is not None:
            compact.write_back()  # the full model is what is scored, checkpointed and saved
        # one host sync per epoch, not per step; under torchrun the sums run over all ranks
        loss_sum, n_correct, n = self.dist.sum(float(total_loss), int(correct), seen)
        mean_loss = loss_sum / max(1.0, n)
        if not math.isfinite(mean_loss):
            raise RunDiverged(
                f"training diverged: the loss became {mean_loss} in epoch {epoch} ({self.method.phase}, "
                f"lambda={driver.lam:g}); lower --lr or --lambda-init/--eta. " + (
                    f"The last good checkpoint is kept: {self.files.path / CHECKPOINT}"
                    if (self.files.path / CHECKPOINT).exists() else "No checkpoint yet (no epoch had finished).")
            )
        return mean_loss, n_correct / max(1.0, n)

    # -- checkpoints ----------------------------------------------------------
    def state(self) -> dict:
        return {
            "version": VERSION,
            "identity": self.cfg.identity,
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "metrics": self.metrics,
            "best": self.best,
            "dense": self.dense,
            "phase_seconds": self.phase_seconds,
            "stats": self.stats.state_dict() if self.stats else None,
        }

    def load_state(self, ckpt: dict) -> None:
        """Restore a checkpoint (schema-checked); one line if its tensors do not fit this run's model and method."""
        try:
            own = self.model.state_dict()
            for k, v in ckpt["model"].items():  # load_state_dict would cast (complex to real, with a warning)
                if k in own and isinstance(v, torch.Tensor) and v.dtype != own[k].dtype:
                    raise ValueError(f"its {k} is {v.dtype}, the model's is {own[k].dtype}")
            self.model.load_state_dict(ckpt["model"])
            reference = self.model.state_dict()
            # model states held for later (the best sparse model; ART's buffer) must fit this model too
            kept = ([ckpt["best"]["state"]] if ckpt["best"] else []) + [b["state"] for b in
                                                                        ckpt["method"].get("buffer", [])]
            for saved in kept:
                if {k: (v.shape, v.dtype) for k, v in saved.items()} != \
                        {k: (v.shape, v.dtype) for k, v in reference.items()}:
                    raise ValueError("a model state it keeps for later has other tensors than the model")
            self.method.load_state_dict(ckpt["method"])
            if [row["epoch"] for row in ckpt["metrics"]] != list(range(self.method.epoch)):
                raise ValueError(f"its metrics list has {len(ckpt['metrics'])} epochs, but its method has run "
                                 f"{self.method.epoch}")
            self.driver.sync_masks(self.model, self.optimizer)  # before the optimizer's state, which it would mask
            for state in ckpt["optimizer"]["state"].values():  # torch would cast these to the weights' type
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.dim() > 0 and not value.is_floating_point():
                        raise ValueError(f"the optimizer's {key} is {value.dtype}, not a floating-point tensor")
            self.optimizer.load_state_dict(ckpt["optimizer"])
            _check_optimizer_state(self.optimizer)
            if not all(torch.isfinite(v).all() for v in reference.values() if v.is_floating_point()):
                raise ValueError("its model holds NaN or inf, which no finished epoch writes")
            if self.stats and ckpt["stats"]:
                self.stats.load_state_dict(ckpt["stats"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            first = first_line(exc, 200)
            raise UserError(f"checkpoint {self.files.path / CHECKPOINT} does not fit its run ({first}); the "
                            "checkpoint is damaged: start the run again") from None
        self.metrics, self.best, self.dense = ckpt["metrics"], ckpt["best"], ckpt["dense"]
        self.phase_seconds = ckpt["phase_seconds"]
        self.files.truncate(self.metrics)

    # -- the loop -------------------------------------------------------------
    def run(self) -> dict:
        if self.dist.is_main and self.files.tracker is None:  # opened once the run folder exists (it writes there)
            self.files.tracker = open_tracker(self.cfg.run.log, self.files.path, self.cfg.to_dict())
        if self.dense is None and self.cfg.model.pretrained:
            self.dense = self._dense_record()  # the dense baseline is the pretrained model
        self.driver.start(self.model, self.optimizer)
        while not self.driver.done:
            self.epoch()
        return self.finish()

    def epoch(self) -> None:
        """Train one epoch, let the method decide, log and checkpoint."""
        method, epoch, phase, lr = self.method, self.method.epoch, self.method.phase, self._lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        note = self.driver.begin_epoch(self.optimizer, len(self.train_loader))
        if note:
            self.files.say(note)
        if getattr(method.regularizer, "compiled", False) and method.lam and not self._compile_said:
            self._compile_said = True  # the first regularization step compiles; a minute of silence otherwise
            self.files.say("compiling the HyperSparse pass with torch.compile (once per run; up to a minute on a "
                           "small CPU; --set hs.hs_compile=off skips it)")
            self.files.show("compiling the HyperSparse pass with torch.compile...", force=True)
        scored, was_fine_tuning = method.needs_scores, method.fine_tuning
        t0 = time.perf_counter()
        loss, train_acc = self.train_epoch(epoch)
        t_train = time.perf_counter()
        val_acc = self.accuracy("val")
        dense_now = self._dense_record(val_acc) if method.warmup_ends else None  # before end_epoch, which may prune
        t1 = time.perf_counter()
        result = self.driver.end_epoch(self.model, self.pruned_accuracy, self.optimizer, train_acc)
        t2 = time.perf_counter()
        stats = None
        if self.stats:  # always at the epochs the report needs; elsewhere within the collector's time budget
            stats = self.stats.maybe_collect(method.regularizer, t2 - t0,
                                             scored or method.phase != phase or method.done)
        if stats is not None:
            stats = {"epoch": epoch, "phase": phase, "event": result.event, **stats,
                     **({"pruned_per_class": list(self.pruned_per_class)} if scored else {})}
        t3 = time.perf_counter()
        if dense_now is not None:
            self.dense = dense_now
        row = {"epoch": epoch, "phase": phase, "event": result.event, "lr": lr, "loss": loss, "train_acc": train_acc,
               "val_acc": val_acc, "sparsity": sparsity_report(self.model, self.prunable).sparsity, "seconds": t3 - t0,
               "train_seconds": t_train - t0, "measure_seconds": t2 - t1, "stats_seconds": t3 - t2, **result.record}
        if was_fine_tuning or (result == "stop" and method.fine_tuning):
            self._select(row, epoch, val_acc, result == "stop")
        self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + row["seconds"]
        self.metrics.append(row)
        self.files.record_epoch(row, stats, self.state())

    def _dense_record(self, val_acc: float | None = None) -> dict:
        report = sparsity_report(self.model, self.prunable)  # a --pretrained model may already be sparse
        return {"epoch": self.method.epoch + (val_acc is not None), "val_acc": self.accuracy("val") if val_acc is None
                else val_acc, "test_acc": self.accuracy("test"), "sparsity": report.sparsity, "kept": report.kept}

    def _select(self, row: dict, epoch: int, val_acc: float, stopped: bool) -> None:
        """Model selection on the validation split, only among sparse models."""
        val_now = self.accuracy("val") if stopped else val_acc
        if stopped:
            row["val_acc_after_stop"] = val_now  # the chosen pruned model; val_acc is the epoch's trained model
        if self.best is None or val_now > self.best["val_acc"]:
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            self.best = {"epoch": epoch, "val_acc": val_now, "state": state}

    def finish(self) -> dict:
        if self.best is not None:
            self.model.load_state_dict(self.best["state"])
        report = sparsity_report(self.model, self.prunable)
        if report.dead_layers:  # global pruning emptied a whole tensor: worth knowing before using the model
            self.files.say(f"note: every weight of {', '.join(report.dead_layers)} is zero (global pruning removed "
                           "the whole layer)")
        summary = {
            "config": self.cfg.to_dict(),
            "dense": self.dense,
            "sparse": {"epoch": self.best["epoch"] if self.best else None, "val_acc": self.accuracy("val"),
                       "test_acc": self.accuracy("test"), "sparsity": report.sparsity, "kept": report.kept,
                       "numel": report.numel},
            "epochs": {p: sum(1 for m in self.metrics if m["phase"] == p)
                       for p in dict.fromkeys(m["phase"] for m in self.metrics)},
            "art": art_course(self.metrics),
            "threads": {**self.threads, "note": THREADS_NOTE},
            "phase_seconds": self.phase_seconds,
            "device": str(self.device),
            "arch": {"model": self.cfg.model.model, "num_classes": self.data.num_classes,
                     "in_channels": self.data.in_channels, "image_size": self.data.image_size},
            "input": input_record(self.data),
        }
        if self.dist.active:
            digests = self.dist.gather(state_digest(self.model, self.method.masks))
            summary["distributed"] = {"world_size": self.dist.world, "backend": self.dist.backend,
                                      "rank_digests": digests, "ranks_identical": len(set(digests)) == 1}
        self.files.write_result(summary, self.model.state_dict(), show=self.show_summary)
        return summary


#: what a caller runs after the run, inside its lock: (the run's config, its files, its summary) -> the summary
Then = Callable[[TrainConfig, RunFiles, dict], dict]


def check_setup(cfg: TrainConfig, where: Path) -> None:
    """What :func:`train` checks before it writes anything (the settings, the data, the model, and one batch of the
    data through the model), for a command that makes a folder of its own before its first run (tune: ``where``,
    its study folder). Nothing is written."""
    with thread_scope(), open(os.devnull, "w") as quiet:
        trainer = Trainer(cfg, where, progress=False, out=quiet, quiet=True)
        trainer.files.close()


def train(cfg: TrainConfig, run_dir: str | Path | None = None, progress: bool | None = None, out=None,
          quiet: bool = False, label: str = "", then: Then | None = None) -> dict:
    """Run ``cfg`` from scratch in ``run_dir`` (default: ``cfg.run.run_dir``, else a new folder under ``runs/``).

    The data and the model are built, and one batch goes through the model, before the run folder is created, so a
    run that cannot start leaves nothing behind; the folder is then locked (:class:`~hypersparse.run_write.RunLock`).
    ``progress``: keep a progress line on stderr (default: when stderr is a terminal). ``quiet``: print only the
    progress (as ``label``), not the epoch lines and the summary. ``then`` runs after the run, still inside its lock
    (``--compare``'s baselines: :func:`hypersparse.compare.train`), and prints the summary itself.
    """
    dist, _ = init_distributed(pick_device(cfg.validate().run.device))
    target = Path(run_dir) if run_dir else Path(cfg.run.run_dir) if cfg.run.run_dir else default_run_dir(cfg)
    target = Path(dist.broadcast(str(target)))  # the default name holds the time: rank 0's counts
    holder = RunLock.holder(target) if dist.is_main else None
    if holder is not None:  # checked first (and again under the lock): the message that says what is going on
        raise UserError(in_use(target, holder))
    if (target / CHECKPOINT).exists():
        raise UserError(f"run directory {target} already holds a run; continue it with --resume {target} or pick "
                        "another --run-dir")
    with thread_scope():
        trainer = Trainer(cfg, target, progress, out, quiet, label)
        created, lock, error = None, None, None
        if dist.is_main:
            try:
                created, lock = prepare_run_dir(target, trainer.cfg.to_dict())
            except UserError as exc:
                error = str(exc)
        error = dist.broadcast(error)
        if error:
            raise UserError(error)
        trainer.files.lock = lock
        try:
            try:
                trainer.files.write_config(trainer.cfg)  # with the defaults the model chose (hf: models)
            except BaseException:
                if lock is not None:
                    lock.release()
                    remove_created(target, created)
                raise
            with stopped_cleanly(target):
                trainer.files.say(f"run directory: {target}" + (f" ({dist.world} processes, {dist.backend})"
                                                                if dist.active else ""))
                trainer.files.say(plan_text(trainer.cfg))
                trainer.files.say(describe(trainer.threads))
                return _then(trainer, then)
        finally:
            trainer.files.close()
            if lock is not None:
                lock.release()


@contextmanager
def stopped_cleanly(run_dir: Path):
    """Ctrl-C or SIGTERM during a run: RunStopped, whose message names the real folder and what it holds."""
    try:
        yield
    except KeyboardInterrupt as exc:
        code = 143 if isinstance(exc, Terminated) else 130
        what = "terminated" if code == 143 else "interrupted"
        if (run_dir / CHECKPOINT).exists():
            raise RunStopped(f"{what}; the last complete epoch is checkpointed: continue with hypersparse train "
                             f"--resume {shlex.quote(str(run_dir))}", code) from None
        raise RunStopped(f"{what} before the first epoch finished (no checkpoint yet in {run_dir}); start the run "
                         "again", code) from None


def resume(run_dir: str | Path, progress: bool | None = None, out=None, trust_code: bool = False,
           confirmed: dict | None = None, quiet: bool = False, label: str = "", then: Then | None = None) -> dict:
    """Continue the run in ``run_dir`` from its last checkpoint, with the settings it was started with.

    The checkpoint must be this run's (its identity, a hash of the settings, matches ``config.json``'s). A run whose
    settings name code (a plugin, a model or dataset by import path) resumes only if ``confirmed`` (setting ->
    value, what the user typed beside ``--resume``) repeats each one, or with ``trust_code=True``. ``quiet``,
    ``label`` and ``then`` as for :func:`train`.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder (--resume takes the folder of a run hypersparse train wrote)")
    if not (path / CHECKPOINT).exists():
        raise UserError(f"{path} holds no checkpoint to resume (no epoch has finished yet); start a new run without "
                        "--resume")
    lock = RunLock(path).acquire() if is_rank0() else None  # a stray RANK without torchrun locks too
    try:
        remove_temporaries(path)
        ckpt = load_run_checkpoint(path / CHECKPOINT)
        config = read_json(path / CONFIG)
        if TrainConfig.from_dict(ckpt["config"], check=False).identity != ckpt["identity"]:
            # its own settings no longer hash to what it recorded: this version reads them otherwise
            raise UserError(f"checkpoint {path / CHECKPOINT} was written by another version of hypersparse (its "
                            "settings read differently now); start this run again")
        if config is None or TrainConfig.from_dict(config, check=False).identity != ckpt["identity"]:
            raise UserError(f"checkpoint {path / CHECKPOINT} belongs to another run (its settings differ from "
                            f"{path / CONFIG}'s); resume the folder it was written in, or start this run again")
        _require_confirmed(ckpt["config"], confirmed or {}, trust_code, path)
        with thread_scope():
            trainer = Trainer(TrainConfig.from_dict(ckpt["config"]), path, progress, out, quiet, label)
            trainer.files.lock = lock
            try:
                trainer.load_state(ckpt)
                with stopped_cleanly(path):
                    trainer.files.say(f"resuming {path} after epoch "
                                      f"{trainer.metrics[-1]['epoch'] if trainer.metrics else -1}")
                    trainer.files.say(describe(trainer.threads))
                    return _then(trainer, then)
            finally:
                trainer.files.close()
    finally:
        if lock is not None:
            lock.release()


def _require_confirmed(config: dict, confirmed: dict, trust_code: bool, path: Path) -> None:
    """UserError unless each setting of ``config`` that names code is confirmed by the same value, and nothing
    confirmed differs from the run's own setting (``--resume`` changes no setting)."""
    needed = code_settings(config)
    for key, value in confirmed.items():
        section, name = key.split(".")
        own = (config.get(section) or {}).get(name)
        if value is not None and value != own:
            raise UserError(f"{CODE_FLAGS[key]} {value}: run {path} was started with "
                            f"{CODE_FLAGS[key] + ' ' + str(own) if own else 'none'}; --resume keeps a run's settings "
                            f"({', '.join(CODE_FLAGS.values())} beside it only confirm the code it names)")
    missing = {k: v for k, v in needed.items() if confirmed.get(k) != v}
    if missing and not trust_code:
        raise UserError(trust_line(missing, f"the run in {path}"))


def _then(trainer: Trainer, then: Then | None) -> dict:
    """The run, then what the caller asked for after it (which shows the summary)."""
    trainer.show_summary = then is None
    summary = trainer.run()
    return summary if then is None else then(trainer.cfg, trainer.files, summary)
