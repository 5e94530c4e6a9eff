"""The training loop: phases, logging, checkpoints, resume, device and mixed precision.

Data flows one way: a :class:`~hypersparse.config.TrainConfig` comes in; the
loop trains the model and asks the schedule (ART or a baseline method) what to
do each epoch; one JSON line per epoch, an atomic checkpoint per epoch and a
``summary.json`` come out.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from hypersparse.checkpoint import atomic_write, load_checkpoint, save_checkpoint, write_json
from hypersparse.config import TrainConfig
from hypersparse.data import Splits, load_dataset
from hypersparse.data.loader import DeviceLoader
from hypersparse.distributed import init_distributed, state_digest
from hypersparse.errors import RunDiverged, UserError
from hypersparse.masks import apply_masks_, sparsity_report
from hypersparse.methods import make_method
from hypersparse.models import create_model
from hypersparse.params import prunable_parameters
from hypersparse.stats import StatsCollector

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
STATS = "stats.jsonl"
STATS_SHARE = 0.05  # the statistics may cost at most this share of training time, outside the epochs the report needs


def pick_device(name: str) -> torch.device:
    """``auto`` takes cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device must be auto, cpu, cuda or mps, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


def autocast(device: torch.device):
    """bf16 autocast on GPUs; full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, loader_like: DeviceLoader, batch: int = 1024,
             per_class: list | None = None) -> float:
    """Accuracy of ``model`` in eval mode on uint8 images ``x`` (normalised like ``loader_like``).

    With a list ``per_class``, it is filled with each class's accuracy.
    """
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=loader_like.device)
    hits = [] if per_class is not None else None
    for start in range(0, len(x), batch):
        xb = (x[start : start + batch].to(loader_like.device).float() - loader_like.mean) / loader_like.std
        if loader_like.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(loader_like.device):
            out = model(xb)
        right = out.argmax(1) == y[start : start + batch].to(loader_like.device)
        correct += right.sum()
        if hits is not None:
            hits.append(right)
    model.train(was)
    if per_class is not None and hits:
        right, labels = torch.cat(hits).cpu(), y.cpu()
        classes = int(labels.max()) + 1
        total = torch.bincount(labels, minlength=classes).clamp_min(1)
        per_class[:] = (torch.bincount(labels[right], minlength=classes) / total).tolist()
    return int(correct) / max(1, len(x))


def _tqdm_available() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = f"{cfg.method}-{cfg.reg}" if cfg.method == "art" else cfg.method
    return Path("runs") / f"{stamp}-{cfg.dataset}-{cfg.model}-{tag}-{cfg.sparsity:g}-seed{cfg.seed}"


def prepare_run_dir(path: Path) -> Path:
    """Create the run directory and prove it is writable, or raise UserError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to run directory {path} ({exc.strerror or exc}); choose another with --run-dir") from None
    if (path / CHECKPOINT).exists():
        raise UserError(f"run directory {path} already holds a run; continue it with --resume {path} or pick another --run-dir")
    return path


