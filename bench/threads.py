"""Training-step time at 1 and 2 threads, by model size, on a quiet machine and beside two CPU-bound processes.

What ``hypersparse.threads`` rests on: below ``LARGE_STEP_MACS`` multiply-adds per step a second thread gains
little on a quiet machine and costs many times over on a busy one, where torch's OpenMP workers spin for cores
other jobs hold; OpenMP's wait policy (``OMP_WAIT_POLICY``, read when torch loads) decides how much. Each
(policy, condition) is measured in a fresh process: 1 and 2 threads interleaved in blocks, median per step.

The second part runs the README's first command at one seed with OMP_NUM_THREADS=1 and =2 and compares the runs
(whether results depend on the thread count).

    python bench/threads.py [--models mlp,lenet300,lenet5,resnet20] [--blocks 5] [--conditions quiet,load]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import provenance, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))  # this checkout's hypersparse, here and in the measuring processes
SHAPES = {"mlp": (1, 8), "lenet300": (1, 28), "lenet5": (1, 28), "resnet20": (3, 32), "resnet32": (3, 32)}
POLICIES = {"active": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spin10k": {"GOMP_SPINCOUNT": "10000"}}

CHILD = r"""
import json, statistics, sys, time
import torch, torch.nn.functional as F
from torch import nn
from hypersparse.models import create_model
from hypersparse.threads import step_macs
name, ch, size, blocks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = create_model(name, 10, ch, size)
conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
fmt = torch.channels_last if conv else torch.contiguous_format
model = model.to(memory_format=fmt)
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(64, ch, size, size).contiguous(memory_format=fmt)
y = torch.randint(0, 10, (64,))
macs = step_macs(model, x)
def step():
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
reps = max(1, min(50, int(2e9 / max(macs, 1))))  # about as much work per block whatever the model
for t in (1, 2):
    torch.set_num_threads(t); step()
times = {1: [], 2: []}
for _ in range(blocks):
    for t in (1, 2):
        torch.set_num_threads(t)
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        times[t].append((time.perf_counter() - t0) / reps)
print(json.dumps({"macs": macs, "reps": reps, "ms": {t: 1e3 * statistics.median(v) for t, v in times.items()}}))
"""


def burners(n: int) -> list[subprocess.Popen]:
    """``n`` CPU-bound processes (a Python busy loop each), the load of the issue's measurement."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def measure(model: str, policy: str, blocks: int) -> dict:
    ch, size = SHAPES[model]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(POLICIES[policy], PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", CHILD, model, str(ch), str(size), str(blocks)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def reproducibility(seed: int, scale: float | None = None) -> dict:
    """The README's first command at ``seed`` with 1 and with 2 threads: where the runs part, and what they reach."""
    import tempfile

    from first_run import readme_command

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (1, 2):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
            run = Path(tmp) / f"t{threads}"
            shorter = ["--epochs-scale", str(scale)] if scale else []
            subprocess.run([sys.executable, "-m", "hypersparse", *readme_command()[1:], *shorter, "--seed", str(seed),
                            "--run-dir", str(run)], env=env, check=True, capture_output=True)
            summary = json.loads((run / "summary.json").read_text())
            rows = {name: [json.loads(line) for line in (run / sub / "metrics.jsonl").read_text().splitlines()]
                    for name, sub in (("art", "."), ("oneshot", "compare-oneshot"))}
            out[threads] = {"rows": rows, "art_test": summary["sparse"]["test_acc"],
                            "oneshot_test": summary["compare"]["oneshot"]["test_acc"],
                            "art_epochs": summary["epochs"], "stop": (summary.get("art") or {}).get("chosen_epoch")}
    a, b = out[1]["rows"]["art"], out[2]["rows"]["art"]
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x["loss"] != y["loss"]), None)
    phase = a[first]["phase"] if first is not None else None
    per_count = {f"{k}_{t}": out[t][k] for t in (1, 2) for k in ("art_test", "oneshot_test", "art_epochs", "stop")}
    return {"seed": seed, "first_differing_epoch": first, "first_differing_phase": phase, **per_count}


def _same_until(first_differing: int) -> str:
    return f"are identical up to epoch {first_differing - 1} and " if first_differing > 0 else ""


