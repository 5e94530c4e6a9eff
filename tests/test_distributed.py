"""torchrun with 2 CPU processes (gloo): identical ranks, exact sparsity, resume after a kill."""
import json
import math
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from conftest import cli, run_metrics

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")

ARGS = ["train", "--model", "mlp", "--sparsity", "0.95", "--warmup-epochs", "2", "--finetune-epochs", "2",
        "--lambda-init", "1e-3", "--eta", "2", "--seed", "2"]


def torchrun(*args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "hypersparse",
           *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_ranks_identical_and_exact_sparsity(tmp_path):
    out = torchrun(*ARGS, "--run-dir", str(tmp_path / "ddp"))
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    d = summary["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo"
    assert len(d["rank_digests"]) == 2 and d["rank_digests"][0] == d["rank_digests"][1]
    numel = summary["sparse"]["numel"]
    assert summary["sparse"]["kept"] == numel - math.floor(0.95 * numel)
    # the same run in one process ends at exactly the same sparsity
    single = cli(*ARGS, "--run-dir", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    ref = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert ((ref["sparse"]["kept"], ref["sparse"]["sparsity"])
            == (summary["sparse"]["kept"], summary["sparse"]["sparsity"]))
    # only rank 0 wrote: one line per epoch
    rows = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == sum(summary["epochs"].values())
    weights = torch.load(tmp_path / "ddp" / "model.pt")
    zeros = sum(int((weights[k] == 0).sum()) for k in weights if k.endswith("weight"))
    assert zeros == math.floor(0.95 * numel)


def test_batch_size_must_split_evenly(tmp_path):
    out = torchrun(*ARGS, "--batch-size", "63", "--run-dir", str(tmp_path / "odd"))
    assert out.returncode == 1  # torchrun's own code when a worker fails; each worker exits with 2
    assert re.search(r"exitcode\s*:\s*2", out.stderr), out.stderr[-2000:]
    assert "--batch-size 63 must be divisible by the 2 processes" in out.stderr
    assert out.stderr.count("hypersparse: error") == 1  # rank 0 only
    assert not (tmp_path / "odd").exists()
    out = torchrun("train", "--sparsity", "3")  # a bad value: every rank refuses it, rank 0 says so
    assert out.stderr.count("hypersparse: error") == 1, out.stderr[-2000:]


def test_killed_ddp_run_resumes_bit_exact(tmp_path):
    ref = torchrun(*ARGS, "--run-dir", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_rows, ref_summary = run_metrics(tmp_path / "ref")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", "-m", "hypersparse",
           *ARGS, "--run-dir", str(tmp_path / "cut")]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    seen = 0
    for line in proc.stdout:
        seen += " regularize " in line
        if seen >= 2:
            os.killpg(proc.pid, signal.SIGKILL)  # the agent and both ranks
            break
    proc.wait()
    assert seen >= 2 and not (tmp_path / "cut" / "summary.json").exists()
    out = torchrun("train", "--resume", str(tmp_path / "cut"))
    assert out.returncode == 0, out.stderr[-3000:]
    rows, summary = run_metrics(tmp_path / "cut")
    assert rows == ref_rows
    for s in (summary, ref_summary):
        s["config"]["run"].pop("run_dir")
    assert summary == ref_summary


def test_rank_shards_are_slices_of_the_single_process_batches():
    import copy

    from hypersparse.data.loader import DeviceLoader

    x, y = torch.randint(0, 255, (70, 3, 8, 8), dtype=torch.uint8), torch.arange(70)
    loader = DeviceLoader(x, y, 16, (0.5,) * 3, (0.2,) * 3, "cpu", augment=True, seed=3)
    full = list(loader.batches(1))
    for rank in range(2):
        shard = copy.copy(loader)
        shard.rank, shard.world = rank, 2
        batches = list(shard.batches(1))
        assert len(batches) == len(full)
        for (fx, fy), (sx, sy) in zip(full, batches):
            n = len(fy) - len(fy) % 2  # the last batch (6 images) splits evenly; an odd one would lose its last image
            assert torch.equal(fx[rank:n:2], sx) and torch.equal(fy[rank:n:2], sy)  # same crops and flips


@pytest.mark.parametrize("env,needle", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not a process count"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "", "MASTER_PORT": ""}, "asks for a process group, which cannot"),
    # trial 31k E011: a stray RANK 1 without torchrun printed nothing at all (only rank 0 speaks under torchrun)
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "", "MASTER_PORT": ""}, "asks for a process group, which cannot"),
])
def test_a_torchrun_environment_that_is_not_one_is_one_line(tmp_path, env, needle):
    """Trial 31g T3: a malformed or partial torchrun environment ended in a traceback (int(), env:// rendezvous)."""
    full = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
    full.update({k: v for k, v in env.items() if v})
    done = subprocess.run([sys.executable, "-m", "hypersparse", *ARGS, "--epochs-scale", "0.05", "--run-dir",
                           str(tmp_path / "r")], capture_output=True, text=True, env=full, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], done.stderr
    assert not (tmp_path / "r").exists()


def test_a_stray_rank_does_not_skip_the_run_folders_lock(tmp_path):
    """Trial 31g S4: with RANK set and no WORLD_SIZE (no torchrun), --resume took no lock, so two resumes of one run
    both wrote it. One process is rank 0, whatever RANK says: the second resume is refused."""
    from hypersparse.run_write import RunLock

    assert cli("train", "--epochs-scale", "0.05", "--run-dir", str(tmp_path / "r")).returncode == 0
    with RunLock(tmp_path / "r"):  # a resume that runs now, as the second one sees it
        done = subprocess.run([sys.executable, "-m", "hypersparse", "train", "--resume", str(tmp_path / "r")],
                              capture_output=True, text=True, env=dict(os.environ, RANK="1"), timeout=120)
    assert done.returncode == 2 and "in use by process" in done.stderr, done.stderr