class Trainer:
    """One run from a config; :meth:`run` trains to the end and returns the summary."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, progress: bool | None = None, out=sys.stdout):
        self.cfg = cfg.validate()
        self.run_dir = Path(run_dir)
        # under torchrun: one process per rank; only rank 0 prints and writes
        self.dist, self.device = init_distributed(pick_device(cfg.device))
        if self.dist.active and cfg.batch_size % self.dist.world:
            raise UserError(f"--batch-size {cfg.batch_size} must be divisible by the {self.dist.world} processes; "
                            "each rank trains on an equal share of every batch")
        self.out = out if self.dist.is_main else open(os.devnull, "w")
        self.progress = self.dist.is_main and _tqdm_available() and (
            sys.stderr.isatty() if progress is None else progress)
        torch.manual_seed(cfg.seed)
        self.data: Splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.seed, cfg.download)
        self.model = create_model(cfg.model, self.data.num_classes, self.data.in_channels, self.data.image_size)
        if cfg.pretrained:
            self._load_pretrained(cfg.pretrained)
        # NHWC convolutions: 1.8x faster LeNet-5 steps on CPU, the fast layout for bf16 on GPU
        channels_last = self.device.type == "cuda" or any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        self.model.to(self.device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        d = self.data
        self.train_loader = DeviceLoader(
            d.train_x, d.train_y, cfg.batch_size, d.mean, d.std, self.device, d.augment, True, cfg.seed, channels_last,
            cfg.epoch_fraction,
        )
        self.shard_loader = self.train_loader  # what this rank trains on
        if self.dist.active:
            self.shard_loader = copy.copy(self.train_loader)
            self.shard_loader.rank, self.shard_loader.world = self.dist.rank, self.dist.world
        self.ddp: nn.Module | None = None
        # the fixed training subset that scores pruned copies (and, with --criterion matched, the dense model)
        n = len(d.train_x) if cfg.pruned_eval_size == 0 else min(cfg.pruned_eval_size, len(d.train_x))
        subset = torch.randperm(len(d.train_x), generator=torch.Generator().manual_seed(cfg.seed + 1))[:n]
        self.subset = (d.train_x[subset].to(self.device), d.train_y[subset].to(self.device))
        self.method = make_method(cfg, self.model, self.train_loader, self.device)
        self.optimizer = self._new_optimizer()
        self.mask_handle = None
        self.metrics: list[dict] = []
        self.best: dict | None = None  # best validation accuracy among sparse epochs
        self.dense: dict | None = None
        self.phase_seconds: dict[str, float] = {}
        self.pruned_per_class: list[float] = []
        self.stats_budget = 0.0  # seconds of statistics the run may still spend
        self.stats_cost = 0.0  # what the last collection took
        named = prunable_parameters(self.model)
        self.stats = None if cfg.no_stats or not self.dist.is_main else StatsCollector(
            [n for n, _ in named], [p for _, p in named], cfg.sparsity, cfg.seed
        )

    # -- pieces ---------------------------------------------------------------
    def _load_pretrained(self, path: str) -> None:
        try:
            obj = load_checkpoint(path)
        except (OSError, RuntimeError, EOFError) as exc:
            raise UserError(f"cannot read --pretrained {path} ({exc}); pass a state_dict or a run checkpoint") from None
        state = obj.get("model", obj) if isinstance(obj, dict) else obj
        try:
            self.model.load_state_dict(state)
        except (RuntimeError, TypeError) as exc:
            raise UserError(f"--pretrained {path} does not fit model {self.cfg.model!r}: {str(exc).splitlines()[0]}") from None

    def _new_optimizer(self) -> torch.optim.Optimizer:
        c = self.cfg
        return torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def _install_masks(self) -> None:
        if self.mask_handle is not None:
            self.mask_handle.remove()
        self.mask_handle = apply_masks_(self.model, self.method.masks, self.optimizer)

    def _lr(self) -> float:
        if self.method.phase != "finetune":
            return self.cfg.lr
        done = self.method.finetune_done
        return self.cfg.lr * self.cfg.lr_decay ** sum(done >= m for m in self.cfg.milestones)

    def _evaluate(self, model, x, y, per_class: list | None = None) -> float:
        """Accuracy on ``x, y``; under torchrun each rank scores its share and the counts are summed."""
        if not self.dist.active:
            return evaluate(model, x, y, self.train_loader, per_class=per_class)
        x, y = x[self.dist.rank :: self.dist.world], y[self.dist.rank :: self.dist.world]
        acc = evaluate(model, x, y, self.train_loader, per_class=per_class)  # per class: rank 0's share only
        correct, n = self.dist.sum(round(acc * len(x)), len(x))
        return correct / max(1.0, n)

    def accuracy(self, split: str) -> float:
        x, y = {"val": (self.data.val_x, self.data.val_y), "test": (self.data.test_x, self.data.test_y)}[split]
        return self._evaluate(self.model, x, y)

    def subset_accuracy(self, model) -> float:
        return self._evaluate(model, *self.subset)

    def pruned_accuracy(self, model) -> float:
        """Scores the pruned copy during ART (and keeps its per-class accuracy for the report)."""
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

    def train_epoch(self, epoch: int, lam: float) -> tuple[float, float]:
        """One pass over the training set; returns (mean loss, running training accuracy)."""
        model, opt, reg = self.model, self.optimizer, self.method.regularizer
        forward = self._forward_model()
        model.train()
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        batches = self.shard_loader.batches(epoch)
        seen = 0
        if self.progress:
            from tqdm import tqdm

            batches = tqdm(batches, total=len(self.shard_loader), leave=False, desc=f"epoch {epoch} {self.method.phase}")
        for xb, yb in batches:
            with autocast(self.device):
                out = forward(xb)
                loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # under DDP the task gradients are averaged over the ranks here
            if lam and reg is not None:
                reg.add_grad_(lam)
            opt.step()
            self.method.after_step(model)
            total_loss += loss.detach().float() * len(yb)
            correct += (out.argmax(1) == yb).sum()
            seen += len(yb)
        # one host sync per epoch, not per step; under torchrun the sums run over all ranks
        loss_sum, n_correct, n = self.dist.sum(float(total_loss), int(correct), seen)
        mean_loss = loss_sum / max(1.0, n)
        if not math.isfinite(mean_loss):
            raise RunDiverged(
                f"training diverged: the loss became {mean_loss} in epoch {epoch} ({self.method.phase}, lambda={lam:g}); "
                f"lower --lr or --lambda-init/--eta. The last good checkpoint is kept: {self.run_dir / CHECKPOINT}"
            )
        return mean_loss, n_correct / max(1.0, n)

    # -- checkpoints ----------------------------------------------------------
    def state(self) -> dict:
        return {
            "version": 1,
            "config": dataclasses.asdict(self.cfg),
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
        self.model.load_state_dict(ckpt["model"])
        self.method.load_state_dict(ckpt["method"])
        if self.method.masks is not None and self.method.phase in ("finetune", "train"):
            self.optimizer = self._new_optimizer()
            self._install_masks()
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.metrics, self.best, self.dense = ckpt["metrics"], ckpt["best"], ckpt["dense"]
        self.phase_seconds = ckpt["phase_seconds"]
        if self.stats and ckpt.get("stats"):
            self.stats.load_state_dict(ckpt["stats"])
        if not self.dist.is_main:
            return
        # the logs may hold lines written after this checkpoint's epoch: keep only the checkpointed epochs
        lines = "".join(json.dumps(m) + "\n" for m in self.metrics)
        atomic_write(self.run_dir / METRICS, lambda f: f.write(lines), mode="w")
        if (self.run_dir / STATS).exists():
            kept = [l for l in (self.run_dir / STATS).read_text().splitlines() if json.loads(l)["epoch"] < len(self.metrics)]
            atomic_write(self.run_dir / STATS, lambda f: f.write("".join(l + "\n" for l in kept)), mode="w")

    def _calibrate_lambda(self) -> None:
        from itertools import islice

        from hypersparse.methods.art import calibrate_lambda, lambda_for_push

        cfg = self.cfg
        steps = len(self.train_loader)  # one step per global batch
        if cfg.lambda_auto_push > 0:
            value = lambda_for_push(self.method.regularizer, cfg.sparsity, cfg.lambda_auto_push, self._lr(),
                                    cfg.momentum, steps)
            how = f"the regularizer shrinks the weight at the cut by {cfg.lambda_auto_push:g} per epoch of {steps} steps"
        else:
            batches = list(islice(self.train_loader.batches(epoch=-2), cfg.lambda_auto_batches))  # fixed by the seed
            per_epoch = steps if cfg.lambda_auto_per == "epoch" else None
            value = calibrate_lambda(self.model, self.method.regularizer, batches, cfg.lambda_auto_fraction, per_epoch)
            how = f"regularizer gradient norm = {cfg.lambda_auto_fraction:g} x task" + (
                f" per step; / sqrt({steps} steps per epoch / 25)" if per_epoch else "")
        value = self.dist.broadcast(value)  # each rank measured its own share: rank 0's value holds for all
        self.method.lambda_override = value
        print(f"lambda_init auto: {value:.3g} ({how})", file=self.out)

    def _record_dense(self) -> None:
        self.dense = {"epoch": self.method.epoch, "val_acc": self.accuracy("val"), "test_acc": self.accuracy("test")}

    # -- the loop -------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        if self.dense is None and cfg.pretrained:
            self._record_dense()  # the dense baseline is the pretrained model
        self.method.start(self.model)
        if self.mask_handle is None and self.method.masks is not None and self.method.phase in ("finetune", "train"):
            self._install_masks()  # methods that prune before training (SNIP)
        while not self.method.done:
            if self.method.phase == "regularize" and cfg.lambda_init == "auto" and self.method.lambda_override is None:
                self._calibrate_lambda()
            epoch, phase, lam, lr = self.method.epoch, self.method.phase, self.method.lam, self._lr()
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            loss, train_acc = self.train_epoch(epoch, lam)
            val_acc = self.accuracy("val")
            dense_acc = self.subset_accuracy(self.model) if cfg.criterion == "matched" else train_acc
            # measured before end_epoch, which may prune the model (oneshot) when warm-up ends
            dense_now = None
            if phase == "warmup" and self.method.warmup_ends:
                dense_now = {"epoch": epoch + 1, "val_acc": val_acc, "test_acc": self.accuracy("test")}
            t1 = time.perf_counter()
            event = self.method.end_epoch(self.model, dense_acc, self.pruned_accuracy)
            t2 = time.perf_counter()
            stats = None
            self.stats_budget += STATS_SHARE * (t2 - t0)
            # always at the epochs the report needs; elsewhere only while the cost stays within STATS_SHARE of training
            needed = phase == "regularize" or self.method.phase != phase or self.method.done
            if self.stats and (needed or self.stats_budget >= self.stats_cost):
                stats = {"epoch": epoch, "phase": phase, "event": event, **self.stats.collect(self.method.regularizer)}
                if phase == "regularize":
                    stats["pruned_per_class"] = list(self.pruned_per_class)
            t3 = time.perf_counter()
            if stats is not None:
                self.stats_cost = t3 - t2
                self.stats_budget -= self.stats_cost
            if phase == "warmup" and self.method.phase != "warmup":
                self.dense = dense_now
            if event == "stop":
                self.optimizer = self._new_optimizer()  # fine-tuning starts with fresh momentum, as the authors do
                self._install_masks()
            report = sparsity_report(self.model)
            row = {
                "epoch": epoch,
                "phase": phase,
                "event": event,
                "lambda": lam,
                "lambda_init": getattr(self.method, "lambda_override", None) if cfg.lambda_init == "auto" else cfg.lambda_init,
                "lr": lr,
                **({"eta": self.method.eta_now} if cfg.reg_epochs_target and phase == "regularize" else {}),
                "loss": loss,
                "train_acc": train_acc,
                "dense_acc": dense_acc,
                "pruned_acc": self.method.last_pruned_acc if phase == "regularize" else None,
                "pruned_mass": self.method.last_pruned_mass if phase == "regularize" else None,
                "val_acc": val_acc,
                "sparsity": report.sparsity,
                "seconds": t3 - t0,
                "measure_seconds": t2 - t1,
                "stats_seconds": t3 - t2,
            }
            if event == "stop" and getattr(self.method, "stop_reason", None):
                row["stop_reason"] = self.method.stop_reason  # "deadline": the stop rule had not yet held
            if phase == "regularize" and self.method.last_past_deadline is not None:
                row["past_deadline"] = self.method.last_past_deadline  # too little progress for the deadline to cut
            if phase == "finetune" or (event == "stop" and self.method.phase == "finetune"):
                # model selection on the validation split, only among sparse models
                val_now = self.accuracy("val") if event == "stop" else val_acc
                if event == "stop":
                    row["val_acc_after_stop"] = val_now  # the chosen pruned model; val_acc is the epoch's trained model
                if self.best is None or val_now > self.best["val_acc"]:
                    self.best = {
                        "epoch": epoch,
                        "val_acc": val_now,
                        "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                    }
            self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + row["seconds"]
            self.metrics.append(row)
            if self.dist.is_main:
                save_checkpoint(self.state(), self.run_dir / CHECKPOINT)
                with open(self.run_dir / METRICS, "a") as f:
                    f.write(json.dumps(row) + "\n")
                if stats is not None:
                    with open(self.run_dir / STATS, "a") as f:
                        f.write(json.dumps(stats) + "\n")
                self._print_epoch(row)
        return self.finish()

    def finish(self) -> dict:
        if self.best is not None:
            self.model.load_state_dict(self.best["state"])
        report = sparsity_report(self.model)
        summary = {
            "config": dataclasses.asdict(self.cfg),
            "dense": self.dense,
            "sparse": {
                "epoch": self.best["epoch"] if self.best else None,
                "val_acc": self.accuracy("val"),
                "test_acc": self.accuracy("test"),
                "sparsity": report.sparsity,
                "kept": report.kept,
                "numel": report.numel,
            },
            "epochs": {p: sum(1 for m in self.metrics if m["phase"] == p) for p in dict.fromkeys(m["phase"] for m in self.metrics)},
            "phase_seconds": self.phase_seconds,
            "device": str(self.device),
            "arch": {"model": self.cfg.model, "num_classes": self.data.num_classes,
                     "in_channels": self.data.in_channels, "image_size": self.data.image_size},
        }
        if self.dist.active:
            digests = self.dist.gather(state_digest(self.model, self.method.masks))
            summary["distributed"] = {"world_size": self.dist.world, "backend": self.dist.backend,
                                      "rank_digests": digests, "ranks_identical": len(set(digests)) == 1}
        if self.dist.is_main:
            torch.save(self.model.state_dict(), self.run_dir / "model.pt")
            write_json(self.run_dir / "summary.json", summary)
            print(format_summary(summary), file=self.out)
        return summary

    def _print_epoch(self, row: dict) -> None:
        parts = [f"epoch {row['epoch']:>3} {row['phase']:<10}", f"loss {row['loss']:.4f}", f"train {row['train_acc']:.2%}"]
        if row["phase"] == "regularize":
            parts += [f"lambda {row['lambda']:.3g}", f"pruned {row['pruned_acc']:.2%}"]
        parts += [f"val {row['val_acc']:.2%}", f"sparsity {row['sparsity']:.2%}", f"{row['seconds']:.1f}s"]
        if "past_deadline" in row:
            parts.append(f"-> past --reg-epochs-target: the pruned copy has come {max(row['past_deadline'], 0):.0%} of "
                         "its way to the dense accuracy, too little for a mask (lambda_0 too small?); regularizing on")
        if row["event"] == "stop":
            why = ", deadline reached before the stop rule held" if row.get("stop_reason") == "deadline" else ""
            parts.append(f"-> mask fixed (epoch {self.method.chosen_epoch} chosen{why})")
        line = "  ".join(parts)
        if self.progress:
            from tqdm import tqdm

            tqdm.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)


def format_summary(summary: dict) -> str:
    """The small table a run ends with."""
    s, d, cfg = summary["sparse"], summary["dense"], summary["config"]
    name = f"{cfg['method']} ({cfg['reg']})" if cfg["method"] == "art" else cfg["method"]
    rows = [f"{'':<22}{'validation':>11}{'test':>9}{'sparsity':>10}{'weights kept':>14}"]
    if d:
        rows.append(f"{'dense (epoch %d)' % d['epoch']:<22}{d['val_acc']:>11.2%}{d['test_acc']:>9.2%}{0:>10.2%}{s['numel']:>14,}")
    rows.append(f"{'sparse, ' + name:<22}{s['val_acc']:>11.2%}{s['test_acc']:>9.2%}{s['sparsity']:>10.2%}{s['kept']:>14,}")
    times = ", ".join(
        f"{p} {summary['phase_seconds'].get(p, 0):.1f}s ({summary['epochs'][p]} epochs)" for p in summary["epochs"]
    )
    rows.append(f"time: {times}; device {summary['device']}")
    return "\n".join(rows)


def train(cfg: TrainConfig, run_dir: str | Path | None = None, progress: bool | None = None, out=sys.stdout) -> dict:
    """Run ``cfg`` from scratch in ``run_dir`` (default: a new folder under ``runs/``)."""
    dist, _ = init_distributed(pick_device(cfg.validate().device))
    target = Path(run_dir) if run_dir else Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    target = Path(dist.broadcast(str(target)))  # the default name holds the time: rank 0's counts
    existed = target.exists()
    error = None
    if dist.is_main:
        try:
            prepare_run_dir(target)
        except UserError as exc:
            error = str(exc)
    error = dist.broadcast(error)
    if error:
        raise UserError(error)
    path = target
    try:
        trainer = Trainer(cfg, path, progress, out)
    except BaseException:
        if dist.is_main and not existed and not any(path.iterdir()):
            path.rmdir()  # a run that could not start leaves nothing behind
        raise
    if dist.is_main:
        write_json(path / "config.json", dataclasses.asdict(cfg))
        print(f"run directory: {path}" + (f" ({dist.world} processes, {dist.backend})" if dist.active else ""), file=out)
    return trainer.run()


def resume(run_dir: str | Path, progress: bool | None = None, out=sys.stdout) -> dict:
    """Continue the run in ``run_dir`` from its last checkpoint."""
    path = Path(run_dir)
    ckpt_path = path / CHECKPOINT
    if not ckpt_path.exists():
        raise UserError(f"{path} holds no checkpoint to resume; start a new run without --resume")
    try:
        ckpt = load_checkpoint(ckpt_path)
    except (OSError, RuntimeError, EOFError) as exc:
        raise UserError(f"checkpoint {ckpt_path} cannot be read ({exc}); start the run again") from None
    # a checkpoint from before --lambda-auto-push existed calibrated 'auto' on the task gradient: keep that
    cfg = TrainConfig(**{"lambda_auto_push": 0.0, **ckpt["config"]})
    trainer = Trainer(cfg, path, progress, out)
    trainer.load_state(ckpt)
    print(f"resuming {path} after epoch {trainer.metrics[-1]['epoch'] if trainer.metrics else -1}", file=trainer.out)
    return trainer.run()