def page(payload: dict) -> str:
    from hypersparse.threads import LARGE_STEP_MACS

    lines = ["# Threads: training-step time at 1 and 2 threads", ""] if not payload["rows"] else [
             "# Threads: training-step time at 1 and 2 threads", "",
             "One SGD step (forward, backward, update) of a batch of 64, median over blocks, in milliseconds. "
             "\"load\": two CPU-bound processes (Python busy loops) run beside it on the machine's cores. active: "
             "OpenMP's default wait policy (workers spin while waiting); passive: `OMP_WAIT_POLICY=PASSIVE` (what the "
             "`hypersparse` command sets unless the environment has a policy); spin10k: `GOMP_SPINCOUNT=10000`. "
             "Speed-up = 1-thread time / 2-thread time (below 1: the second thread makes the step slower).", "",
             "| condition | model | M multiply-adds per step | policy | 1 thread (ms) | 2 threads (ms) | speed-up |",
             "|---|---|---|---|---|---|---|"]
    for row in payload["rows"]:
        for policy in POLICIES:
            ms = row[policy]["ms"]
            lines.append(f"| {row['condition']} | {row['model']} | {row[policy]['macs'] / 1e6:,.0f} | {policy} | "
                         f"{ms['1']:.2f} | {ms['2']:.2f} | {ms['1'] / ms['2']:.2f}x |")
    if payload["rows"]:
        lines += ["", f"The rule in `hypersparse.threads`: 1 thread below {LARGE_STEP_MACS / 1e6:g} M multiply-adds "
                  "per step, torch's default above. Load average before and after each condition: "
                  + "; ".join(f"{c}: {v[0]:.1f} -> {v[1]:.1f}" for c, v in payload["load"].items()) + "."]
    else:
        lines += ["The step timings were not measured in this run (`--conditions ''`): they need a quiet machine "
                  "and the load this script makes itself."]
    r = payload.get("reproducibility")
    if r:
        total = {t: sum(r[f"art_epochs_{t}"].values()) for t in (1, 2)}
        lines += ["", "## Same seed, 1 and 2 threads", "",
                  f"The README's first command at seed {r['seed']}, OMP_NUM_THREADS=1 against 2. The ART runs' "
                  + (f"metrics {_same_until(r['first_differing_epoch'])}differ from epoch "
                     f"{r['first_differing_epoch']} (a {r['first_differing_phase']} epoch) on: floating-point sums "
                     "split across threads round differently." if r["first_differing_epoch"] is not None else
                     "metrics are identical."), "",
                  "| threads | ART epochs | ART's mask from epoch | ART test acc | one-shot test acc |",
                  "|---|---|---|---|---|"]
        lines += [f"| {t} | {total[t]} | {r[f'stop_{t}']} | {100 * r[f'art_test_{t}']:.2f} | "
                  f"{100 * r[f'oneshot_test_{t}']:.2f} |" for t in (1, 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,lenet300,lenet5,resnet20")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--conditions", default="quiet,load")
    parser.add_argument("--reproducibility-seed", type=int, default=0, help="-1 skips the 1-against-2-threads runs")
    parser.add_argument("--epochs-scale", type=float, default=None, help="shorten those runs (a dry run)")
    parser.add_argument("--name", default="threads-cpu", help="results file name (bench/results/NAME.json and .md)")
    args = parser.parse_args()
    prov = provenance()
    rows, load = [], {}
    for condition in [c for c in args.conditions.split(",") if c]:  # "": the 1-against-2-threads runs alone
        procs = burners(2) if condition == "load" else []
        time.sleep(1 if procs else 0)
        before = os.getloadavg()[0]
        try:
            for model in args.models.split(","):
                row = {"condition": condition, "model": model,
                       **{policy: measure(model, policy, args.blocks) for policy in POLICIES}}
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        load[condition] = (before, os.getloadavg()[0])
    payload = {"provenance": prov, "rows": rows, "load": load}
    if args.reproducibility_seed >= 0:
        payload["reproducibility"] = reproducibility(args.reproducibility_seed, args.epochs_scale)
    _, md = write_results(args.name, payload, page(payload))
    print(md.read_text())


if __name__ == "__main__":
    main()
