"""hypersparse tune: Optuna over lambda_init and eta, on the validation split, continued from its SQLite study."""
import importlib.util
import json
import math
import shutil
import sqlite3
from urllib.parse import quote

import pytest

from conftest import cli, run_cli, snapshot

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
    (["--trials", "0"], "--trials must be in 1..1000"),
    # trial 31k J023: a searched setting given by --set was silently overridden by every trial
    (["--set", "art.lambda_init=1e-4"], "--set art.lambda_init does not apply to tune"),
    (["--set", "run.run_dir=x"], "--set run.run_dir does not apply to tune"),
])
def test_tune_bad_input(tmp_path, args, needle):
    out = cli("tune", *args, "--study-dir", str(tmp_path / "s"))
    assert out.returncode == 2
    assert needle in out.stderr and out.stderr.count("\n") == 1


def test_tune_failed_trials_are_one_line_each_and_count_as_finished(tmp_path):
    # at --epochs-scale 0.02 eta becomes eta**50 and every trial diverges: an outcome, not Optuna's traceback
    study_dir = tmp_path / "s"
    args = ["tune", "--trials", "2", "--epochs-scale", "0.02", "--set", "run.stats=false",
            "--study-dir", str(study_dir)]
    out = cli(*args)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "no trial finished" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout.count("-> ART diverged") == 2
    trials = load(study_dir).trials
    assert [(t.state.name, t.user_attrs.get("failed")) for t in trials] == [("PRUNED", "diverged")] * 2
    out = cli(*args)  # both count as finished: nothing more is run
    assert out.returncode == 2 and "-> ART" not in out.stdout and len(load(study_dir).trials) == 2


@pytest.mark.parametrize("args,needle", [
    (["--eta-range", "0.5,2"], "--eta-range 0.5,2 is outside the setting's range: --eta must be a number in [1, 100]"),
    (["--eta-range", "1.01,1000"], "--eta-range 1.01,1000 is outside the setting's range: --eta must be"),
    (["--trials", str(10**30)], "--trials must be in 1..1000"),
    (["--compare", "gmp"], "--compare does not apply to tune"),
])
def test_tune_ranges_and_trials_bounded(tmp_path, capsys, args, needle):
    code, err = run_cli(["tune", *args, "--study-dir", str(tmp_path / "s")], capsys)
    assert (code, len(err)) == (2, 1) and needle in err[0], err
    assert not (tmp_path / "s").exists()


def _planted(tmp_path, kind):
    """The file a --storage URL (or the study folder) will name: a user's text file, another program's database,
    garbage where study.db goes; None for a URL with no file."""
    if kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("mine\n")
    elif kind == "other-db":
        path = tmp_path / "app.db"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE notes (text)")
        db.close()
    elif kind == "study.db":
        path = tmp_path / "s" / "study.db"
        path.parent.mkdir()
        path.write_text("garbage")
    else:
        path = None
    return path


@pytest.mark.parametrize("kind,storage,needle", [
    ("text", "sqlite:///{}", "notes.txt is not a SQLite database (it was not changed)"),
    ("other-db", "sqlite:///{}", "app.db holds another program's database, not an Optuna study"),
    ("study.db", None, "study.db is not a SQLite database (it was not changed); move study.db away"),
    ("driver", "mysql+pymysql://u:secret@127.0.0.1:1/db", "is not a usable database URL"),
])
def test_tune_storage_that_cannot_be_opened(tmp_path, capsys, kind, storage, needle):
    if kind == "driver" and importlib.util.find_spec("pymysql"):
        pytest.skip("pymysql is installed: the URL would be tried")
    path = _planted(tmp_path, kind)
    before = path.read_bytes() if path else None
    argv = ["tune", "--trials", "1", "--study-dir", str(tmp_path / "s")]
    code, err = run_cli(argv + (["--storage", storage.format(path)] if storage else []), capsys)
    assert (code, len(err)) == (2, 1) and needle in err[0], err
    assert "secret" not in err[0]  # a password in the URL is not shown
    if path:
        assert path.read_bytes() == before  # left as it was
    # refused before anything is created
    assert sorted(p.name for p in (tmp_path / "s").glob("*")) == (["study.db"] if kind == "study.db" else [])


