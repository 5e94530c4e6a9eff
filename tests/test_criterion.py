"""ART's stop rule (paper vs matched) and the self-calibrated lambda_0."""
import json
import os
from itertools import islice

import pytest
import torch

from hypersparse.config import TrainConfig
from hypersparse.data import _split, register_dataset
from hypersparse.engine import Trainer
from hypersparse.errors import UserError
from hypersparse.schedule import ARTDidNotConverge
from hypersparse.methods.art import calibrate_lambda


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
    cfg = TrainConfig(dataset="small-synthetic", **kw)
    (tmp_path / "run").mkdir()
    return Trainer(cfg, tmp_path / "run", progress=False, out=out or open(os.devnull, "w"))


def record_decisions(trainer):
    """Wrap the method's end_epoch: what it was given, and the measurements available at that moment."""
    seen = []
    inner = trainer.method.end_epoch

    def spy(model, dense_acc, pruned_acc):
        seen.append({"dense_acc": dense_acc, "subset_eval": trainer.subset_accuracy(model), "phase": trainer.method.phase,
                     "pruned_fn": pruned_acc})
        return inner(model, dense_acc, pruned_acc)

    trainer.method.end_epoch = spy
    return seen


def test_matched_criterion_measures_both_sides_the_same_way(tmp_path):
    trainer = trainer_for(tmp_path, criterion="matched")
    seen = record_decisions(trainer)
    trainer.run()
    reg = [s for s in seen if s["phase"] == "regularize"]
    assert reg
    for s in reg:
        # dense side: eval mode, the same fixed training subset the pruned copy is scored on
        assert s["dense_acc"] == s["subset_eval"]
        assert s["pruned_fn"].__func__ is Trainer.pruned_accuracy
    rows = [r for r in trainer.metrics if r["phase"] == "regularize"]
    assert [r["dense_acc"] for r in rows] == [s["dense_acc"] for s in reg]  # and that is what was logged


def test_paper_criterion_uses_the_running_training_accuracy(tmp_path):
    trainer = trainer_for(tmp_path, criterion="paper")
    seen = record_decisions(trainer)
    trainer.run()
    reg_rows = [r for r in trainer.metrics if r["phase"] == "regularize"]
    reg_seen = [s for s in seen if s["phase"] == "regularize"]
    assert reg_rows and len(reg_rows) == len(reg_seen)
    for row, s in zip(reg_rows, reg_seen):
        # the authors' comparison: dense running training accuracy (train mode, augmented batches, while weights move)
        assert s["dense_acc"] == row["train_acc"]
        assert row["dense_acc"] == row["train_acc"]
    # the stop happened where the buffer mean of pruned scores first reached that dense accuracy
    history = [h for h in trainer.method.history if h["phase"] == "regularize"]
    stop = next(i for i, h in enumerate(history) if h.get("chosen_epoch") is not None)
    assert history[stop]["buffer_mean"] >= history[stop]["dense_acc"]
    assert reg_rows[stop]["event"] == "stop" and reg_rows[stop]["stop_reason"] == "rule"
    assert all(h["buffer_mean"] < h["dense_acc"] for h in history[2:stop])


def test_auto_lambda_is_deterministic_and_hits_the_ratio(tmp_path):
    values = []
    for _ in range(2):
        (tmp_path / str(len(values))).mkdir()
        t = Trainer(TrainConfig(dataset="small-synthetic", lambda_init="auto", seed=3), tmp_path / str(len(values)),
                    progress=False, out=open(os.devnull, "w"))
        batches = list(islice(t.train_loader.batches(epoch=-2), 4))
        values.append(calibrate_lambda(t.model, t.method.regularizer, batches, 0.1))
    assert values[0] == values[1] > 0
    # the definition: ||lambda_0 g_reg|| = 0.1 * mean ||g_task|| over the prunable weights
    reg_norm = float(torch.sqrt(sum((g**2).sum() for g in t.method.regularizer.gradient())))
    norms = []
    for xb, yb in batches:
        t.model.zero_grad()
        torch.nn.functional.cross_entropy(t.model(xb), yb).backward()
        norms.append(float(torch.sqrt(sum((p.grad**2).sum() for p in t.method.regularizer.params))))
    assert values[0] * reg_norm == pytest.approx(0.1 * sum(norms) / len(norms), rel=1e-5)


