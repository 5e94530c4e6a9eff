"""The README's first command and the default run, timed: old code against new, quiet and beside two CPU-bound
processes, with torch's default threads and with OMP_NUM_THREADS=1.

"old" is the code at ``--old`` (default 375ac63, before hypersparse chose its threads), unpacked with ``git archive``
into a temporary folder; "new" is this checkout. Each run is a fresh ``python -m hypersparse train ...`` process in a
fresh folder, its wall time measured from outside; "load" starts two Python busy loops first (the issue's
measurement). The runs of a condition alternate between old and new, so a drift in the machine's load reaches both.
The page states the acceptance ratios: under load the first command with the default threads against
OMP_NUM_THREADS=1 (at most 1.2), and on a quiet machine new against old (at most 1.0).

    python bench/first_run_timing.py                                  # everything (about 40 minutes)
    python bench/first_run_timing.py --commands first --reps 3        # the README's first command only
    python bench/first_run_timing.py --epochs-scale 0.02 --name dryrun   # a dry run of the script itself
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import provenance, write_results  # noqa: E402
from first_run import readme_command  # noqa: E402

COMMANDS = {"first": lambda: readme_command()[1:], "default": lambda: ["train"]}
LABELS = {"first": "the README's first command", "default": "the default run (`hypersparse train`)"}


def unpack(commit: str, into: Path) -> Path:
    """The ``src`` folder of ``commit``, unpacked from git into ``into``; returns it."""
    data = subprocess.run(["git", "archive", "--format=tar", commit, "src"], cwd=ROOT, capture_output=True,
                          check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def burners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def one(src: Path, words: list[str], threads: str, folder: Path) -> dict:
    """One run of ``hypersparse <words>`` with ``src`` first on the path: wall seconds, load, and what it reached."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(src)
    if threads != "default":
        env["OMP_NUM_THREADS"] = threads
    run = folder / "run"
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "hypersparse", *words, "--run-dir", str(run)], env=env,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"hypersparse {' '.join(words)} failed: {out.stderr[-2000:]}")
    summary = json.loads((run / "summary.json").read_text())
    return {"seconds": seconds, "load_before": load, "load_after": os.getloadavg()[0],
            "test_acc": summary["sparse"]["test_acc"], "epochs": summary["epochs"],
            "threads_record": summary.get("threads")}


def page(payload: dict) -> str:
    rows = payload["runs"]
    lines = ["# Timing the first command and the default run: old against new, quiet and under load", "",
             f"Wall time of whole `hypersparse` processes in seconds (median of {payload['args']['reps']} each). old: "
             f"commit `{payload['old']}`; new: the commit below. \"load\": two Python busy loops beside the run on the "
             "machine's cores. \"default threads\": no OMP_NUM_THREADS (new: hypersparse chooses, see "
             "bench/results/threads-cpu.md); \"1 thread\": OMP_NUM_THREADS=1."
             + (f" Shortened for a dry run: `--epochs-scale {payload['args']['epochs_scale']}`."
                if payload["args"]["epochs_scale"] else ""), "",
             "| command | condition | version | default threads (s) | 1 thread (s) | load average during |",
             "|---|---|---|---|---|---|"]

    def med(command, condition, version, threads):
        got = [r["seconds"] for r in rows if (r["command"], r["condition"], r["version"], r["threads"]) ==
               (command, condition, version, threads)]
        return statistics.median(got) if got else None

    fmt = lambda v: f"{v:.1f}" if v is not None else "-"  # noqa: E731
    for command in payload["args"]["commands"]:
        for condition in payload["args"]["conditions"]:
            for version in payload["args"]["versions"]:
                loads = [r["load_before"] for r in rows if (r["command"], r["condition"], r["version"]) ==
                         (command, condition, version)]
                lines.append(f"| {LABELS[command]} | {condition} | {version} | "
                             f"{fmt(med(command, condition, version, 'default'))} | "
                             f"{fmt(med(command, condition, version, '1'))} | "
                             f"{(f'{min(loads):.1f}-{max(loads):.1f}' if loads else '-')} |")
    lines += ["", "Acceptance (issue 32):", ""]
    for command in payload["args"]["commands"]:
        new_load, new_load1 = med(command, "load", "new", "default"), med(command, "load", "new", "1")
        new_quiet, old_quiet = med(command, "quiet", "new", "default"), med(command, "quiet", "old", "default")
        if new_load and new_load1:
            lines.append(f"- {LABELS[command]}, under load: default threads / OMP_NUM_THREADS=1 = "
                         f"{new_load / new_load1:.2f} (at most 1.2)")
        if new_quiet and old_quiet:
            lines.append(f"- {LABELS[command]}, quiet: new / old = {new_quiet / old_quiet:.2f} (at most 1.0)")
        old_load = med(command, "load", "old", "default")
        if old_load and new_load:
            lines.append(f"- {LABELS[command]}, under load with the default threads: old {old_load:.0f} s, new "
                         f"{new_load:.0f} s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="375ac63", help="the commit to compare with")
    parser.add_argument("--commands", default="first,default")
    parser.add_argument("--conditions", default="quiet,load")
    parser.add_argument("--versions", default="old,new")
    parser.add_argument("--threads", default="default,1", help="default (no OMP_NUM_THREADS) and/or a number")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--epochs-scale", type=float, default=None, help="shorten every run (a dry run)")
    parser.add_argument("--name", default="first-run-timing-cpu")
    args = parser.parse_args()
    split = lambda v: [x for x in v.split(",") if x]  # noqa: E731
    settings = {"commands": split(args.commands), "conditions": split(args.conditions),
                "versions": split(args.versions), "threads": split(args.threads), "reps": args.reps,
                "epochs_scale": args.epochs_scale}
    prov = provenance()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        srcs = {"new": ROOT / "src", "old": unpack(args.old, Path(tmp) / "old") if "old" in settings["versions"]
                else None}
        for condition in settings["conditions"]:
            procs = burners(2) if condition == "load" else []
            time.sleep(2 if procs else 0)
            try:
                for command in settings["commands"]:
                    words = COMMANDS[command]() + (["--epochs-scale", str(args.epochs_scale)]
                                                   if args.epochs_scale else [])
                    for rep in range(args.reps):
                        for threads in settings["threads"]:
                            for version in settings["versions"]:  # alternating: a drift in the load reaches both
                                with tempfile.TemporaryDirectory(dir=tmp) as folder:
                                    result = one(srcs[version], words, threads, Path(folder))
                                row = {"command": command, "condition": condition, "version": version,
                                       "threads": threads, "rep": rep, **result}
                                runs.append(row)
                                print(json.dumps({k: row[k] for k in ("command", "condition", "version", "threads",
                                                                      "seconds", "load_before")}), flush=True)
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
    payload = {"provenance": prov, "old": args.old, "args": settings, "runs": runs}
    _, md = write_results(args.name, payload, page(payload))
    print(md.read_text())


if __name__ == "__main__":
    main()