def test_a_full_disk_says_so_and_removes_the_study_file_it_began(tmp_path, capsys, monkeypatch):
    """Trial 31e F008: on a full disk, tune blamed study.db ("move study.db away") and left the 32 KiB it had begun.
    SQLite's error is raised where a real full disk raises it: after the file is made."""
    from sqlalchemy.exc import OperationalError

    def full(*args, storage, **kwargs):
        (tmp_path / "s" / "study.db").write_bytes(b"SQLite format 3\x00" + bytes(100))
        raise OperationalError("INSERT", {}, Exception("database or disk is full"))

    monkeypatch.setattr(optuna, "create_study", full)
    code, err = run_cli([*BASE, "--trials", "1", "--study-dir", str(tmp_path / "s")], capsys)
    assert (code, len(err)) == (2, 1) and "database or disk is full" in err[0] and "free some space" in err[0], err
    assert "move study.db away" not in err[0]
    assert not (tmp_path / "s" / "study.db").exists()
    # a study.db that was there before is the user's: it stays
    (tmp_path / "s" / "study.db").write_bytes(b"")
    code, err = run_cli([*BASE, "--trials", "1", "--study-dir", str(tmp_path / "s")], capsys)
    assert code == 2 and (tmp_path / "s" / "study.db").exists()


def test_a_model_that_cannot_take_the_data_makes_no_study(tmp_path, capsys):
    """Review of issue 31: tune --model lenet5 on the 8x8 digits gave the fit line but left study.db holding a pruned
    and a waiting trial, and the corrected command was then refused as another study's."""
    code, err = run_cli([*BASE, "--model", "lenet5", "--trials", "1", "--study-dir", str(tmp_path / "s")], capsys)
    assert (code, len(err)) == (2, 1) and "model lenet5" in err[0] and "cannot take the data's 1x8x8" in err[0], err
    assert not (tmp_path / "s").exists()
    assert cli(*BASE, "--trials", "1", "--study-dir", str(tmp_path / "s")).returncode == 0  # the corrected command


