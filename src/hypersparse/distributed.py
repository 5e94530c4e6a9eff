"""Multi-process training under torchrun: the process group, reductions, and a digest to compare ranks.

Every rank holds the same weights (DistributedDataParallel averages the task
gradients; the regularizer, the threshold and the masks are computed from those
identical weights), so only what depends on each rank's share of the data has
to be reduced: training loss and accuracy, and the accuracies that drive ART.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hypersparse.errors import UserError, first_line


@dataclass
class Dist:
    """This process's place in the run: ``world == 1`` outside torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def sum(self, *values: float) -> list[float]:
        """The sum of each value over all ranks (float64, so integer counts stay exact)."""
        return all_sum(*values)

    def broadcast(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.active:
            return [value]
        out = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def all_sum(*values: float) -> list[float]:
    """Each value summed over the ranks of the initialized process group (as they are without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    nccl = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only
    t = torch.tensor(values, dtype=torch.float64, device=torch.cuda.current_device() if nccl else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def _env_int(name: str, default: int) -> int:
    """A whole number torchrun puts in the environment; one line if something else put another thing there."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or len(value) > 6:
        raise UserError(f"the environment's {name}={value[:20]!r} is not a process count or index as torchrun sets "
                        "it; unset it, or start the run with torchrun")
    return int(value)


def world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def is_rank0() -> bool:
    """Whether this process writes the run's files: the only one, or torchrun's rank 0. A RANK left in the
    environment without a WORLD_SIZE above 1 is no process group, and does not make a process a silent worker."""
    return world_size() <= 1 or _env_int("RANK", 0) == 0


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on CUDA).

    Returns the context and the device this rank trains on (``cuda:LOCAL_RANK`` on GPUs).
    """
    world = world_size()
    if world <= 1:
        return Dist(), device
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs; lower --nproc_per_node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"distributed training runs on cuda or cpu, not {device.type}; pass --device cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend)
        except ValueError as exc:  # env:// without MASTER_ADDR or MASTER_PORT: torchrun sets them
            first = first_line(exc)
            raise UserError(f"WORLD_SIZE={world} asks for a process group, which cannot start ({first}); start the "
                            "run with torchrun, or unset WORLD_SIZE") from None
    return Dist(rank, world, local, backend), device


def close_distributed() -> bool:
    """Leave the process group if one is open; True if one was."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        return True
    return False


def state_digest(model: torch.nn.Module, masks: dict | None = None) -> str:
    """SHA-256 of every tensor of the model's state (and the masks): equal digests mean bit-equal ranks."""
    h = hashlib.sha256()
    items = list(model.state_dict().items()) + sorted((masks or {}).items())
    for name, t in items:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
