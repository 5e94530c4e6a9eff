"""The README's first command, measured: wall time on this machine and what its final line compares, over seeds.

It runs the ``hypersparse train ...`` part of the README's first command as written (plus ``--seed S --run-dir``),
in a subprocess, and reads each run's ``summary.json``: ART's and one-shot's test and validation accuracy at the
same sparsity and epoch budget, the dense model's, the regularization length and the pruned copy's first and last
score. The README's timing for that command comes from this page.

    python bench/first_run.py [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import mean_std, provenance, write_results

ROOT = Path(__file__).resolve().parents[1]


def readme_command() -> list[str]:
    """The ``hypersparse train ...`` words of the README's first set-up command."""
    first = re.search(r"```bash\n(.*?)\n", (ROOT / "README.md").read_text()).group(1).split("#")[0]
    part = next(p.strip() for p in first.split("&&") if p.strip().startswith("hypersparse train"))
    return shlex.split(part)


def one(seed: int, folder: Path) -> dict:
    run = folder / f"seed{seed}"
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run([*readme_command(), "--seed", str(seed), "--run-dir", str(run)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scored = [r["pruned_acc"] for r in rows if r.get("pruned_acc") is not None]
    return {"seed": seed, "seconds": seconds, "load": [load, os.getloadavg()[0]],
            "art": summary["sparse"], "dense": summary["dense"],
            "compare": summary["compare"], "reg_epochs": summary["epochs"].get("regularize", 0),
            "pruned_first": scored[0], "pruned_last": scored[-1]}


def page(payload: dict) -> str:
    runs = payload["runs"]
    pct = lambda f: mean_std([100 * f(r) for r in runs])  # noqa: E731
    lines = [
        "# The README's first command",
        "",
        f"`{payload['readme_command']}` on the embedded digits data (8x8 images, 1,797 in all), "
        f"{len(runs)} seeds, each a fresh process; mean ± std. Test and validation accuracy in %; every model "
        "is chosen on validation. One-shot is trained at ART's seed and epoch budget (`--compare oneshot`).",
        "",
        "| | test | validation |",
        "|---|---|---|",
        f"| dense (end of warm-up) | {pct(lambda r: r['dense']['test_acc'])} | "
        f"{pct(lambda r: r['dense']['val_acc'])} |",
        f"| ART (HyperSparse) | {pct(lambda r: r['art']['test_acc'])} | {pct(lambda r: r['art']['val_acc'])} |",
        f"| one-shot magnitude | {pct(lambda r: r['compare']['oneshot']['test_acc'])} | "
        f"{pct(lambda r: r['compare']['oneshot']['val_acc'])} |",
        "",
        f"Sparsity {100 * runs[0]['art']['sparsity']:.2f} %. Regularization epochs: "
        f"{mean_std([r['reg_epochs'] for r in runs], 1)}; the pruned copy scored "
        f"{pct(lambda r: r['pruned_first'])} % after the first and {pct(lambda r: r['pruned_last'])} % after the "
        "last (on a fixed training subset).",
        "",
        f"Wall time of the whole command (ART run, then the one-shot run): median "
        f"{statistics.median(r['seconds'] for r in runs):.0f} s, max {max(r['seconds'] for r in runs):.0f} s"
        + (f", at a load average of {min(min(r['load']) for r in runs):.1f} to {max(max(r['load']) for r in runs):.1f} "
           "(bench/results/first-run-timing-cpu.md times it quiet and under a controlled load)."
           if all("load" in r for r in runs) else "."),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    prov = provenance(seed=seeds[0])
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one(seed, Path(tmp)) for seed in seeds]
    payload = {"provenance": prov, "readme_command": " ".join(readme_command()), "runs": runs}
    _, md = write_results("first-run-cpu", payload, page(payload))
    print(md.read_text())


if __name__ == "__main__":
    main()