def test_the_users_model_failing_in_a_trial_is_their_frames_and_one_line(tmp_path):
    """Re-review of issue 31: a forward failing mid-trial ended right, but Optuna's "Trial 0 failed" warning printed a
    whole traceback first, and the block of the user's frames listed Optuna's."""
    (tmp_path / "late.py").write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n        self.calls = 0\n\n"
        "    def forward(self, x):\n        self.calls += 1\n        if self.training and self.calls > 30:\n"
        "            raise RuntimeError('late bug')\n        return self.f(x)\n\ndef build():\n    return Net()\n")
    out = cli(*BASE, "--model", "late:build", "--trials", "1", "--study-dir", str(tmp_path / "s"), cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and lines[-1].startswith("hypersparse: error: your code (forward in late.py:12)"), lines
    assert lines[0] == "Traceback (most recent call last, your code only):", lines
    assert not any("optuna" in line or "hypersparse/" in line or "torch/" in line for line in lines[:-1]), lines


def test_a_file_size_limit_is_named_not_study_db(tmp_path):
    """Trial 31k E036: under `ulimit -f` tune said "move study.db away"; the file-size limit stopped the write."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (10 * 2**10, 10 * 2**10))

    done = subprocess.run([sys.executable, "-m", "hypersparse", *BASE, "--trials", "1", "--study-dir",
                           str(tmp_path / "s")], capture_output=True, text=True, preexec_fn=limit, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "file-size limit (ulimit -f)" in lines[0] and "move study.db away" not in lines[0]
    assert not (tmp_path / "s" / "study.db").exists()


@pytest.mark.parametrize("sql,needle", [
    ("CREATE TRIGGER t AFTER INSERT ON trial_values BEGIN UPDATE trial_values SET value = 0.999 "
     "WHERE trial_value_id = NEW.trial_value_id; END", "holds SQL triggers"),
    ("CREATE VIEW v AS SELECT * FROM trials", "holds SQL views"),
])
def test_sql_kept_in_the_study_database_is_refused_before_it_runs(tmp_path, sql, needle):
    """Trial 31l S1: a trigger stored in study.db rewrote each new trial's value on Optuna's own INSERT, and tune
    reported the falsified 99.9 % as the best trial, exit 0. SQL kept in a file is code the file brings."""
    study_dir = tmp_path / "s"
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study_dir)).returncode == 0
    with sqlite3.connect(study_dir / "study.db") as db:
        db.execute(sql)
    before = snapshot(study_dir)
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and needle in lines[0] and "was not changed" in lines[0], out.stderr
    assert snapshot(study_dir) == before


def test_a_second_tune_on_a_study_in_use_is_one_line_and_changes_nothing(tmp_path, capsys):
    """Trial 31b, N222: a tune started on a study folder another tune is running in took that tune's running trial
    for an interrupted one and both failed. The study folder has one writer: the second gets one line naming the
    process, exit 2, and the study is untouched."""
    from hypersparse.run_write import RunLock

    study = tmp_path / "s"
    study.mkdir()
    with RunLock(study, study=True):  # the first tune, as the second sees it
        code, err = run_cli([*BASE, "--trials", "1", "--study-dir", str(study)], capsys)
        assert (code, len(err)) == (2, 1) and "study folder" in err[0] and "in use by process" in err[0], err
        assert sorted(p.name for p in study.iterdir()) == [".hypersparse.lock"]


def test_continuing_a_study_with_other_settings_is_one_line_and_changes_nothing(tmp_path):
    """Trial 31b, N309: a study continued with another --lr chose its best trial across both learning rates and wrote
    it as the best for the new one. A study records its settings; other settings are one line, and no trial runs."""
    study_dir = tmp_path / "s"
    out = cli(*BASE, "--trials", "1", "--study-dir", str(study_dir))
    assert out.returncode == 0, out.stderr
    best = (study_dir / "best.json").read_bytes()
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir), "--lr", "0.001")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "schedule.lr=0.1, not 0.001" in out.stderr
    assert len(load(study_dir).trials) == 1 and (study_dir / "best.json").read_bytes() == best
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir), "--set", "run.stats=false")  # stats: allowed
    assert out.returncode == 0, out.stderr


def test_sigterm_while_a_trial_sets_up_is_one_line_and_the_trial_is_tried_again(tmp_path, capsys, monkeypatch):
    """Trial 31b, N333: SIGTERM before a trial's run had its own handlers (while it loads data) was Optuna's
    traceback, and the trial was marked failed, so continuing never tried its values. It is the run's one line
    (exit 143), and the next tune tries the same values first."""
    import hypersparse.engine as engine
    from hypersparse.errors import Terminated

    real = engine.train
    monkeypatch.setattr(engine, "train", lambda *a, **k: (_ for _ in ()).throw(Terminated()))
    study_dir = tmp_path / "s"
    code, err = run_cli([*BASE, "--trials", "1", "--study-dir", str(study_dir)], capsys)
    assert code == 143 and len(err) == 1 and "terminated" in err[0], err
    stopped = load(study_dir).trials[0]
    monkeypatch.setattr(engine, "train", real)
    code, err = run_cli([*BASE, "--trials", "1", "--study-dir", str(study_dir)], capsys)
    assert code == 0, err
    finished = [t for t in load(study_dir).trials if t.state.name == "COMPLETE"]
    assert len(finished) == 1 and finished[0].params == stopped.params


def test_a_study_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    """Trial 31c, N175: a study.db made immutable (chattr +i) was a 113-line Optuna traceback. Any write the storage
    refuses mid-study is one line naming the study (simulated: the storage raises as it does for a read-only file)."""
    study_dir = tmp_path / "s"
    code, err = run_cli([*BASE, "--trials", "1", "--study-dir", str(study_dir)], capsys)
    assert code == 0, err

    def refuse(*args, **kwargs):
        raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.")

    monkeypatch.setattr(optuna.study.Study, "set_user_attr", refuse)
    monkeypatch.setattr(optuna.study.Study, "user_attrs", property(lambda self: {}))
    code, err = run_cli([*BASE, "--trials", "2", "--study-dir", str(study_dir)], capsys)
    assert (code, len(err)) == (2, 1) and "the study cannot be written" in err[0], err


def test_an_interrupted_trial_whose_stored_values_are_out_of_range_is_not_retried(tmp_path):
    """Trial 31e T2: a study.db whose interrupted trial holds lambda_init -5 (an edited file, or other ranges) made
    Optuna fail on the values with a traceback. New values are tried instead, and tune says so."""
    study_dir = tmp_path / "s"
    out = cli(*BASE, "--trials", "1", "--study-dir", str(study_dir))
    assert out.returncode == 0, out.stderr
    stale = load(study_dir).ask({"lambda_init": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                                 "eta": optuna.distributions.FloatDistribution(1.5, 3, log=True)})
    with sqlite3.connect(study_dir / "study.db") as db:
        db.execute("update trial_params set param_value = -5 where trial_id = ? and param_name = 'lambda_init'",
                   (stale._trial_id,))
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert f"trial {stale.number} was interrupted" in out.stdout and "not within" in out.stdout
    assert [t.state.name for t in load(study_dir).trials] == ["COMPLETE", "FAIL", "COMPLETE"]


@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_a_signal_as_a_trial_finishes_is_one_line_and_the_study_continues(tmp_path, sig):
    """Trial 31e T1: SIGTERM or Ctrl-C just after a trial's run wrote its summary (Optuna then records the trial)
    printed Optuna's tracebacks and stored the trial as failed. Now it is one line with the signal's exit code, and
    the same command finishes the study."""
    import os
    import signal
    import subprocess
    import sys
    import time

    study_dir = tmp_path / "s"
    args = [sys.executable, "-m", "hypersparse", *BASE, "--trials", "2", "--study-dir", str(study_dir)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (study_dir / "trial-0" / "summary.json").exists() and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the first trial did not finish")
        time.sleep(0.005)
    os.kill(proc.pid, getattr(signal, f"SIG{sig}"))
    err = proc.communicate(timeout=120)[1]
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode in (143 if sig == "TERM" else 130, 0), err  # 0: the study had finished first
    assert "Traceback" not in err and len(lines) <= 1, err
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir))
    assert out.returncode == 0, out.stderr
    assert sum(t.state.name == "COMPLETE" for t in load(study_dir).trials) == 2


def test_a_study_that_searched_another_kind_of_parameter_is_one_line(tmp_path):
    """Trial 31g T2: a study.db whose eta was stored as a categorical parameter ended in Optuna's ValueError."""
    study_dir = tmp_path / "s"
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study_dir)).returncode == 0
    with sqlite3.connect(study_dir / "study.db") as db:
        db.execute("update trial_params set distribution_json='{\"name\": \"CategoricalDistribution\", "
                   "\"attributes\": {\"choices\": [\"a\", 1]}}' where param_name='eta'")
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir))
    lines = out.stderr.strip().splitlines()
    said = ("searched lambda_init or eta as another kind", "Optuna cannot read the trials the study holds")
    assert out.returncode == 2 and len(lines) == 1 and any(w in lines[0] for w in said), out.stderr


