"""hypersparse tune: Optuna over lambda_init and eta, on the validation split, continued from its SQLite study."""
import json
import math
from urllib.parse import quote

import pytest

from conftest import cli

optuna = pytest.importorskip("optuna")

BASE = ["tune", "--warmup-epochs", "2", "--finetune-epochs", "2", "--lambda-range", "1e-4,1e-2", "--eta-range", "1.5,3",
        "--sparsity", "0.9"]


def load(study_dir):
    return optuna.load_study(study_name="hypersparse", storage=f"sqlite:///{quote(str(study_dir / 'study.db'))}")


def test_tune_continues_study_and_retries_interrupted_trial(tmp_path):
    study_dir = tmp_path / "st?dy#1"  # characters that end a URL's path unless quoted
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir))
    assert out.returncode == 0, out.stderr
    assert (study_dir / "study.db").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["st?dy#1"]
    study = load(study_dir)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # a process killed mid-trial leaves a RUNNING trial behind: simulate one
    stale = study.ask({"lambda_init": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                       "eta": optuna.distributions.FloatDistribution(1.5, 3, log=True)})
    out = cli(*BASE, "--trials", "3", "--study-dir", str(study_dir))
    assert out.returncode == 0, out.stderr
    assert f"trial {stale.number} was interrupted" in out.stdout
    trials = load(study_dir).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert trials[3].params == trials[2].params  # the interrupted values, tried again
    assert len({(t.params["lambda_init"], t.params["eta"]) for t in trials[:2]}) == 2
    best = json.loads((study_dir / "best.json").read_text())
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert best["val_acc"] == max(t.value for t in complete)  # chosen on validation accuracy
    summary = json.loads((study_dir / f"trial-{best['trial']}" / "summary.json").read_text())
    assert summary["sparse"]["val_acc"] == best["val_acc"]
    numel = summary["sparse"]["numel"]
    assert summary["sparse"]["kept"] == numel - math.floor(0.9 * numel)


@pytest.mark.parametrize("args,needle", [
    (["--method", "gmp"], "--method gmp has neither"),
    (["--lambda-range", "1e-3,1e-5"], "--lambda-range needs 0 < low < high"),
    (["--eta-range", "fast"], "--eta-range must be two numbers"),
    (["--trials", "0"], "--trials must be at least 1"),
])
def test_tune_bad_input(tmp_path, args, needle):
    out = cli("tune", *args, "--study-dir", str(tmp_path / "s"))
    assert out.returncode == 2
    assert needle in out.stderr and out.stderr.count("\n") == 1
