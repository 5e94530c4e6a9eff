"""Which mask mechanism? The candidates issue 30 names, measured side by side before (and after) the pick.

A training step (SGD 0.1, momentum 0.9, weight decay 1e-4, cross-entropy, batch 64, one thread) of LeNet-300-100 and
LeNet-5 at 98 % sparsity, with the mask kept by:

- ``plain``: no mask (the reference);
- ``by hand``: the weights multiplied by the mask after each step, nothing else: the least any mask can cost, and
  a reference with the masked model's values (a sparse network's activations can change how long dense kernels take);
- ``hypersparse``: ``hs.apply_masks_(model, masks, optimizer)``, the library's mechanism (the mask enforced once per
  optimizer step);
- ``hypersparse, no optimizer``: ``hs.apply_masks_(model, masks)``: the path a copy takes (a gradient hook per tensor);
- ``torch prune``: ``torch.nn.utils.prune.custom_from_mask`` on each layer (``weight = weight_orig * weight_mask``
  recomputed by a forward pre-hook at every forward);
- ``parametrize``: ``torch.nn.utils.parametrize.register_parametrization`` with a module returning ``W * mask``
  (recomputed at every access of ``weight``).

Each candidate is timed in rounds that alternate between candidates, so a busy machine slows all alike, and every
ratio is the median over rounds of (candidate / plain) in the same round. The step is timed again after 65 mask
updates made the way each API offers (GMP's budget at 98.5 %: ``handle.update_``; torch prune: ``custom_from_mask``
once more, which stacks masks in a ``PruningContainer``; parametrize: the mask buffer written in place). Beside the
times, what each candidate gives the rest of the library, checked here on the model rather than claimed: are pruned
weights still exactly zero after 20 steps, does a ``copy.deepcopy`` keep them zero while it trains without the mask's
optimizer, is ``weight`` still a leaf Parameter (what the regularizers, exports and ``sparse_inference`` read), are
the ``state_dict`` keys the dense model's.

    python bench/mask_design.py             # about 3 minutes on an idle core
    python bench/mask_design.py --dry-run   # a few rounds, prints, writes nothing
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.nn.utils import parametrize, prune  # noqa: E402

import hypersparse as hs  # noqa: E402
from hypersparse.masks import global_keep  # noqa: E402
from hypersparse.models import create_model  # noqa: E402

from common import provenance, write_results  # noqa: E402

SPARSITY = 0.98
UPDATES = 65
CANDIDATES = ["plain", "by hand", "hypersparse", "hypersparse, no optimizer", "torch prune", "parametrize"]


class _MaskParam(nn.Module):
    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.register_buffer("keep", keep.to(torch.float32))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.keep


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _masks(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Magnitude masks of a perturbed copy: a new mask each update, as GMP's schedule makes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        scores = {f"{n}.weight": m.weight.abs() + 0.01 * torch.rand(m.weight.shape, generator=g)
                  for n, m in _layers(model)}
    flat = global_keep(list(scores.values()), SPARSITY)
    return dict(zip(scores, flat))


def _install(kind: str, model: nn.Module, opt: torch.optim.Optimizer, masks: dict[str, torch.Tensor]):
    """Install ``kind``'s mask; returns a function that replaces the mask (one GMP update)."""
    layers = dict(_layers(model))
    if kind == "plain":
        return lambda new: None
    if kind == "by hand":  # the least any mask costs: the weights multiplied by it after each step (see _trainer)
        model.held_masks = {n: k.float() for n, k in masks.items()}  # float: no conversion in each step
        with torch.no_grad():
            for n, m in layers.items():
                m.weight.mul_(masks[f"{n}.weight"])

        def replace(new):
            model.held_masks = {n: k.float() for n, k in new.items()}
        return replace
    if kind.startswith("hypersparse"):
        handle = hs.apply_masks_(model, masks, opt if kind == "hypersparse" else None)
        return handle.update_
    if kind == "torch prune":
        for n, m in layers.items():
            prune.custom_from_mask(m, "weight", masks[f"{n}.weight"])

        def update(new):
            for n, m in layers.items():
                prune.custom_from_mask(m, "weight", new[f"{n}.weight"])
        return update
    if kind == "parametrize":
        for n, m in layers.items():
            with torch.no_grad():
                m.weight.mul_(masks[f"{n}.weight"])
            parametrize.register_parametrization(m, "weight", _MaskParam(masks[f"{n}.weight"]))

        def update(new):
            for n, m in layers.items():
                m.parametrizations.weight[0].keep.copy_(new[f"{n}.weight"])
        return update
    raise ValueError(kind)