@pytest.mark.parametrize("edit,needle", [
    ("update trial_values set value = 1e999", "a validation accuracy of inf"),
    ("update trial_params set param_value = 1e308 where param_name = 'lambda_init'", "lambda_init 1e+308, outside"),
    # trial 31l S1: a value inside [0, 1] that the trial never reached
    ("update trial_values set value = 0.999", "not what its run folder's summary.json says (0.9"),
])
def test_a_finished_trial_edited_in_the_database_is_not_reported_as_the_best(tmp_path, edit, needle):
    """Trial 31g U106/U108: a study.db whose finished trial holds lambda_init 1e308 (outside its range) or a value of
    inf was reported as the best trial ("validation inf%") in best.json, exit 0."""
    study_dir = tmp_path / "s"
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study_dir)).returncode == 0
    before = (study_dir / "best.json").read_bytes()
    with sqlite3.connect(study_dir / "study.db") as db:
        db.execute(edit)
    out = cli(*BASE, "--trials", "1", "--study-dir", str(study_dir))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and needle in lines[0], out.stderr
    assert (study_dir / "best.json").read_bytes() == before


def test_best_json_names_the_trial_folder_not_what_the_database_says(tmp_path):
    """Trial 31g U105: a trial's stored run_dir naming another run ended up in best.json as the best run."""
    study_dir = tmp_path / "s"
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study_dir)).returncode == 0
    with sqlite3.connect(study_dir / "study.db") as db:
        db.execute("update trial_user_attributes set value_json = ? where key = 'run_dir'",
                   (json.dumps(str(tmp_path / "elsewhere")),))
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study_dir)).returncode == 0
    best = json.loads((study_dir / "best.json").read_text())
    assert best["run_dir"] == str(study_dir / "trial-0")


def test_a_study_and_a_run_do_not_share_a_folder(tmp_path):
    """Trial 31g C107/C108: tune into a training run's folder, and train into a study's folder, were accepted and
    mixed the two kinds of files. Each is refused in one line, and the folder is left as it was."""
    run, study = tmp_path / "run", tmp_path / "study"
    assert cli("train", "--warmup-epochs", "2", "--finetune-epochs", "2", "--run-dir", str(run)).returncode == 0
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study)).returncode == 0
    before = snapshot(tmp_path)
    out = cli(*BASE, "--trials", "1", "--study-dir", str(run))
    assert out.returncode == 2 and "holds a training run" in out.stderr and len(out.stderr.splitlines()) == 1
    out = cli("train", "--warmup-epochs", "2", "--finetune-epochs", "2", "--run-dir", str(study))
    assert out.returncode == 2 and "is a tune study's folder" in out.stderr and len(out.stderr.splitlines()) == 1
    assert snapshot(tmp_path) == before