def test_auto_lambda_in_a_run_is_logged_and_used(tmp_path):
    with open(tmp_path / "out.txt", "w") as out:
        trainer = trainer_for(tmp_path, out=out, lambda_init="auto")
        summary = trainer.run()
    # the default calibration is by push, at 0.03 per epoch
    assert "shrinks the weight at the cut by 0.03 per epoch" in (tmp_path / "out.txt").read_text()
    rows = [r for r in trainer.metrics if r["phase"] == "regularize"]
    lam0 = rows[0]["lambda_init"]
    assert lam0 and rows[0]["lambda"] == pytest.approx(lam0)
    assert summary["sparse"]["sparsity"] == pytest.approx(0.9, abs=1e-5)


def test_auto_lambda_per_epoch_divides_by_the_root_of_the_steps(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    step_run = trainer_for(tmp_path / "a", lambda_init="auto", lambda_auto_push=0)
    epoch_run = trainer_for(tmp_path / "b", lambda_init="auto", lambda_auto_push=0, lambda_auto_per="epoch")
    step_run.run(), epoch_run.run()
    steps = len(epoch_run.train_loader)
    assert steps != 25  # else both modes agree and this test could not tell them apart
    first = [next(r for r in t.metrics if r["phase"] == "regularize")["lambda_init"] for t in (step_run, epoch_run)]
    # same seed, same model and batches at the first regularization epoch: only the sqrt(steps / 25) differs
    assert first[1] == pytest.approx(first[0] / (steps / 25) ** 0.5, rel=1e-9)


def test_auto_lambda_per_rejects_unknown_modes():
    with pytest.raises(UserError, match="--lambda-auto-per must be one of step, epoch"):
        TrainConfig(lambda_auto_per="batch").validate()


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


def test_auto_lambda_averages_over_the_requested_batches(tmp_path, monkeypatch):
    import hypersparse.methods.art as art_module

    seen = []
    real = art_module.calibrate_lambda

    def spy(model, regularizer, batches, fraction, steps_per_epoch=None):
        seen.append(batches)
        return real(model, regularizer, batches, fraction, steps_per_epoch)

    monkeypatch.setattr(art_module, "calibrate_lambda", spy)
    trainer = trainer_for(tmp_path, lambda_init="auto", lambda_auto_push=0, lambda_auto_batches=7)
    trainer.run()
    assert len(seen) == 1 and len(seen[0]) == 7  # once, at the first regularization epoch
    want = list(islice(trainer.train_loader.batches(epoch=-2), 7))  # the seed's fixed batches, in order
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(seen[0], want))
    with pytest.raises(UserError, match="--lambda-auto-batches must be a positive number"):
        TrainConfig(lambda_auto_batches=0).validate()


def test_auto_lambda_by_push_matches_the_closed_formula():
    import math

    from hypersparse.methods.art import lambda_for_push
    from hypersparse.regularizers import L1, HyperSparse

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    w = torch.cat([model[0].weight.detach().abs().flatten(), model[2].weight.detach().abs().flatten()]).double()
    kappa, push, lr, m, steps = 0.9, 0.02, 0.1, 0.9, 50
    cut = w.sort().values[math.floor(kappa * w.numel()) - 1]  # the k-th smallest magnitude
    # HyperSparse at the cut: s |w| = artanh(1/sqrt 3), so sech^2 = 2/3 and g = s (2/3) ||w||_1 / sum tanh(s|w|)
    s = math.atanh(1 / math.sqrt(3)) / cut
    g = s * (2 / 3) * w.sum() / torch.tanh(s * w).sum()
    want = push * (1 - m) / (lr * steps * float(g / cut))
    assert lambda_for_push(HyperSparse(model, kappa), kappa, push, lr, m, steps) == pytest.approx(want, rel=1e-6)
    # L1's gradient is 1 everywhere: lambda * steps * lr / (1 - m) = push * |w|_(k)
    want = push * (1 - m) * float(cut) / (lr * steps)
    assert lambda_for_push(L1(model), kappa, push, lr, m, steps) == pytest.approx(want, rel=1e-9)