def _trainer(kind: str, model_name: str, updates: int) -> tuple[Callable[[], None], nn.Module]:
    torch.manual_seed(0)
    model = create_model(model_name, 10, 1, 28)
    # both reparametrisations keep the weight's Parameter object (as weight_orig, as parametrizations.weight.original)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    update = _install(kind, model, opt, _masks(model, 0))
    for i in range(updates):
        update(_masks(model, i + 1))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)

    by_hand = [(m.weight, f"{n}.weight") for n, m in _layers(model)] if kind == "by hand" else []

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        with torch.no_grad():
            for w, name in by_hand:
                w.mul_(model.held_masks[name])

    return step, model


def _time_rounds(steps: dict[str, Callable[[], None]], rounds: int, per_round: int) -> dict[str, list[float]]:
    for step in steps.values():
        for _ in range(10):
            step()
    seen: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for kind, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                step()
            seen[kind].append((time.perf_counter() - t0) / per_round)
    return seen


def _properties(kind: str, model_name: str) -> dict:
    step, model = _trainer(kind, model_name, 0)
    for _ in range(20):
        step()
    dense_keys = set(create_model(model_name, 10, 1, 28).state_dict())
    layers = _layers(model)

    def zeros(m: nn.Module) -> int:
        return sum(int((lm.weight == 0).sum()) for _, lm in _layers(m))

    kept_zero = zeros(model)
    total = sum(lm.weight.numel() for _, lm in layers)
    try:
        twin = copy.deepcopy(model)
    except RuntimeError as e:  # torch prune's weight is a computed tensor, which deepcopy refuses after a forward
        copy_keeps: bool | str = f"deepcopy fails after a forward: {str(e).split(' (')[0]}"
    else:
        opt = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
        x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
        for _ in range(5):
            opt.zero_grad()
            F.cross_entropy(twin(x), y).backward()
            opt.step()
        with torch.no_grad():
            twin(x)  # a copy's mask may act at its next forward
        copy_keeps = zeros(twin) >= int(SPARSITY * total)
    return {"zeros_after_steps": kept_zero, "target_zeros": int(SPARSITY * total),
            "copy_keeps_zeros": copy_keeps,
            "weight_is_leaf_parameter": all(isinstance(lm.__dict__.get("_parameters", {}).get("weight"),
                                                       nn.Parameter) for _, lm in layers),
            "state_dict_keys_unchanged": set(model.state_dict()) == dense_keys}


def measure(model_name: str, rounds: int, per_round: int, warm: int = 200) -> dict:
    out: dict = {}
    for label, updates in (("applied once", 0), (f"after {UPDATES} updates", UPDATES)):
        steps = {k: _trainer(k, model_name, updates)[0] for k in CANDIDATES}
        seen = _time_rounds(steps, rounds, per_round)
        out[label] = {k: {"median_ms": 1000 * statistics.median(v),
                          "ratio": statistics.median(a / b for a, b in zip(v, seen["plain"])),
                          "ratio_iqr": _iqr([a / b for a, b in zip(v, seen["plain"])]),
                          "vs_by_hand": statistics.median(a / b for a, b in zip(v, seen["by hand"]))}
                      for k, v in seen.items()}
    out["properties"] = {k: _properties(k, model_name) for k in CANDIDATES if k != "plain"}
    out["op_shift"] = _op_shift(model_name, warm)
    return out


def _op_shift(model_name: str, warm: int = 200, steps: int = 20) -> list[dict]:
    """Where a sparse network's step spends its extra time: torch.profiler's self CPU time per step of each operator,
    for the unmasked model and the one masked by hand, after ``warm`` steps of each; the three largest differences."""
    from torch.profiler import profile

    per_op = {}
    for kind in ("plain", "by hand"):
        step = _trainer(kind, model_name, 0)[0]
        for _ in range(warm):
            step()
        with profile() as prof:
            for _ in range(steps):
                step()
        per_op[kind] = {e.key: e.self_cpu_time_total / steps / 1000 for e in prof.key_averages()}
    ops = set(per_op["plain"]) | set(per_op["by hand"])
    rows = [{"op": op, "plain_ms": per_op["plain"].get(op, 0.0), "by_hand_ms": per_op["by hand"].get(op, 0.0)}
            for op in ops]
    return sorted(rows, key=lambda r: -abs(r["by_hand_ms"] - r["plain_ms"]))[:3]


