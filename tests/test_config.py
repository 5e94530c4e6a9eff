"""Settings by concern: files, --set and flags in that order, and every setting that would do nothing is an error."""
import json
import os

import pytest

from hypersparse.cli import main
from hypersparse.config import TrainConfig
from hypersparse.engine import train
from hypersparse.errors import UserError

# each of these used to be accepted and silently ignored
IGNORED = [
    (["--method", "gmp", "--lambda-init", "1e-4"], "--lambda-init applies to --method art only"),
    (["--method", "gmp", "--eta", "1.2"], "--eta applies to --method art only"),
    (["--method", "oneshot", "--reg", "l1"], "--reg applies to --method art only"),
    (["--method", "snip", "--criterion", "paper"], "--criterion applies to --method art only"),
    (["--method", "gmp", "--reg-epochs-target", "30"], "--reg-epochs-target applies to --method art only"),
    (["--method", "gmp", "--set", "art.buffer_k=2"], "--set art.buffer_k applies to --method art only"),
    (["--method", "gmp", "--set", "hs.hs_refresh_every=1"], "--set hs.hs_refresh_every applies to --method art only"),
    (["--prune-epochs", "10"], "--prune-epochs applies to --method oneshot, gmp, snip or rigl only"),
    (["--reg", "l1", "--set", "hs.hs_compile=off"], "--set hs.hs_compile applies to --reg hs only"),
    (["--reg", "l2", "--set", "hs_refresh_every=4"], "--set hs.hs_refresh_every applies to --reg hs only"),
    (["--download"], "--download works for mnist, fashion-mnist, cifar10, cifar100 only, not dataset 'digits'"),
    (["--dataset", "cifar10-jpeg75", "--data-dir", "x", "--download"], "--download works for mnist, fashion-mnist, "
     "cifar10, cifar100 only"),
    (["--data-dir", "somewhere"], "--data-dir is not read by dataset 'digits'"),
    (["--pretrained", "model.pt", "--warmup-epochs", "5"], "--warmup-epochs does not apply with --pretrained"),
    (["--resume", "runs/x", "--lr", "0.01"], "--resume continues a run with the settings it started with; drop --lr"),
    (["--resume", "runs/x", "--set", "schedule.momentum=0.5"], "with the settings it started with; drop --set"),
]
BAD = [
    (["--lambda-init", "auto:2"], "--lambda-init auto:P needs P in (0, 1)"),
    (["--lambda-init", "fast"], "--lambda-init must be a positive number, auto or auto:P"),
    (["--lambda-init=-1e-5"], "--lambda-init must be a positive number"),
    (["--batch-size", "many"], "argument --batch-size: invalid int value"),
    (["--set", "art.lambda_auto_push=0.1"], "unknown setting 'art.lambda_auto_push'"),
    (["--set", "momentum"], "--set expects SECTION.KEY=VALUE"),
    (["--set", "schedule.momentum=fast"], "--set schedule.momentum must be a number in [0, 1), got 'fast'"),
    (["--set", "run.device=tpu"], "--set run.device must be auto, cpu, cuda, cuda:N or mps"),
    (["--epochs-scale", "1e9"], "--epochs-scale 1e+09 makes a phase longer than 10 million epochs"),
    (["--seed", str(2**70)], "--seed must be in [0, 2**32)"),
    (["--method", "prune-all"], "--method must be one of art, oneshot, gmp, snip"),
    (["--config", "nowhere.toml"], "cannot read --config nowhere.toml"),
]


@pytest.mark.parametrize("args,needle", IGNORED + BAD, ids=[" ".join(a) for a, _ in IGNORED + BAD])
def test_a_setting_that_would_do_nothing_or_is_wrong_is_one_line_and_exit_2(args, needle, tmp_path, capsys,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["train", *args, "--run-dir", str(tmp_path / "r")] if "--resume" not in args else ["train", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_a_run_s_config_json_repeats_the_run(tmp_path, capsys):
    first = train(TrainConfig.from_dict({"sparsity": 0.9, "epochs_scale": 0.05, "lambda_init": 1e-3, "seed": 2}),
                  tmp_path / "a", progress=False, out=open(os.devnull, "w"))
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert set(config) == {"data", "model", "sparsity", "art", "hs", "schedule", "run"}  # no baseline section: not used
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "--run-dir", str(tmp_path / "b")]) == 0
    second = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert second["sparse"] == first["sparse"] and second["dense"] == first["dense"]


def test_the_readmes_repeat_a_run_command_makes_a_new_run(tmp_path, capsys, monkeypatch):
    """Trial 31f G002: `train --config runs/<run>/config.json --seed 1`, as the README shows it, was refused: the
    file names the run's own folder, which holds a run. A run repeated from it goes to a new folder."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--sparsity", "0.9", "--epochs-scale", "0.05", "--lambda-init", "1e-3",
                 "--run-dir", "runs/first"]) == 0
    before = sorted(p.name for p in (tmp_path / "runs" / "first").iterdir())
    assert main(["train", "--config", "runs/first/config.json", "--seed", "1"]) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(runs) == 2 and sorted(p.name for p in (tmp_path / "runs" / "first").iterdir()) == before
    again = json.loads(next(p for p in (tmp_path / "runs").glob("*/config.json") if p.parent.name != "first")
                       .read_text())
    assert again["run"]["seed"] == 1


def test_flags_override_set_which_overrides_the_file(tmp_path):
    (tmp_path / "run.toml").write_text('[art]\neta = 1.2\nlambda_init = "auto:0.05"\n[schedule]\nlr = 0.05\n'
                                       'momentum = 0.8\n')
    base = TrainConfig.from_file(tmp_path / "run.toml")
    cfg = TrainConfig.from_dict({"schedule.momentum": "0.7", "art.eta": 1.3}, base=base)
    assert (cfg.art.eta, cfg.art.lambda_init, cfg.schedule.lr, cfg.schedule.momentum) == (1.3, "auto:0.05", 0.05, 0.7)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # what a run writes, read back, is the same config


def test_a_baseline_run_writes_no_art_settings_and_rejects_them_when_read_with_art_ones(tmp_path):
    cfg = TrainConfig.from_dict({"method": "gmp", "prune_epochs": 4})
    assert "art" not in cfg.to_dict() and cfg.to_dict()["baseline"] == {"prune_epochs": 4}
    with pytest.raises(UserError, match="--prune-epochs applies to --method oneshot, gmp, snip or rigl only"):
        TrainConfig.from_dict({**cfg.to_dict(), "sparsity": {"method": "art", "sparsity": 0.9}})


def test_a_checkpoint_of_another_layout_version_is_refused_with_one_line(tmp_path, capsys):
    import torch

    train(TrainConfig.from_dict({"epochs_scale": 0.02, "lambda_init": 1e-3}), tmp_path / "r", progress=False,
          out=open(os.devnull, "w"))
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    ckpt["version"] = 1
    torch.save(ckpt, tmp_path / "r" / "checkpoint.pt")
    assert main(["train", "--resume", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layout version 1; this hypersparse reads version 3" in err[0]
