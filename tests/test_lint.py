"""ruff, configured in pyproject.toml (pyflakes, pycodestyle, isort; line length 120), finds nothing to report."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    found = shutil.which("ruff")
    if found is None:
        pytest.skip('ruff is not installed (it comes with pip install -e ".[dev]")')
    return [found]


def test_ruff_check_passes_on_src_tests_and_bench():
    # --no-cache: nothing written into the checkout; cwd=ROOT: ruff reads this checkout's pyproject.toml
    out = subprocess.run(_ruff() + ["check", "--no-cache", "src", "tests", "bench"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_ruff_reads_the_projects_settings(tmp_path):
    """The check above is only as strict as its settings: under this checkout's configuration an unused import,
    unsorted imports and a line over 120 characters are reported, a line of 100 (over ruff's default 88) is not."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\n\nx = '" + "a" * 94 + "'\ny = os.sep + '" + "a" * 130 + "'\n")
    out = subprocess.run(_ruff() + ["check", "--no-cache", "--output-format", "concise",
                                    "--config", str(ROOT / "pyproject.toml"), str(bad)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    found = sorted(line.split()[1] for line in out.stdout.splitlines() if line.startswith(str(bad)))
    assert found == ["E501", "F401", "I001"], out.stdout
