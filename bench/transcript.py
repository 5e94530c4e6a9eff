"""docs/first-run.md: what a terminal shows while the README's first command runs.

The command runs in a pseudo-terminal (stdout and stderr both on it, 120 columns), as a user's shell runs it, so the
progress line is there. The raw stream is kept in docs/runs/first-run.json with the time each piece arrived; the page
is rendered from it: the screen at the end (the epoch lines shortened to each phase's first and last ones) and the
progress line at moments along the run.

    python bench/transcript.py                    # run the command, write the JSON and the page
    python bench/transcript.py --from-json docs/runs/first-run.json --out docs   # the page again from the JSON
"""
from __future__ import annotations

import argparse
import json
import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import provenance  # noqa: E402
from first_run import readme_command  # noqa: E402

COLUMNS = 120
EPOCH = re.compile(r"^\d+ +(warmup|regularize|finetune|prune|train) ")


def record(words: list[str], cwd: Path) -> list[tuple[float, str]]:
    """Run ``words`` in a pseudo-terminal in ``cwd``; what it wrote, as (seconds since start, text) pieces."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": str(COLUMNS), "LINES": "40", "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(words, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    pieces = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the other end closed: the command has ended
            break
        if not data:
            break
        pieces.append((time.perf_counter() - t0, data.decode("utf-8", "replace")))
    os.close(master)
    if proc.wait() != 0:
        raise SystemExit(f"the command failed ({proc.returncode}): {''.join(p for _, p in pieces)[-2000:]}")
    return pieces


def screen(pieces: list[tuple[float, str]]) -> tuple[list[str], list[tuple[float, str]]]:
    """Replay the stream as a terminal does (carriage return, erase to the end of the line, newline): the lines left
    on the screen, and each state of the line being rewritten (the progress line) with its time."""
    lines, current, col, frames = [], [], 0, []
    for at, text in pieces:
        for part in re.split(r"(\r|\n|\x1b\[K)", text.replace("\r\n", "\n")):
            if part == "\r":
                col = 0
            elif part == "\n":
                lines.append("".join(current).rstrip())
                current, col = [], 0
            elif part == "\x1b[K":
                del current[col:]
            elif part:
                for ch in part:
                    if col < len(current):
                        current[col] = ch
                    else:
                        current.append(ch)
                    col += 1
        shown = "".join(current).strip()
        if shown and (not frames or frames[-1][1] != shown):
            frames.append((at, shown))
    return lines, frames


def shorten(lines: list[str], head: int = 3, tail: int = 2) -> list[str]:
    """The epoch lines of each phase cut to their first ``head`` and last ``tail``; every other line kept."""
    out, run = [], []

    def flush():
        if len(run) > head + tail + 1:
            out.extend(run[:head] + [f"    ... {len(run) - head - tail} more {phase} epochs ..."] + run[-tail:])
        else:
            out.extend(run)
        run.clear()

    phase = None
    for line in lines:
        m = EPOCH.match(line)
        if m and m.group(1) == phase and "->" not in line:
            run.append(line)
            continue
        flush()
        if m and "->" not in line:
            phase = m.group(1)
            run.append(line)
        else:
            phase = None
            out.append(line)
    flush()
    return out


def moments(frames: list[tuple[float, str]], count: int = 8) -> list[tuple[float, str]]:
    """A few states of the progress line: the first of each kind (phase, compile, baseline), then evenly in time."""
    picked: dict[int, tuple[float, str]] = {}
    for key in ("warmup", "regularize", "finetune", "compiling", "oneshot:", "gmp:", "snip:"):
        i = next((i for i, (_, f) in enumerate(frames) if key in f and "ETA" in f), None)
        if i is not None:
            picked[i] = frames[i]
    step = max(1, len(frames) // count)
    for i in range(step // 2, len(frames), step):
        if len(picked) >= count + 4:
            break
        picked.setdefault(i, frames[i])
    return [picked[i] for i in sorted(picked)]


def page(payload: dict) -> str:
    pieces = [(a, t) for a, t in payload["pieces"]]
    lines, frames = screen(pieces)
    prov = payload["provenance"]
    took = pieces[-1][0] if pieces else 0
    out = ["# The README's first command, as a terminal shows it", "",
           f"`{payload['command']}`, run by `bench/transcript.py` in a pseudo-terminal of {COLUMNS} columns "
           f"(so stderr is a terminal and the progress line is on), {took:.0f} s on the machine below. The raw "
           "stream is in [runs/first-run.json](runs/first-run.json).", "",
           "## The progress line", "",
           "One line at the bottom of the terminal, rewritten in place while the run goes on: the phase, the epoch "
           "(and batch) of the expected total, and the time left. `>=` marks a lower bound (before ART's pruned "
           "copy starts to catch up, its regularization has no foreseeable end), `~` an estimate from the pace at "
           "which the gap closes. The `--compare` baseline shows its own. At these moments it read:", "", "```"]
    out += [f"{at:5.1f} s  {text}" for at, text in moments(frames)]
    out += ["```", "", "## The screen at the end", "",
            "The epoch lines under their header, each phase shortened here to its first and last lines (the run "
            f"printed {sum(1 for line in lines if EPOCH.match(line))}), then the summary: ART's course, the table, "
            "and the line comparing ART with one-shot pruning and the dense model.", "", "```"]
    out += shorten(lines)
    out += ["```", "", f"Commit: `{prov['commit']}`, {prov['date']}  ",
            f"Machine: {prov['machine']}; torch {prov['torch']}; load average {payload['load'][0]:.1f} before, "
            f"{payload['load'][1]:.1f} after"]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-json", help="render the page from this JSON instead of running the command")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="the docs folder to write into")
    args = parser.parse_args()
    out = Path(args.out)
    if args.from_json:
        payload = json.loads(Path(args.from_json).read_text())
    else:
        import tempfile

        words = readme_command()
        load = [os.getloadavg()[0]]
        with tempfile.TemporaryDirectory() as tmp:
            pieces = record([sys.executable, "-m", "hypersparse", *words[1:]], Path(tmp))  # its runs/ folder there
        load.append(os.getloadavg()[0])
        payload = {"provenance": provenance(), "command": " ".join(words), "load": load,
                   "pieces": [[round(a, 3), t] for a, t in pieces]}
        (out / "runs").mkdir(parents=True, exist_ok=True)
        (out / "runs" / "first-run.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "first-run.md").write_text(page(payload))
    print(f"wrote {out / 'first-run.md'}")


if __name__ == "__main__":
    main()
