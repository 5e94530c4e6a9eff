"""What a run prints, read as a person reads it: in a terminal, a header, the epoch lines and one progress line
rewritten in place (also while --compare trains its baseline); elsewhere plain lines, the baseline's one per tenth of
its run; and docs/first-run.md, the README's first command as a terminal showed it."""
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["train", "--sparsity", "0.9", "--epochs-scale", "0.03", "--lambda-init", "1e-3", "--compare", "oneshot"]


def replay(stream: str) -> tuple[list[str], list[str]]:
    """A terminal's lines after ``stream`` (carriage return, erase-to-end, newline), and each rewritten line state."""
    lines, current, col, frames = [], [], 0, []
    for part in re.split(r"(\r|\n|\x1b\[K)", stream.replace("\r\n", "\n")):
        if part == "\r":
            col = 0
        elif part == "\n":
            lines.append("".join(current).rstrip())
            current, col = [], 0
        elif part == "\x1b[K":
            del current[col:]
            frames.append("".join(current))
        elif part:
            current[col:col + len(part)] = list(part)
            col += len(part)
    return lines, [f for f in frames if f.strip()]


def test_in_a_terminal_one_progress_line_under_readable_epoch_lines(tmp_path):
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "hypersparse", *ARGS, "--run-dir", str(tmp_path / "run")],
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data.decode())
    assert proc.wait(timeout=300) == 0, "".join(chunks)[-2000:]
    lines, frames = replay("".join(chunks))
    header = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    assert "pruned-copy acc" in lines[header] and "ETA" in lines[header]
    assert lines[header - 1].startswith("pruned-copy acc: the accuracy of a copy of the model pruned")
    epochs = [line for line in lines if re.match(r"^\d+ +(warmup|regularize|finetune) ", line)]
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == len(rows)  # every epoch line whole: the progress line never broke into one
    assert all(re.search(r"\d+/(>=|~)?\d+, ETA", line) for line in epochs)
    assert any(f.startswith("regularize ·") and "ETA" in f for f in frames)  # the line rewritten in place
    assert any(f.startswith("oneshot: ") and "ETA" in f for f in frames)  # and the baseline's
    assert not any(line.startswith("  oneshot: epoch") for line in lines)  # which prints no lines of its own
    assert lines[-1].startswith("at 90.00% sparsity, test accuracy: ART")
    assert any(line.startswith("ART: ") and "regularization epochs" in line and "lambda" in line for line in lines)


def test_without_a_terminal_plain_lines_and_the_baselines_progress(tmp_path):
    out = subprocess.run([sys.executable, "-m", "hypersparse", *ARGS, "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stdout + out.stderr and "\x1b" not in out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("plan: ") for line in lines) and any(line.startswith("threads: ") for line in lines)
    ticks = [line for line in lines if line.startswith("  oneshot: epoch ")]
    assert 5 <= len(ticks) <= 11 and ticks[-1].startswith("  oneshot: epoch ") and "ETA 0s" in ticks[-1]


def test_first_run_page_shows_the_header_the_progress_and_the_summary():
    page = (ROOT / "docs" / "first-run.md").read_text()
    block = page.split("## The screen at the end")[1]
    assert re.search(r"^epoch +phase +loss +train acc +lambda +pruned-copy acc", block, re.M)
    progress = page.split("## The progress line")[1].split("## The screen")[0]
    assert re.search(r"regularize · epoch \d+/(>=|~)?\d+, ETA", progress) and "oneshot: " in progress
    assert "ETA" in progress
    assert re.search(r"^ART: \d+ regularization epochs", block, re.M)
    assert re.search(r"^at 99.00% sparsity, test accuracy: ART [\d.]+%, oneshot [\d.]+%; dense", block, re.M)