def test_a_study_whose_direction_was_changed_is_refused(tmp_path):
    """Trial 31h S3: study.db's direction set to MINIMIZE by hand: tune went on, exit 0, and wrote the worst trial
    into best.json as the best."""
    study_dir = tmp_path / "s"
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study_dir)).returncode == 0
    before = (study_dir / "best.json").read_bytes()
    with sqlite3.connect(study_dir / "study.db") as db:
        db.execute("update study_directions set direction = 'MINIMIZE'")
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "minimises its score" in lines[0], out.stderr
    assert (study_dir / "best.json").read_bytes() == before
    assert len(load(study_dir).trials) == 1


def test_a_best_json_link_is_refused_before_any_trial_runs(tmp_path):
    """Trial 31h U205: a best.json link planted in a study folder was refused only after a whole trial had run."""
    study_dir = tmp_path / "s"
    study_dir.mkdir()
    (study_dir / "best.json").symlink_to(tmp_path / "elsewhere.json")
    out = cli(*BASE, "--trials", "1", "--study-dir", str(study_dir))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "best.json" in lines[0], out.stderr
    assert sorted(p.name for p in study_dir.iterdir()) == ["best.json"]


@pytest.mark.parametrize("how", ["emptied", "renamed"])
def test_trial_folders_a_replaced_study_does_not_know_are_refused_and_nothing_changes(tmp_path, how):
    """Trial 31h U207/U215: a study.db emptied, or its study renamed, gave "trial-0 already holds a run; --resume it",
    after the refused command had written a new study into the database."""
    study_dir = tmp_path / "s"
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study_dir)).returncode == 0
    if how == "emptied":
        (study_dir / "study.db").write_bytes(b"")
    else:
        with sqlite3.connect(study_dir / "study.db") as db:
            db.execute("update studies set study_name = 'mine'")
    before = snapshot(study_dir)
    out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "does not know" in lines[0], out.stderr
    assert snapshot(study_dir) == before


@pytest.mark.parametrize("how", ["deleted", "shared storage"])
def test_best_json_never_names_a_run_folder_that_is_not_there(tmp_path, how):
    """Trial 31i S1: the best trial's folder deleted, or the study continued from another --study-dir through
    --storage: best.json named a trial folder that does not exist, exit 0. It names none, and the line says why."""
    study_dir = tmp_path / "s"
    assert cli(*BASE, "--trials", "1", "--study-dir", str(study_dir)).returncode == 0
    if how == "deleted":
        shutil.rmtree(study_dir / "trial-0")
        out = cli(*BASE, "--trials", "1", "--study-dir", str(study_dir))
    else:
        study_dir = tmp_path / "other"
        out = cli(*BASE, "--trials", "2", "--study-dir", str(study_dir), "--storage",
                  f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert out.returncode == 0, out.stderr
    best = json.loads((study_dir / "best.json").read_text())
    folder = study_dir / f"trial-{best['trial']}"
    if best["run_dir"] is None:
        assert not folder.is_dir() and "best.json names no run folder" in out.stdout, out.stdout
    else:
        assert best["run_dir"] == str(folder) and (folder / "summary.json").is_file()


@pytest.mark.parametrize("link", ["hard", "symbolic", "dangling"])
def test_a_study_db_that_is_a_link_is_refused_and_its_target_unchanged(tmp_path, link):
    """Trial 31i U013: a study.db hard-linked to another file was written through (the run lock refuses links; the
    study's own database did not). A --storage the user names may be a link: that is their choice."""
    import os

    target = tmp_path / "elsewhere.db"
    study_dir = tmp_path / "s"
    study_dir.mkdir()
    if link == "hard":
        target.write_bytes(b"")
        os.link(target, study_dir / "study.db")
    else:
        if link == "symbolic":
            target.write_bytes(b"")
        (study_dir / "study.db").symlink_to(target)
    before = snapshot(tmp_path)
    out = cli(*BASE, "--trials", "1", "--study-dir", str(study_dir))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "link" in lines[0], out.stderr
    assert snapshot(tmp_path) == before
