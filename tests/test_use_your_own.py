"""docs/use-your-own.md: its files written, its commands run as written."""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import image_folder

DOC = Path(__file__).resolve().parents[1] / "docs" / "use-your-own.md"


def test_every_command_in_the_page_works(tmp_path):
    pytest.importorskip("PIL")
    text = DOC.read_text()
    for name, body in re.findall(r"```python file=(\S+)\n(.*?)```", text, re.S):
        (tmp_path / name).write_text(body)
    image_folder(tmp_path / "pets", "flat")
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.startswith("hypersparse ")]
    assert len(commands) == 4
    for line in commands:
        out = subprocess.run([sys.executable, "-m", "hypersparse", *shlex.split(line)[1:]], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (line, out.stderr)
    for snippet in re.findall(r"```python run\n(.*?)```", text, re.S):
        check = "\nimport sys\nassert not any(m.startswith('hypersparse') for m in sys.modules)\n"
        out = subprocess.run([sys.executable, "-c", snippet + check], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
        assert out.returncode == 0, out.stderr  # ran without importing hypersparse at all
        assert set(ast.literal_eval(out.stdout.strip())) <= {"left", "top", "right"}
    for run in ("pets", "pets-gmp"):
        summary = json.loads((tmp_path / "runs" / run / "summary.json").read_text())
        assert abs(summary["sparse"]["sparsity"] - 0.9) < 0.01 and summary["sparse"]["test_acc"] > 0.5, run