def _iqr(values: list[float]) -> list[float]:
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def _yes(v: bool | str) -> str:
    return v if isinstance(v, str) else "yes" if v else "**no**"


def page(p: dict) -> str:
    lines = ["# Mask mechanisms, measured side by side\n",
             f"One training step (SGD 0.1, momentum 0.9, weight decay 1e-4, batch 64, one thread) at "
             f"{SPARSITY:.0%} sparsity; each time is the median over {p['rounds']} rounds of {p['per_round']} steps, "
             "the candidates alternating within each round; **x plain** is the median over rounds of the candidate's "
             "time over the unmasked model's in the same round (in brackets: the middle half of those ratios). "
             f"'after {UPDATES} updates': the mask replaced {UPDATES} times first, as GMP's schedule does, each "
             "API's way (hypersparse `handle.update_`, torch prune `custom_from_mask` again, parametrize the buffer "
             "written).\n"]
    for model_name, r in p["models"].items():
        lines += [f"## {model_name}\n", "| mask | step, applied once | x plain | x by hand | step, after updates | "
                  "x plain | x by hand |", "|---|---|---|---|---|---|---|"]
        once, later = r["applied once"], r[f"after {UPDATES} updates"]
        for k in CANDIDATES:
            a, b = once[k], later[k]
            lines.append(f"| {k} | {a['median_ms']:.2f} ms | {a['ratio']:.2f}x ({a['ratio_iqr'][0]:.2f}–"
                         f"{a['ratio_iqr'][1]:.2f}) | {a['vs_by_hand']:.2f}x | {b['median_ms']:.2f} ms | "
                         f"{b['ratio']:.2f}x ({b['ratio_iqr'][0]:.2f}–{b['ratio_iqr'][1]:.2f}) | "
                         f"{b['vs_by_hand']:.2f}x |")
        lines += ["", "| mask | pruned weights zero after 20 steps | a deepcopy trained by a new SGD keeps them zero | "
                  "`weight` a leaf Parameter | state_dict keys of the dense model |", "|---|---|---|---|---|"]
        for k, q in r["properties"].items():
            lines.append(f"| {k} | {_yes(q['zeros_after_steps'] >= q['target_zeros'])} ({q['zeros_after_steps']} "
                         f"of {q['target_zeros']}) | {_yes(q['copy_keeps_zeros'])} | "
                         f"{_yes(q['weight_is_leaf_parameter'])} | {_yes(q['state_dict_keys_unchanged'])} |")
        shift = "; ".join(f"`{o['op']}` {o['plain_ms']:.2f} -> {o['by_hand_ms']:.2f} ms" for o in r["op_shift"])
        lines += ["", f"Where a masked step's time differs from an unmasked one's (torch.profiler, self CPU time per "
                  f"step after {p['warm']} steps, unmasked -> masked by hand, the three largest differences): {shift}.",
                  ""]
    lines += ["Why the library keeps its own mechanism: both reparametrisations recompute the weight at every forward "
              "(a multiply per masked tensor, and autograd through it), and make `weight` a computed tensor rather "
              "than a Parameter, which the regularizers, the exports and the state_dict keys would each have to look "
              "through. The library's handle enforces the mask once per optimizer step, keeps `weight` a Parameter "
              "and the state_dict keys unchanged, and a copy without the optimizer keeps its zeros through the "
              "keeper's hooks (the 'no optimizer' row is what a copy's step costs)."]
    if p.get("note"):
        lines += ["", p["note"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--dry-run", action="store_true", help="3 rounds of 3 steps, 10 before profiling; prints, writes "
                    "nothing")
    ap.add_argument("--note", default="", help="a sentence for the page (what else ran on the machine)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds, per_round = (3, 3) if args.dry_run else (args.rounds, args.per_round)
    prov = provenance(seed=0)
    warm = 10 if args.dry_run else 200
    payload = {"provenance": prov, "rounds": rounds, "per_round": per_round, "warm": warm, "note": args.note,
               "models": {name: measure(name, rounds, per_round, warm) for name in ("lenet300", "lenet5")}}
    text = page(payload)
    if not args.dry_run:
        write_results("mask-design-cpu", payload, text)
    print(text)


if __name__ == "__main__":
    main()