def test_auto_lambda_by_push_in_a_run_is_deterministic_logged_and_used(tmp_path, monkeypatch):
    import hypersparse.methods.art as art_module

    calls = []
    real = art_module.lambda_for_push

    def spy(regularizer, sparsity, push, lr, momentum, steps):
        calls.append((sparsity, push, lr, momentum, steps))
        calls.append(real(regularizer, sparsity, push, lr, momentum, steps))
        return calls[-1]

    def no_ratio(*args, **kwargs):
        raise AssertionError("the gradient-ratio calibration must not run with --lambda-auto-push")

    monkeypatch.setattr(art_module, "lambda_for_push", spy)
    monkeypatch.setattr(art_module, "calibrate_lambda", no_ratio)
    firsts = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        with open(tmp_path / f"{run}.txt", "w") as out:
            trainer = trainer_for(tmp_path / run, out=out, lambda_init="auto", lambda_auto_push=0.05, seed=3)
            trainer.run()
        firsts.append(next(r for r in trainer.metrics if r["phase"] == "regularize"))
    assert len(calls) == 4  # once per run, at the first regularization epoch
    cfg = trainer.cfg
    assert calls[0] == (cfg.sparsity, 0.05, cfg.lr, cfg.momentum, len(trainer.train_loader))
    assert calls[1] == calls[3] > 0  # same seed and model: the same lambda_0
    assert firsts[0]["lambda_init"] == firsts[1]["lambda_init"] == calls[1] == firsts[0]["lambda"]
    assert "shrinks the weight at the cut by 0.05 per epoch" in (tmp_path / "a.txt").read_text()


def test_auto_lambda_by_push_rejects_bad_values_and_an_already_sparse_model():
    from hypersparse.methods.art import lambda_for_push
    from hypersparse.regularizers import HyperSparse

    for bad in (-0.1, 1.0, float("nan")):
        with pytest.raises(UserError, match=r"--lambda-auto-push must be in \[0, 1\)"):
            TrainConfig(lambda_init="auto", lambda_auto_push=bad).validate()
    model = torch.nn.Linear(10, 10)
    with torch.no_grad():
        model.weight[:, :5] = 0  # half the weights are zero: the cut at 0.3 sits on a zero
    with pytest.raises(UserError, match="pruning cut is 0 .*already that sparse.*--lambda-init"):
        lambda_for_push(HyperSparse(model, 0.3), 0.3, 0.02, 0.1, 0.9, 10)


def test_a_checkpoint_from_before_push_resumes_with_the_task_gradient_calibration(tmp_path):
    from hypersparse.checkpoint import load_checkpoint, save_checkpoint
    from hypersparse.engine import CHECKPOINT, resume

    class Stop(Exception):
        pass

    (tmp_path / "ref").mkdir()
    ref = trainer_for(tmp_path / "ref", lambda_init="auto", lambda_auto_push=0)
    ref.run()
    want = next(r for r in ref.metrics if r["phase"] == "regularize")["lambda_init"]
    (tmp_path / "cut").mkdir()
    cut = trainer_for(tmp_path / "cut", lambda_init="auto", lambda_auto_push=0)

    def stop():
        raise Stop

    cut._calibrate_lambda = stop  # interrupted after warm-up, before lambda_0 is chosen
    with pytest.raises(Stop):
        cut.run()
    ckpt = load_checkpoint(tmp_path / "cut" / "run" / CHECKPOINT)
    del ckpt["config"]["lambda_auto_push"]  # as an older version wrote it
    save_checkpoint(ckpt, tmp_path / "cut" / "run" / CHECKPOINT)
    with open(tmp_path / "out.txt", "w") as out:
        resume(tmp_path / "cut" / "run", progress=False, out=out)
    assert "regularizer gradient norm = 0.1 x task" in (tmp_path / "out.txt").read_text()
    rows = [json.loads(line) for line in (tmp_path / "cut" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in rows if r["phase"] == "regularize")["lambda_init"] == want
