"""The CLI engine: which dense accuracy the stop rule compares with, lambda_init 'auto' in a run, and the deadline."""
import os
import warnings

import pytest
import torch

from hypersparse.config import TrainConfig
from hypersparse.data import _split, register_dataset
from hypersparse.engine import Trainer
from hypersparse.run_read import read_json
from hypersparse.run_write import format_summary
from hypersparse.schedule import ARTDidNotConverge, lambda_for_push


def small_synthetic(data_dir, seed, download=False):
    """A small generated problem: 10 noisy clusters of 8x8 single-channel 'images'."""
    g = torch.Generator().manual_seed(0)
    centers = 0.5 + 0.1 * torch.randn(10, 64, generator=g)
    y = torch.randint(0, 10, (1500,), generator=g)
    x = ((centers[y] + 0.2 * torch.randn(1500, 64, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)
    x = x.view(-1, 1, 8, 8)
    return _split("small-synthetic", x[:1200], y[:1200], x[1200:], y[1200:], 200, seed, 10, augment=False)


register_dataset("small-synthetic", small_synthetic, "test problem")


def trainer_for(tmp_path, out=None, **kw):
    kw = {"epochs_scale": 0.05, "lambda_init": 1e-4, "pruned_eval_size": 500, "seed": 0, **kw}
    cfg = TrainConfig.from_dict({"dataset": "small-synthetic", **kw})
    (tmp_path / "run").mkdir()
    return Trainer(cfg, tmp_path / "run", progress=False, out=out or open(os.devnull, "w"))


def test_matched_criterion_scores_the_dense_model_on_the_pruned_copy_s_images(tmp_path):
    trainer = trainer_for(tmp_path, criterion="matched")
    trainer.run()
    rows = [r for r in trainer.metrics if r["phase"] == "regularize"]
    assert rows and all(r["dense_acc"] is not None for r in rows)
    # scored on the fixed 500-image subset: whole numbers of images out of 500, not the running training accuracy
    assert all(abs(r["dense_acc"] * 500 - round(r["dense_acc"] * 500)) < 1e-9 for r in rows)
    assert any(r["dense_acc"] != r["train_acc"] for r in rows)


def test_paper_criterion_uses_the_running_training_accuracy(tmp_path):
    trainer = trainer_for(tmp_path, criterion="paper")
    trainer.run()
    rows = [r for r in trainer.metrics if r["phase"] == "regularize"]
    assert rows and all(r["dense_acc"] == r["train_acc"] for r in rows)
    # the stop happened where the buffer mean of pruned scores first reached that dense accuracy
    stop = next(i for i, r in enumerate(rows) if r["event"] == "stop")
    assert rows[stop]["buffer_mean"] >= rows[stop]["dense_acc"] and rows[stop]["stop_reason"] == "rule"
    assert all(r["buffer_mean"] < r["dense_acc"] for r in rows[2:stop])


def test_auto_lambda_in_a_run_is_deterministic_logged_and_used(tmp_path):
    firsts = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        with open(tmp_path / f"{run}.txt", "w") as out:
            trainer = trainer_for(tmp_path / run, out=out, lambda_init="auto:0.05", seed=3)
            (tmp_path / f"warm-{run}").mkdir()
            warm = Trainer(trainer.cfg, tmp_path / f"warm-{run}", progress=False, out=open(os.devnull, "w"))
            summary = trainer.run()
        firsts.append(next(r for r in trainer.metrics if r["phase"] == "regularize"))
    assert firsts[0]["lambda_init"] == firsts[1]["lambda_init"] == firsts[0]["lambda"] > 0
    assert "shrinks the weight at the cut by 0.05 per epoch" in (tmp_path / "a.txt").read_text()
    assert summary["sparse"]["sparsity"] == pytest.approx(0.9, abs=1e-5)
    # the value is the push formula's on the weights at the end of warm-up: replay warm-up and compute it
    cfg = warm.cfg
    while warm.method.phase == "warmup":
        warm.epoch()
    want = lambda_for_push(warm.method.regularizer, 0.9, 0.05, cfg.schedule.lr, cfg.schedule.momentum,
                           len(warm.train_loader))
    assert firsts[0]["lambda_init"] == pytest.approx(want, rel=1e-12)


def test_reg_epochs_target_is_a_deadline_the_run_logs(tmp_path, monkeypatch):
    import hypersparse.schedule

    # lambda far too small for the pruned copy (99 % sparse) to move: the deadline waits for it to come half-way ...
    with open(tmp_path / "out.txt", "w") as out:
        trainer = trainer_for(tmp_path, out=out, lambda_init=1e-12, reg_epochs_target=3, max_reg_epochs=100,
                              sparsity=0.99)
        with pytest.raises(ARTDidNotConverge):  # max_reg_epochs 100, scaled by 0.05: 5
            trainer.run()
    reg = [r for r in trainer.metrics if r["phase"] == "regularize"]
    assert len(reg) == 4 and "stop" not in [r["event"] for r in reg]  # the 5th epoch raised
    assert ["past_deadline" in r for r in reg] == [False, False, True, True]
    assert all(r["past_deadline"] < 0.5 for r in reg[2:])
    assert (tmp_path / "out.txt").read_text().count("past --reg-epochs-target") == 2  # epochs 3 and 4
    # ... and where it may cut at any progress, it fixes the mask at epoch 3 and says why
    monkeypatch.setattr(hypersparse.schedule, "DEADLINE_PROGRESS", float("-inf"))
    (tmp_path / "cut").mkdir()
    trainer = trainer_for(tmp_path / "cut", lambda_init=1e-12, reg_epochs_target=3)
    summary = trainer.run()
    reg = [r for r in trainer.metrics if r["phase"] == "regularize"]
    assert len(reg) == 3 and [r["event"] for r in reg] == ["regularize", "regularize", "stop"]
    assert reg[-1]["stop_reason"] == "deadline" and reg[-1]["pruned_acc"] < reg[-1]["dense_acc"]
    assert summary["sparse"]["sparsity"] == pytest.approx(0.9, abs=1e-5)  # the mask is fixed and kept


@pytest.mark.parametrize("sparsity,lambda_init", [(0.8, "auto"), (0.9, 5e-6)])
def test_pretrained_from_a_finished_sparse_run_trains_without_diverging(tmp_path, sparsity, lambda_init):
    """--pretrained <a finished run's model.pt>: the model starts 90 % sparse, so the k-th smallest magnitude is 0
    at 0.8 and 0.9; HyperSparse's cut moves to the nearest live weight and the run ends normally, sparse."""
    from hypersparse.engine import train

    quiet = open(os.devnull, "w")
    first = TrainConfig.from_dict({"sparsity": 0.9, "epochs_scale": 0.05, "lambda_init": 1e-3})
    train(first, tmp_path / "first", progress=False, out=quiet)
    again = TrainConfig.from_dict({"sparsity": sparsity, "epochs_scale": 0.05, "lambda_init": lambda_init,
                                   "pretrained": str(tmp_path / "first" / "model.pt")})
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        summary = train(again, tmp_path / "again", progress=False, out=quiet)
    # trial 31m C265: a target below the start's sparsity lets pruned weights grow back, and the run says so
    said = [str(w.message) for w in seen if "more than --sparsity" in str(w.message)]
    assert said == ([] if sparsity >= 0.9 else [f"--pretrained {tmp_path / 'first' / 'model.pt'} is 90.00% sparse "
                                                f"already, more than --sparsity 0.8: the run ends 80.00% sparse, so "
                                                "weights that are zero now may grow back"]), said
    assert summary["sparse"]["sparsity"] >= sparsity and summary["epochs"]["regularize"] >= 3
    assert summary["sparse"]["test_acc"] > 0.5
    # the starting model is reported as it is (90 % sparse), in the file a later command reads and in the table
    assert summary["dense"]["sparsity"] == pytest.approx(0.9, abs=1e-5)
    stored = read_json(tmp_path / "again" / "summary.json")
    assert stored["dense"]["kept"] == summary["sparse"]["numel"] - round(0.9 * summary["sparse"]["numel"])
    start_row = next(line for line in format_summary(stored).splitlines() if line.startswith("pretrained"))
    assert "90.00%" in start_row, start_row


def test_keeping_the_momentum_at_the_stop_changes_only_what_follows_the_stop(tmp_path):
    """``art.reset_optimizer=false`` (issue 35's test of whether the authors' reset costs accuracy): the same run up to
    the stop, and from the first fine-tuning epoch on, training that starts with the momentum the run had."""
    rows = {}
    for reset in (True, False):
        (tmp_path / str(reset)).mkdir()
        trainer = trainer_for(tmp_path / str(reset), reset_optimizer=reset)
        trainer.run()
        rows[reset] = [(r["phase"], r["loss"]) for r in trainer.metrics]
    stop = next(i for i, (phase, _) in enumerate(rows[True]) if phase == "finetune")
    assert rows[True][:stop] == rows[False][:stop]
    assert rows[True][stop][1] != rows[False][stop][1]


def test_pretrained_takes_a_sparse_export_as_it_takes_model_pt(tmp_path):
    """Trial 31i P004: ``--pretrained run.safetensors`` (export --format sparse) was refused as a model that does not
    fit; it is the same weights as model.pt, so the run starts from them exactly."""
    from hypersparse.engine import train

    from conftest import cli

    quiet = open(os.devnull, "w")
    first = TrainConfig.from_dict({"sparsity": 0.9, "epochs_scale": 0.05, "lambda_init": 1e-3})
    done = train(first, tmp_path / "first", progress=False, out=quiet)
    exported = cli("export", str(tmp_path / "first"), "--format", "sparse", "--out", str(tmp_path / "m.safetensors"))
    assert exported.returncode == 0, exported.stderr
    again = TrainConfig.from_dict({"sparsity": 0.9, "epochs_scale": 0.05,
                                   "pretrained": str(tmp_path / "m.safetensors")})
    summary = train(again, tmp_path / "again", progress=False, out=quiet)
    assert summary["dense"]["test_acc"] == done["sparse"]["test_acc"]
    assert summary["dense"]["sparsity"] == pytest.approx(0.9, abs=1e-5)
