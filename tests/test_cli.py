import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hypersparse.config import TrainConfig
from hypersparse.engine import train

from conftest import cli, run_metrics

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QUICK = ["--epochs-scale", "0.05", "--lambda-init", "1e-3", "--seed", "1"]


def test_digits_pipeline_exact_sparsity_and_accuracy(tmp_path):
    cfg = TrainConfig.from_dict(dict(sparsity=0.9, epochs_scale=0.1, lambda_init=1e-3, seed=0))
    summary = train(cfg, tmp_path / "run", progress=False, out=open(os.devnull, "w"))
    numel = summary["sparse"]["numel"]
    assert summary["sparse"]["kept"] == numel - math.floor(0.9 * numel)
    assert summary["sparse"]["test_acc"] >= 0.85
    assert summary["epochs"]["warmup"] == 6 and summary["epochs"]["finetune"] == 16
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == sum(summary["epochs"].values())
    for key in ("phase", "lambda", "val_acc", "sparsity", "seconds"):
        assert key in lines[0]
    reg = [row for row in lines if row["phase"] == "regularize"]
    assert reg and all(row["pruned_acc"] is not None and row["dense_acc"] is not None and row["lambda"] > 0
                       for row in reg)
    # the regularizer concentrates the L1 norm in the kept weights, so the share the cut drops falls
    assert all(0 < row["pruned_mass"] < 1 for row in reg) and reg[-1]["pruned_mass"] < reg[0]["pruned_mass"]
    assert all("pruned_mass" not in row for row in lines if row["phase"] != "regularize")
    # the saved model reloads through `eval` at the same sparsity
    out = cli("eval", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "sparsity 90.00%" in out.stdout


def test_sigkill_during_regularization_then_resume_is_bit_exact(tmp_path):
    args = ["train", "--model", "mlp", "--sparsity", "0.95", "--epochs-scale", "0.2", "--lambda-init", "1e-4",
            "--eta", "1.1", "--seed", "3"]
    ref = cli(*args, "--run-dir", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    ref_rows, ref_summary = run_metrics(tmp_path / "ref")
    n_reg = sum(r["phase"] == "regularize" for r in ref_rows)
    assert n_reg >= 4, "the reference run needs a few regularization epochs to interrupt"

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "hypersparse", *args, "--run-dir", str(tmp_path / "cut")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = 0
    for line in proc.stdout:
        seen += " regularize " in line
        if seen >= 2:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "summary.json").exists()
    out = cli("train", "--resume", str(tmp_path / "cut"))
    assert out.returncode == 0, out.stderr
    assert "resuming" in out.stdout
    rows, summary = run_metrics(tmp_path / "cut")
    assert rows == ref_rows
    summary["config"]["run"].pop("run_dir"), ref_summary["config"]["run"].pop("run_dir")
    assert summary == ref_summary


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "alexnet"], "unknown model 'alexnet'"),
        (["--model", "resnet999"], "depth must be 6n+2"),
        (["--dataset", "imagenet22k"], "unknown dataset 'imagenet22k'"),
        (["--sparsity", "1.0"], "--sparsity must be in [0, 1)"),
        (["--sparsity", "-0.1"], "--sparsity must be in [0, 1)"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "does not exist"),
        (["--run-dir", "/proc/version/run"], "cannot write to run directory"),
        (["--sparsity", "abc"], "invalid float value"),
        (["--reg-epochs-target", "2"], "--reg-epochs-target must be 0 (off) or at least the ART buffer's 3 epochs"),
    ],
)
def test_bad_input_one_line_exit_2(args, needle, tmp_path):
    extra = [] if "--run-dir" in args else ["--run-dir", str(tmp_path / "r")]
    out = cli("train", *args, *extra)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()  # nothing left behind by a run that could not start


def test_missing_and_corrupt_data_files(tmp_path):
    data = tmp_path / "mnist"
    data.mkdir()
    out = cli("train", "--dataset", "mnist", "--data-dir", str(data), "--run-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and "missing" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    if not SHARED.exists():
        pytest.skip("../shared/data not beside the checkout")
    for f in (SHARED / "mnist").glob("*.gz"):
        (data / f.name).write_bytes(f.read_bytes())
    blob = bytearray((data / "t10k-labels-idx1-ubyte.gz").read_bytes())
    blob[100] ^= 0xFF
    (data / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    out = cli("train", "--dataset", "mnist", "--data-dir", str(data), "--run-dir", str(tmp_path / "r2"))
    assert out.returncode == 2 and "corrupt" in out.stderr and "t10k-labels" in out.stderr
    assert "Traceback" not in out.stderr


def test_diverging_run_exit_1_and_checkpoint_intact(tmp_path):
    run = tmp_path / "div"
    out = cli("train", "--lr", "1e6", "--epochs-scale", "0.05", "--run-dir", str(run))
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0] and "--lr" in lines[0]
    # whatever checkpoint exists is complete and loadable
    if (run / "checkpoint.pt").exists():
        torch.load(run / "checkpoint.pt", weights_only=True)
    assert not list(run.glob(".*.tmp"))


def test_help_explains_flags():
    out = cli("train", "--help")
    assert out.returncode == 0
    for flag in ("--lambda-init", "--eta", "art.buffer_k", "--warmup-epochs", "--finetune-epochs", "--epochs-scale",
                 "--pretrained", "--resume", "--reg", "--criterion", "--config", "--set"):
        assert flag in out.stdout
    # one group per concern, and few enough options to read
    for group in ("data:", "model:", "sparsity:", "art:", "baseline:", "schedule:", "run:"):
        assert f"\n{group}\n" in out.stdout
    options = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  -")]  # -h, --help is one
    assert len(options) <= 28, options


def test_version_names_the_installed_release():
    import hypersparse

    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"hypersparse {hypersparse.__version__}"


def test_a_model_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"0.weight": Evil()}, tmp_path / "evil.pt")
    out = cli("eval", str(tmp_path / "evil.pt"), "--dataset", "digits", "--model", "mlp")
    assert out.returncode == 2 and "could run code" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = cli("train", "--pretrained", str(tmp_path / "evil.pt"), "--epochs-scale", "0.02", "--run-dir",
              str(tmp_path / "r"))
    assert out.returncode == 2 and "could run code" in out.stderr
    assert not marker.exists()


def test_a_plain_pickle_naming_a_function_is_refused_without_advice_to_unpickle(tmp_path):
    """Trial 31m C51/C53: a protocol-0 pickle (not torch's zip) calling builtins.eval was refused, but the line quoted
    torch's advice that re-running with weights_only=False "will likely succeed"."""
    marker = tmp_path / "ran"
    (tmp_path / "evil.pt").write_bytes(f"cbuiltins\neval\n(S'open({str(marker)!r}, \"w\")'\ntR.".encode())
    out = cli("eval", str(tmp_path / "evil.pt"), "--dataset", "digits", "--model", "mlp")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "could run code; refused (Unsupported global" in lines[0], lines
    assert "weights_only" not in lines[0] and not marker.exists()
