"""The results pages are made from their JSON by the bench scripts: regenerating them changes no byte."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script,page,data", [("mnist_sweep.py", "results.md", "mnist-sweep.json"),
                                               ("art_settings.py", "methods.md", "art-settings.json"),
                                               ("mnist_full.py", "results.md", "mnist-full.json"),
                                               ("lenet5_gap.py", "results.md", "lenet5-gap.json"),
                                               ("transcript.py", "first-run.md", "first-run.json")])
def test_a_results_page_regenerates_byte_identical_from_its_json(script, page, data, tmp_path):
    pytest.importorskip("matplotlib")
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--from-json", str(docs / "runs" / data),
                          "--out", str(docs)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (docs / page).read_bytes() == (ROOT / "docs" / page).read_bytes()
    assert (docs / "runs" / data).read_bytes() == (ROOT / "docs" / "runs" / data).read_bytes()


def test_the_training_speed_bench_runs_end_to_end_in_its_dry_run():
    """bench/train_speed.py --dry-run: the three loops, every phase, on a few hundred images (no page written)."""
    root = Path(__file__).resolve().parents[1]
    data = root.parent / "shared" / "data" / "mnist"
    if not data.exists():
        pytest.skip("../shared/data not beside the checkout")
    out = subprocess.run([sys.executable, str(root / "bench" / "train_speed.py"), "--dry-run", "--threads", "1",
                          "--models", "lenet300", "--sparsities", "0.995", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| lenet300 | 99.5% | 1 | finetune |" in out.stdout and "→ [(" in out.stdout


def test_the_gmp_flatness_bench_runs_end_to_end_in_its_dry_run():
    """bench/gmp_flat.py --dry-run: a GMP run's pruning epochs timed one by one and compared (no page written)."""
    root = Path(__file__).resolve().parents[1]
    data = root.parent / "shared" / "data" / "mnist"
    if not data.exists():
        pytest.skip("../shared/data not beside the checkout")
    out = subprocess.run([sys.executable, str(root / "bench" / "gmp_flat.py"), "--dry-run", "--data-dir", str(data)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "over 6 pruning epochs" in out.stdout and "Every pruning epoch, in seconds:" in out.stdout


@pytest.mark.parametrize("script", ["beyond_mnist.py", "mask_swap.py"])
def test_the_beyond_mnist_sections_regenerate_byte_identical_from_their_results(script):
    """docs/results.md's LeNet-5 and CIFAR-10-JPEG75 sections come from docs/runs/beyond/ (and the mask-swap section
    from docs/runs/mask-swap/) alone."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        shutil.copytree(ROOT / "docs", docs)
        out = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--publish-only", "--docs", str(docs)],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert (docs / "results.md").read_bytes() == (ROOT / "docs" / "results.md").read_bytes()


def test_the_mask_design_bench_runs_and_finds_what_each_candidate_keeps():
    """bench/mask_design.py --dry-run: every candidate timed, and what each gives the rest of the library checked on
    the model: the library's mask keeps copies' zeros, `weight` a Parameter and the state_dict keys; the two
    reparametrisations do not keep `weight` a Parameter; masking by hand does not survive a copy."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "mask_design.py"), "--dry-run"], capture_output=True,
                         text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "(" in line and "of" in line]
    by_kind: dict[str, list[str]] = {}
    for line in rows:
        by_kind.setdefault(line.split(" | ")[0][2:], []).append(line)
    assert len(by_kind["hypersparse"]) == 2  # LeNet-300 and LeNet-5
    for kind, lines in by_kind.items():
        for line in lines:
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[1].startswith("yes ("), line  # every candidate keeps the pruned weights zero while training
            if kind.startswith("hypersparse"):
                assert cells[2:] == ["yes", "yes", "yes"], line
            if kind in ("torch prune", "parametrize"):
                assert cells[3] == "**no**", line
            if kind == "by hand":
                assert cells[2] == "**no**", line
