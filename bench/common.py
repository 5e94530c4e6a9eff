"""What every benchmark records beside its numbers: command, commit, machine, versions."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def code_commit(short: bool = False) -> str:
    """The commit of the code that runs, with -dirty when tracked code differs from it (not the pages and results a
    bench or a sweep writes under docs/ and bench/results/: an earlier bench of the same chain wrote its own)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", *(["--short"] if short else []), "HEAD"], capture_output=True,
                                text=True, check=True, cwd=here).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                     ":(top,exclude)bench/results", ":(top,exclude)docs"], capture_output=True,
                                    text=True, cwd=here).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def machine() -> str:
    """This host in words: CPU model, logical cores, OS and architecture."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}"


def provenance(seed: int | None = None) -> dict:
    return {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "commit": code_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seed": seed,
    }


def mean_std(values, digits: int = 2, sign: bool = False) -> str:
    """'mean ± std' of the values that are not None ('n/c' if none is; a single value as it is); ``sign`` writes the
    mean with its sign (a difference: '+1.70 ± 0.72')."""
    import statistics

    values = [v for v in values if v is not None]
    if not values:
        return "n/c"
    fmt = f"{'+' if sign else ''}.{digits}f"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {statistics.stdev(values):.{digits}f}"


def write_results(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, md = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2) + "\n")
    prov = payload["provenance"]
    header = (
        f"\n\nCommand: `{prov['command']}`  \nCommit: `{prov['commit']}`, {prov['date']}  \n"
        f"Machine: {prov['machine']}; GPU: {prov['gpu'] or 'none'}; torch {prov['torch']}, {prov['threads']} threads; "
        f"seed {prov['seed']}\n"
    )
    md.write_text(markdown.rstrip() + header)
    return js, md


def rerun_note(payload: dict) -> list[str]:
    """The page's line about its GMP runs being made again (bench/gmp_rerun.py), if they were."""
    r = payload.get("gmp_rerun")
    if not r:
        return []
    made = ", ".join(f"`{c}`" for c in r.get("made_at", [])) or f"`{r['commit']}`"
    why = ("after the mask mechanism was rewritten (GMP's pruning epochs had slowed with every mask update, its "
           "results had not: every hook applied the same mask)")
    link = "[bench/results/gmp-rerun.md](../bench/results/gmp-rerun.md)"
    if r.get("replaced", True):
        return [f"\nThe GMP runs of this section were made again by `{r['command']}` at commit {made}, {why}; its "
                f"cells hold the new runs. They ran on a 2-core machine shared with other jobs, so their wall times do "
                f"not compare with the other methods' (bench/results/gmp-flat-cpu.md times GMP's epochs on an idle "
                f"one). Old and new results and timings side by side: {link}.\n"]
    dense = (f"; the dense model after the warm-up that precedes GMP, which no GMP code touches, moved by "
             f"{r['dense_mean_move']:+.2f} points of validation accuracy on average, so the runs differ by the "
             "version of the code, not by GMP") if r.get("dense_mean_move") is not None else ""
    return [f"\nThe GMP runs of this section were made again by `{r['command']}` at commit {made}, {why}. Their "
            f"test errors moved by {r['mean_move']:+.2f} points on average over {r['runs']} runs, by "
            f"{r['largest_move']:.2f} at most{dense}. The table keeps the GMP runs made with the same code as the "
            f"other methods'. Old and new results and timings side by side: {link}.\n"]


def every_run(runs: list[dict]) -> list[str]:
    """The collapsed "every run" table of a sweep's page: sparsity, method, seed, test error, epochs per phase, wall
    minutes and commit of each run (up to the closing ``</details>``, which the caller adds after its notes)."""
    lines = ["<details><summary>every run</summary>\n",
             "| sparsity | method | seed | test error % | epochs (warm-up/middle/fine-tune) | wall min | commit |",
             "|---:|---|---:|---:|---|---:|---|"]
    for r in sorted(runs, key=lambda r: (r["sparsity"], r["method"], r["seed"])):
        err = f"{r['test_error']:.2f}" if r["test_error"] is not None else "n/c"
        ep = "/".join(str(v) for v in r["epochs"].values()) if r.get("epochs") else "-"
        wall = f"{r['wall_seconds'] / 60:.1f}" if "wall_seconds" in r else "-"
        lines.append(f"| {r['sparsity']} | {r['method']} | {r['seed']} | {err} | {ep} | {wall} | `{r['commit']}` |")
    return lines
