"""Trust by design (issue 31): each failure an adversarial trial found, as an attack or a careless user's input that
must fail cleanly. Files never name code that runs; every file is read through its schema; a run folder has one
writer; outputs replace only regular files; the user's own code failing shows their frames.

Each test here failed on 375ac63. Commands run in this process (``hypersparse.cli.main``) under a deadline, so a
hang is a failure, not a stuck suite; the few that need a fresh process (signals, memory limits) start one.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import uuid
import zlib
from pathlib import Path

import pytest
import torch

import hypersparse as hs

from conftest import run_cli, snapshot

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
QUICK = ["--epochs-scale", "0.02", "--lambda-init", "1e-3"]
PLANTED = textwrap.dedent('''
    import pathlib
    pathlib.Path({marker!r}).write_text("ran")

    def build(*args, **kwargs):
        pathlib.Path({marker!r}).write_text("ran")
        import torch
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
''')


@pytest.fixture
def run(finished_run, tmp_path) -> Path:
    """A fresh copy of the finished digits run."""
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def _one_line(code, err, needle="", exit_code=2):
    assert code == exit_code, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert needle in err[0], err


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _plant(folder: Path, marker: Path) -> str:
    """A module that leaves ``marker`` when imported or called; a fresh name each time (no import cache helps)."""
    name = f"planted_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(PLANTED.format(marker=str(marker)))
    return name


# -- 1. files name code, and the tool imported it -------------------------------------------------------------------
@pytest.mark.parametrize("command", ["eval", "export"])
def test_a_plugin_named_in_config_json_is_not_imported_even_from_the_run_folder(command, run, tmp_path, capsys,
                                                                                monkeypatch):
    marker = tmp_path / "ran"
    name = _plant(run, marker)
    _edit_json(run / "config.json", lambda c: c["run"].update(plugin=name))
    monkeypatch.chdir(run)  # `cd run && hypersparse eval .`
    code, err = run_cli([command, "."], capsys)
    _one_line(code, err, f"needs --plugin {name}; pass it if you trust it")
    assert not marker.exists()
    assert "" not in sys.path and os.getcwd() not in sys.path  # the current folder was never put on the path


@pytest.mark.parametrize("module", ["safetensors", "__future__"])
def test_a_module_planted_in_the_run_folder_shadows_nothing_under_python_m(module, run, tmp_path):
    """`cd run && python -m hypersparse export .`: python -m puts the current folder first on the path, where a
    planted safetensors.py would replace the real one when export imports it, and a __future__.py would run while
    Python imports the package itself."""
    marker = tmp_path / "ran"
    (run / f"{module}.py").write_text(PLANTED.format(marker=str(marker)))
    done = subprocess.run([sys.executable, "-m", "hypersparse", "export", "."], cwd=run, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


def test_a_planted_hypersparse_package_runs_only_under_plain_python_m(tmp_path):
    """What the README says Python alone decides: `python -m` finds a planted hypersparse/ first; the installed
    command and `python -P -m` do not."""
    marker = tmp_path / "ran"
    (tmp_path / "hypersparse").mkdir()
    (tmp_path / "hypersparse" / "__init__.py").write_text(PLANTED.format(marker=str(marker)))
    (tmp_path / "hypersparse" / "__main__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    ways = [[sys.executable, "-P", "-m", "hypersparse", "--help"]]
    if shutil.which("hypersparse"):
        ways.append([shutil.which("hypersparse"), "--help"])
    for argv in ways:
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0 and "usage" in done.stdout, (argv, done.stderr)
        assert not marker.exists(), argv
    subprocess.run([sys.executable, "-m", "hypersparse", "--help"], cwd=tmp_path, capture_output=True, timeout=120,
                   env=env)
    assert marker.exists()  # Python's own rule, stated in the README: the test shows it is still so


@pytest.mark.parametrize("command", ["eval", "export"])
def test_a_model_named_by_import_path_in_a_run_is_not_imported(command, run, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "ran"
    name = _plant(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))  # importable: only the rule keeps it from running
    _edit_json(run / "config.json", lambda c: c["model"].update(model=f"{name}:build"))
    _edit_json(run / "summary.json", lambda s: (s["arch"].update(model=f"{name}:build"),
                                                s["config"]["model"].update(model=f"{name}:build")))
    code, err = run_cli([command, str(run)], capsys)
    _one_line(code, err, f"needs --model {name}:build; pass it if you trust it")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["planted:build", "tempfile:mkdtemp", "os:getcwd"])
def test_a_sparse_file_naming_code_runs_none_of_it(name, run, tmp_path, capsys, monkeypatch):
    from safetensors import safe_open
    from safetensors.torch import save_file

    marker = tmp_path / "ran"
    name = name.replace("planted", _plant(tmp_path, marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    src, bad = run / "model.sparse.safetensors", tmp_path / "shared.safetensors"
    with safe_open(str(src), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["arch"] = json.dumps(dict(json.loads(meta["arch"]), model=name))
    save_file(tensors, str(bad), metadata=meta)
    from hypersparse.errors import UserError

    before = set(Path(os.environ.get("TMPDIR", "/tmp")).iterdir())
    with pytest.raises(UserError, match="trust_code=True"):
        hs.load_sparse(bad)
    shutil.copy(bad, run / "shared.safetensors")  # beside a config that names the data
    code, err = run_cli(["eval", str(run / "shared.safetensors")], capsys)
    _one_line(code, err, f"needs --model {name}")
    assert not marker.exists() and set(Path(os.environ.get("TMPDIR", "/tmp")).iterdir()) == before


def test_code_a_file_names_runs_when_the_user_says_so(run, tmp_path, capsys, monkeypatch):
    """The same files work once the user types (or passes) the name: trust is given, not taken."""
    (tmp_path / "mine_build.py").write_text("import torch\n\ndef build(num_classes, in_channels, image_size):\n"
                                      "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 256), "
                                      "torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), "
                                      "torch.nn.Linear(256, num_classes))\n")
    monkeypatch.chdir(tmp_path)  # typed names are found in the current folder, as python -m finds them
    _edit_json(run / "config.json", lambda c: c["model"].update(model="mine_build:build"))
    _edit_json(run / "summary.json", lambda s: (s["arch"].update(model="mine_build:build"),
                                                s["config"]["model"].update(model="mine_build:build")))
    code, err = run_cli(["eval", str(run), "--model", "mine_build:build"], capsys)
    assert code == 0, err
    code, err = run_cli(["export", str(run), "--model", "mine_build:build", "--out", str(tmp_path / "m.safetensors")],
                        capsys)
    assert code == 0, err
    assert str(tmp_path) not in sys.path and "" not in sys.path  # found for the typed name only, then gone
    monkeypatch.syspath_prepend(str(tmp_path))
    assert hs.load_sparse(tmp_path / "m.safetensors", trust_code=True)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_a_config_file_naming_code_needs_the_flag_typed_too(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "ran"
    name = _plant(tmp_path, marker)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared.json").write_text(json.dumps({"run": {"plugin": name}}))
    code, err = run_cli(["train", "--config", "shared.json", "--run-dir", "r", *QUICK], capsys)
    _one_line(code, err, f"--config shared.json needs --plugin {name}; pass it if you trust it")
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_resume_of_a_run_that_used_a_plugin_needs_it_typed_as_it_started(tmp_path, capsys, monkeypatch):
    (tmp_path / "mine_reg.py").write_text("from hypersparse.models import MODELS, register_model\n"
                                          "register_model('mlp2', MODELS['mlp'][0])\n")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "--plugin", "mine_reg", "--model", "mlp2", "--run-dir", "r", *QUICK], capsys)
    assert code == 0, err
    before = snapshot(tmp_path / "r")
    code, err = run_cli(["train", "--resume", "r"], capsys)
    _one_line(code, err, "needs --plugin mine_reg")
    code, err = run_cli(["train", "--resume", "r", "--plugin", "other"], capsys)
    _one_line(code, err, "was started with --plugin mine_reg")
    assert snapshot(tmp_path / "r") == before
    code, err = run_cli(["train", "--resume", "r", "--plugin", "mine_reg"], capsys)
    assert code == 0, err


# -- 2. an output replaces only a regular file ----------------------------------------------------------------------
def test_export_out_onto_a_fifo_a_device_a_link_or_a_folder_is_refused(run, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    targets = [fifo, tmp_path]
    link = tmp_path / "link"
    link.symlink_to(run / "config.json")
    targets.append(link)
    if os.geteuid() == 0:  # a device node of our own (never the machine's /dev/null)
        device = tmp_path / "null"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        targets.append(device)
    for target in targets:
        kind = stat.S_IFMT(os.lstat(target).st_mode)
        code, err = run_cli(["export", str(run), "--out", str(target)], capsys, seconds=30)
        _one_line(code, err, str(target))
        assert stat.S_IFMT(os.lstat(target).st_mode) == kind, target
    assert not list(tmp_path.glob(".*.tmp"))


# -- 3. the kernel cache checks each file it loads ------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.parametrize("how", ["group-writable", "symlink", "other-owner"])
def test_a_library_and_record_others_could_write_are_never_loaded(how, tmp_path, monkeypatch):
    from hypersparse import native

    cache = tmp_path / "cache"
    monkeypatch.setenv("HYPERSPARSE_CACHE", str(cache))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)
    assert native.unavailable() is None  # built once: learn the names
    record = sorted(cache.glob("chain-*.sha256"))[0]
    marker = tmp_path / "constructor-ran"
    source = tmp_path / "evil.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void planted(void) { FILE *f = '
                      f'fopen("{marker}", "w"); if (f) fclose(f); }}\nint hs_chain_forward(void) {{ return 7; }}\n'
                      'void hs_conv_forward(void) {}\n')
    evil = tmp_path / "evil.so"
    subprocess.run(["cc", "-shared", "-fPIC", str(source), "-o", str(evil)], check=True)
    import hashlib

    digest = hashlib.sha256(evil.read_bytes()).hexdigest()
    planted = cache / f"{record.stem}-{digest[:16]}.so"
    if how == "symlink":
        elsewhere = tmp_path / "elsewhere.so"
        shutil.copy(evil, elsewhere)
        planted.symlink_to(elsewhere)
    else:
        shutil.copy(evil, planted)
    record.write_text(digest + "\n")
    if how == "group-writable":
        planted.chmod(0o777)
        record.chmod(0o666)
    elif how == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("only root can hand a file to another user")
        os.chown(planted, 12345, -1)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)
    assert native.unavailable() is None  # rebuilt, not loaded
    assert not marker.exists()


# -- 4. one writer per run folder -----------------------------------------------------------------------------------
def _hold(folder: Path) -> int:
    """Lock ``folder``'s lock file as another writer would (a separate open file: flock conflicts with it)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".hypersparse.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    return fd


def test_a_second_train_into_a_folder_being_written_is_refused_naming_the_writer(tmp_path, capsys):
    fd = _hold(tmp_path / "r")
    try:
        code, err = run_cli(["train", "--run-dir", str(tmp_path / "r"), *QUICK], capsys)
    finally:
        os.close(fd)
    _one_line(code, err, "in use by process 4242")
    assert not (tmp_path / "r" / "config.json").exists() and not (tmp_path / "r" / "metrics.jsonl").exists()


def test_export_and_a_report_into_a_run_being_written_are_refused(run, tmp_path, capsys):
    """Trial 31m C217: an export of a run whose train still held the lock wrote model.sparse.safetensors into the
    locked folder from the unfinished run, with the usual success line. A run folder has one writer; reading it
    (eval, a report written elsewhere) goes on."""
    fd = _hold(run)
    before = snapshot(run)
    try:
        for argv in (["export", str(run)], ["export", str(run), "--out", str(tmp_path / "m.safetensors")],
                     ["report", str(run)]):
            code, err = run_cli(argv, capsys)
            _one_line(code, err, "is still being written by process 4242")
        assert snapshot(run) == before and not (tmp_path / "m.safetensors").exists()
        assert run_cli(["eval", str(run)], capsys)[0] == 0
        assert run_cli(["report", str(run), "--out", str(tmp_path / "rep")], capsys)[0] == 0
    finally:
        os.close(fd)
    assert run_cli(["export", str(run)], capsys)[0] == 0  # the writer has ended


def test_a_second_resume_is_refused_and_a_dead_writers_lock_is_taken_over(run, capsys):
    before = snapshot(run)
    fd = _hold(run)
    try:
        code, err = run_cli(["train", "--resume", str(run)], capsys)
    finally:
        os.close(fd)  # the holder dies: the kernel drops its lock, the file stays
    _one_line(code, err, "in use by process 4242")
    assert {k: v for k, v in snapshot(run).items() if k != ".hypersparse.lock"} == before
    code, err = run_cli(["train", "--resume", str(run)], capsys)
    assert code == 0, err
    assert not (run / ".hypersparse.lock").exists()


def test_a_second_train_while_one_runs_is_refused_and_the_first_run_stays_consistent(tmp_path, capsys):
    run = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "hypersparse", "train", "--run-dir", str(run), "--seed", "2",
                             "--epochs-scale", "0.1", "--lambda-init", "1e-3", "--set", "run.stats=false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline_at = time.time() + 120
        while not (run / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline_at:
            time.sleep(0.02)  # the first run is training now
        code, err = run_cli(["train", "--run-dir", str(run), "--seed", "3", *QUICK], capsys)
    finally:
        first = proc.wait(timeout=300), proc.stderr.read()
    assert first[0] == 0, first
    _one_line(code, err, f"in use by process {proc.pid}")
    assert json.loads((run / "config.json").read_text())["run"]["seed"] == 2
    assert json.loads((run / "summary.json").read_text())["config"]["run"]["seed"] == 2
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(len(epochs)))


def test_a_checkpoint_copied_from_another_run_is_refused(run, tmp_path, capsys):
    other = tmp_path / "other"
    code, err = run_cli(["train", "--run-dir", str(other), "--seed", "5", "--sparsity", "0.9", "--warmup-epochs", "1",
                         "--finetune-epochs", "1", "--set", "schedule.lr_steps=1", "--lambda-init", "1e-3"], capsys)
    assert code == 0, err
    shutil.copy(other / "checkpoint.pt", run / "checkpoint.pt")
    before = snapshot(run)
    code, err = run_cli(["train", "--resume", str(run)], capsys)
    _one_line(code, err, "belongs to another run")
    assert snapshot(run) == before


# -- 5. clean-up removes only what this tool made -------------------------------------------------------------------
def test_a_users_tmp_file_in_a_run_folder_survives_resume_and_a_new_run(run, tmp_path, capsys):
    for folder in (run, tmp_path / "fresh"):
        folder.mkdir(exist_ok=True)
        (folder / ".my.notes.tmp").write_text("mine")
        (folder / ".checkpoint.pt.abc.tmp").write_text("also mine")
    code, err = run_cli(["train", "--resume", str(run)], capsys)
    assert code == 0, err
    code, err = run_cli(["train", "--run-dir", str(tmp_path / "fresh"), *QUICK], capsys)
    assert code == 0, err
    for folder in (run, tmp_path / "fresh"):
        assert (folder / ".my.notes.tmp").read_text() == "mine"
        assert (folder / ".checkpoint.pt.abc.tmp").read_text() == "also mine"


# -- 6. wrong results reported as success ---------------------------------------------------------------------------
def _png(path: Path, width: int, height: int, value: int = 0) -> None:
    """A grey PNG written by hand (no Pillow needed to make the attack files)."""
    raw = b"".join(b"\x00" + bytes([value]) * width for _ in range(height))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_an_image_folder_too_small_for_its_splits_is_an_error_not_test_100_percent(tmp_path, capsys, monkeypatch):
    pytest.importorskip("PIL")
    monkeypatch.chdir(tmp_path)
    for c in ("cat", "dog"):
        _png(tmp_path / "pets" / c / "0.png", 8, 8, 40 if c == "cat" else 200)
    code, err = run_cli(["train", "--dataset", "folder:pets", "--run-dir", "r", *QUICK], capsys)
    _one_line(code, err, "needs at least 3")
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("test_classes,needle", [
    (["cat"], "holds no images in its class folders"),  # an empty class folder
    (["cow"], "holds cow/, which is not a class folder of"),
])
def test_a_test_folder_given_is_used_never_carved_from_train_in_its_place(tmp_path, capsys, test_classes, needle):
    """Trial 31l H017/N005: a test/ folder holding only an empty class folder was ignored, and the test split was
    carved from train/ without a word; images in a class train/ does not have were ignored."""
    pytest.importorskip("PIL")
    for c in ("cat", "dog"):
        for i in range(6):
            _png(tmp_path / "pets" / "train" / c / f"{i}.png", 8, 8, 30 * i + (0 if c == "cat" else 5))
    for c in test_classes:
        (tmp_path / "pets" / "test" / c).mkdir(parents=True)
        if c == "cow":
            _png(tmp_path / "pets" / "test" / c / "0.png", 8, 8)
    code, err = run_cli(["train", "--dataset", f"folder:{tmp_path / 'pets'}", "--run-dir", str(tmp_path / "r"),
                         *QUICK], capsys)
    _one_line(code, err, needle)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args,needle", [
    (["--set", "art.lambda_init=true"], "--lambda-init"),
    (["--config", "{\"art\": {\"lambda_init\": true}}"], "--lambda-init"),
    (["--config", "{\"run\": {\"stats\": 1}}"], "run.stats"),
    (["--set", "schedule.lr_steps=-5"], "lr_steps"),
    (["--set", "schedule.lr_steps=80,80"], "lr_steps must be comma-separated epochs (integers >= 0, increasing)"),
    (["--config", "{\"schedule\": {\"lr_steps\": \"120,80\"}}"], "lr_steps must be"),  # trial 31l C034/E058
    (["--set", "schedule.momentum=1e300"], "momentum"),
    (["--set", "schedule.momentum=1"], "momentum"),
    (["--set", "art.buffer_k=1000000"], "buffer_k"),
    (["--set", "art.buffer_k=200", "--set", "art.max_reg_epochs=300"], "buffer_k"),
    (["--set", "schedule.weight_decay=-1"], "weight_decay"),
])
def test_settings_out_of_range_or_of_the_wrong_type_are_refused(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if args[0] == "--config":
        (tmp_path / "c.json").write_text(args[1])
        args = ["--config", "c.json"]
    code, err = run_cli(["train", *args, "--run-dir", "r", *QUICK], capsys)
    _one_line(code, err, needle)
    assert {p.name for p in tmp_path.iterdir()} <= {"c.json"}


# -- 7. tracebacks and hangs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["lenet5", "vgg11"])
def test_a_built_in_model_that_does_not_fit_the_data_says_so_before_writing(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "--model", model, *QUICK], capsys)  # the default run folder, under runs/
    _one_line(code, err, f"model {model}")
    assert "1x8x8" in err[0] and ("28x28" in err[0] or "32x32" in err[0])
    assert not list(tmp_path.iterdir())


def test_a_deep_resnet_name_is_refused_at_once_from_a_flag_or_a_file(run, tmp_path, capsys):
    started = time.perf_counter()
    code, err = run_cli(["train", "--model", "resnet6000000002", "--run-dir", str(tmp_path / "r")], capsys, 8)
    _one_line(code, err, "resnet6000000002")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(run / "model.sparse.safetensors"), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["arch"] = json.dumps(dict(json.loads(meta["arch"]), model="resnet6000000002"))
    save_file(tensors, str(run / "deep.safetensors"), metadata=meta)
    code, err = run_cli(["eval", str(run / "deep.safetensors")], capsys, 8)
    _one_line(code, err, "deep.safetensors")
    assert time.perf_counter() - started < 20


def test_eval_of_an_onnx_fifo_is_refused_without_waiting(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    code, err = run_cli(["eval", str(fifo), "--dataset", "digits"], capsys, 10)
    _one_line(code, err, "not a regular file")


def test_exclude_that_leaves_nothing_to_prune_is_one_line_and_no_run_folder(tmp_path, capsys):
    code, err = run_cli(["train", "--exclude", "*", "--epochs-scale", "0.02", "--run-dir", str(tmp_path / "r")],
                        capsys)
    _one_line(code, err, "exclude fewer layers")
    assert not (tmp_path / "r").exists()


def test_config_from_a_fifo_is_refused_without_waiting(tmp_path, capsys):
    fifo = tmp_path / "c.json"
    os.mkfifo(fifo)
    code, err = run_cli(["train", "--config", str(fifo), "--run-dir", str(tmp_path / "r")], capsys, 10)
    _one_line(code, err, "c.json")


@pytest.mark.parametrize("text,needle", [
    ('{"schedule": {"warmup_epochs": ' + "9" * 400 + "}}", "c.json"),
    ("[" * 100_000 + "]" * 100_000, "c.json"),
    ('{"art": {"eta": 1e400}}', "eta"),
    ('{"run": {"device": "meta"}}', "device"),
    ('{"run": {"device": "mps"}}', "mps"),
])
def test_config_files_that_overflow_nest_or_name_odd_devices_are_one_line(text, needle, tmp_path, capsys):
    (tmp_path / "c.json").write_text(text)
    code, err = run_cli(["train", "--config", str(tmp_path / "c.json"), "--run-dir", str(tmp_path / "r"), *QUICK],
                        capsys, 20)
    _one_line(code, err, needle)
    assert not (tmp_path / "r").exists()


LIMITED = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a runaway allocation fails here, not on the machine
from hypersparse.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("argv,needle", [
    (lambda r: ["train", "--config", "/dev/zero"], "/dev/zero"),
    (lambda r: ["eval", str(r), "--fast", "100000000"], "--fast"),
])
def test_unbounded_reads_and_allocations_are_refused(argv, needle, run):
    done = subprocess.run([sys.executable, "-c", LIMITED, *argv(run)], capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and needle in lines[0], done.stderr


def test_an_image_too_large_to_decode_is_one_line(tmp_path, capsys):
    pytest.importorskip("PIL")
    for c in ("a", "b"):
        for i in range(3):
            _png(tmp_path / "pets" / c / f"{i}.png", 8, 8, 50 * i)
    # a header that claims 14000 x 14000 pixels: Pillow refuses it as a decompression bomb
    big = tmp_path / "pets" / "b" / "9.png"
    _png(big, 8, 8)
    data = bytearray(big.read_bytes())
    data[16:24] = struct.pack(">II", 14000, 14000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    big.write_bytes(bytes(data))
    code, err = run_cli(["train", "--dataset", f"folder:{tmp_path / 'pets'}", "--run-dir", str(tmp_path / "r"),
                         *QUICK], capsys)
    _one_line(code, err, "9.png")


def test_images_that_are_not_square_are_one_line(tmp_path, capsys):
    """Trial 31f I014: 12x8 images gave the MLP a shape error, and the line said "mlp takes any size"."""
    pytest.importorskip("PIL")
    for c in ("a", "b"):
        for i in range(3):
            _png(tmp_path / "pets" / c / f"{i}.png", 12, 8, 40 * i)
    code, err = run_cli(["train", "--dataset", f"folder:{tmp_path / 'pets'}", "--run-dir", str(tmp_path / "r"),
                         *QUICK], capsys)
    _one_line(code, err, "are 12x8 pixels (width x height); hypersparse trains on square images")
    assert not (tmp_path / "r").exists()


def test_a_test_folder_of_another_image_size_is_one_line(tmp_path, capsys):
    pytest.importorskip("PIL")
    for split, size in (("train", 8), ("test", 9)):
        for c in ("a", "b"):
            for i in range(3):
                _png(tmp_path / "pets" / split / c / f"{i}.png", size, size, 40 * i + (100 if c == "b" else 0))
    code, err = run_cli(["train", "--dataset", f"folder:{tmp_path / 'pets'}", "--run-dir", str(tmp_path / "r"),
                         *QUICK], capsys)
    _one_line(code, err, "differ in size")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not (SHARED / "cifar10-jpeg75" / "cifar10_jpeg75.npz").exists(), reason="no shared data")
def test_a_corrupt_jpeg75_cache_is_named(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar10_jpeg75.npz").symlink_to(SHARED / "cifar10-jpeg75" / "cifar10_jpeg75.npz")
    name = "cifar10_jpeg75.decoded.81dadbeec277.npz"  # the cache the loader reads first, beside the data file
    (data / name).write_bytes(b"PK\x03\x04 not a zip at all")
    code, err = run_cli(["train", "--dataset", "cifar10-jpeg75", "--data-dir", str(data), "--run-dir",
                         str(tmp_path / "r"), *QUICK], capsys)
    _one_line(code, err, name)
    assert (data / name).exists()  # named, not deleted


USER_CODE = {  # module source, flags ({m}: the module's name), the object named, the frame shown
    "model-raises": ("def build(num_classes):\n    raise ValueError('my bug')\n", ["--model", "{m}:build"],
                     "your model {m}:build", "{m}.py\", line 2"),
    "forward-raises": ("import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n"
                       "        raise KeyError('oops')\n\ndef build():\n    return Net()\n",
                       ["--model", "{m}:build"], "your model {m}:build", "{m}.py\", line 5"),
    "dataset-raises": ("def data(data_dir, seed, download):\n    return 1 / 0\n", ["--dataset", "{m}:data"],
                       "your dataset {m}:data", "{m}.py\", line 2"),
    "plugin-raises": ("raise RuntimeError('plugin broke')\n", ["--plugin", "{m}"], "your module {m}",
                      "{m}.py\", line 1"),
    "syntax-error": ("def build(:\n    pass\n", ["--model", "{m}:build"], "your module {m}", "{m}.py\", line 1"),
}


@pytest.mark.parametrize("case", list(USER_CODE))
def test_the_users_own_code_failing_shows_their_frames_and_names_their_object(case, tmp_path, capsys, monkeypatch):
    name = "mine_" + case.replace("-", "_")
    source, args, names, frame = (x.format(m=name) if isinstance(x, str) else [a.format(m=name) for a in x]
                                  for x in USER_CODE[case])
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", *args, "--run-dir", "r", *QUICK], capsys)
    assert code == 2, err
    assert names in err[-1] and err[-1].startswith("hypersparse: error:"), err
    assert any(frame in line for line in err), err
    assert not any("hypersparse/" in line or "torch/" in line for line in err[:-1]), err
    assert not (tmp_path / "r").exists()


LATE = {  # the user's code failing once training is under way: in the model's forward, in its own backward
    "forward": "        if self.training and self.calls > 30:\n"
               "            raise RuntimeError('late bug in my forward')\n",
    "backward": "        if self.training and self.calls > 30:\n            return Boom.apply(self.f(x))\n",
}


@pytest.mark.parametrize("where", list(LATE))
def test_the_users_code_failing_mid_training_shows_their_frames_and_one_line(where, tmp_path, capsys, monkeypatch):
    """Review of issue 31: a forward that raised on its 31st call (in training) gave a full traceback through
    hypersparse's frames, exit 1. The error boundary names the user's innermost frame, exit 2."""
    name = f"late_{where}"
    (tmp_path / f"{name}.py").write_text(
        "import torch\n\n"
        "class Boom(torch.autograd.Function):\n"
        "    @staticmethod\n    def forward(ctx, x):\n        return x.clone()\n\n"
        "    @staticmethod\n    def backward(ctx, g):\n        raise ValueError('late bug in my backward')\n\n"
        "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),\n"
        "                                     torch.nn.Linear(32, 10))\n        self.calls = 0\n\n"
        "    def forward(self, x):\n        self.calls += 1\n" + LATE[where] + "        return self.f(x)\n\n"
        "def build():\n    return Net()\n")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "--model", f"{name}:build", "--run-dir", "r", *QUICK], capsys)
    assert code == 2, err
    assert err[-1].startswith(f"hypersparse: error: your code ({where} in {name}.py:") and "raised" in err[-1], err
    assert any(f"{name}.py\", line" in line for line in err) and f"late bug in my {where}" in "\n".join(err), err
    assert not any("hypersparse/" in line or "torch/" in line for line in err[:-1]), err


def _model_module(folder: Path, name: str, forward: str = "", imports: str = "") -> None:
    """Writes `name`.py: a small Net whose forward runs the lines `forward` (indented 8) before its layers."""
    (folder / f"{name}.py").write_text(
        "import torch\n" + imports + "\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n\n"
        "    def forward(self, x):\n" + forward + "        return self.f(x)\n\ndef build():\n    return Net()\n")


def test_hypersparses_own_bug_inside_the_users_forward_is_a_traceback_not_blamed_on_them(tmp_path, capsys,
                                                                                          monkeypatch):
    """Re-review of issue 31: the innermost user frame was blamed even when hypersparse's own code, called from it,
    raised (a bug of ours in a hook): their frames only, exit 2, and ours hidden. Theirs only if nothing of ours
    lies below it."""
    import hypersparse.masks
    from hypersparse.cli import main

    _model_module(tmp_path, "calls_us", "        if self.training:\n            hs.magnitude_masks(self, 0.5)\n",
                  imports="import hypersparse as hs\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hypersparse.masks, "global_keep", None)  # a bug of ours: raised in a frame of masks.py
    with pytest.raises(TypeError, match="'NoneType' object is not callable"):
        main(["train", "--model", "calls_us:build", "--run-dir", "r", *QUICK])
    assert "your code" not in capsys.readouterr().err


def test_a_refusal_of_ours_that_torch_ran_inside_the_users_forward_is_ours(tmp_path, capsys, monkeypatch):
    """Last check of issue 31: a `raise ValueError` of ours in a hook torch runs inside the user's forward (an
    invariant of ours broken, not their call) was blamed on them. Theirs only if they called our API directly."""
    from hypersparse import keep_pruned
    from hypersparse.cli import main

    _model_module(tmp_path, "plain_net")
    monkeypatch.chdir(tmp_path)
    source = keep_pruned.__file__
    line = next(i for i, text in enumerate(Path(source).read_text().splitlines(), 1)
                if text.lstrip().startswith("raise ValueError"))  # one of our refusals, as a traceback shows it
    namespace = {}
    exec(compile("\n" * (line - 2) + "def broken(*args, **kwargs):\n    raise ValueError('invariant of ours broken')\n",
                 source, "exec"), namespace)  # its frame is that line of keep_pruned.py, as a real bug's would be
    monkeypatch.setattr(keep_pruned.Keeper, "before_forward", namespace["broken"])
    with pytest.raises(ValueError, match="invariant of ours broken"):
        main(["train", "--model", "plain_net:build", "--run-dir", "r", "--method", "gmp", "--sparsity", "0.5",
              "--epochs-scale", "0.02"])
    assert "your code" not in capsys.readouterr().err


def test_the_users_wrong_call_into_the_api_is_their_error(tmp_path, capsys, monkeypatch):
    """Re-review of issue 31: a forward calling hs.magnitude_masks(self, 1.5) mid-training was shown as hypersparse's
    traceback, exit 1: our API refusing their argument (our own `raise ValueError`) is their error."""
    _model_module(tmp_path, "misuse", "        if self.training:\n            hs.magnitude_masks(self, 1.5)\n",
                  imports="import hypersparse as hs\n")  # the call on line 11
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "--model", "misuse:build", "--run-dir", "r", *QUICK], capsys)
    assert code == 2 and err[-1].startswith("hypersparse: error: your code (forward in misuse.py:11)"), err
    assert "sparsity" in "\n".join(err) and not any("hypersparse/" in line for line in err[:-1]), err


PACKAGE_REGISTERS = {  # how a plugin package registers its model: what the registering module holds
    "lambda": "register_model('{m}', lambda num_classes=10, in_channels=1, image_size=8: Net())\n",
    "partial": "def build(num_classes=10, in_channels=1, image_size=8, width=64):\n    return Net()\n\n"
               "register_model('{m}', functools.partial(build, width=64))\n",
    "instance": "class Builder:\n    def __call__(self, num_classes=10, in_channels=1, image_size=8):\n"
                "        return Net()\n\nregister_model('{m}', Builder())\n",
    "exec": "found = {{}}\n"
            "exec('build = lambda num_classes=10, in_channels=1, image_size=8: Net()', {{'Net': Net}}, found)\n"
            "register_model('{m}', found['build'])  # a builder whose __module__ is None\n",
    "namespace": "register_model('{m}', lambda num_classes=10, in_channels=1, image_size=8: Net())\n",
    "stdlib-name": "register_model('{m}', lambda num_classes=10, in_channels=1, image_size=8: Net())\n",
}


def _plugin_package(folder: Path, name: str, registers: str, module: str = "__init__.py") -> None:
    """A plugin package `name` whose `module` registers (``registers``) a model whose forward calls a helper module
    (steps.py) that raises on its 31st call in training."""
    folder.mkdir(parents=True)
    (folder / module).write_text(
        f"import functools\n\nfrom hypersparse.models import register_model\nfrom {name}.nets import Net\n\n"
        + registers)
    (folder / "steps.py").write_text("def step(x, calls):\n    if calls > 30:\n"
                                     "        raise RuntimeError('late bug in my helper')\n    return x\n")
    _model_module(folder, "nets", "        self.calls = getattr(self, 'calls', 0) + 1\n"
                                  "        x = step(x, self.calls) if self.training else x\n",
                  imports=f"from {name}.steps import step\n")


@pytest.mark.parametrize("how", list(PACKAGE_REGISTERS))
def test_a_plugin_packages_helper_module_failing_is_theirs(how, tmp_path, capsys, monkeypatch):
    """Left open in issue 31: a plugin package registers its model (a function, a partial, a callable object, one
    made by exec; from __init__.py or, in a namespace package, from a module of it; a package named like a module of
    the standard library), but the forward that fails lives in a helper module of the package; that was
    hypersparse's traceback, exit 1. Any module of a registering package is the user's code."""
    name = "nntplib" if how == "stdlib-name" else f"pkg_{how.replace('-', '_')}"
    if name in sys.modules:
        pytest.skip(f"{name} is imported already")
    _plugin_package(tmp_path / name, name, PACKAGE_REGISTERS[how].format(m=name.replace("_", "-")),
                    "reg.py" if how == "namespace" else "__init__.py")
    monkeypatch.chdir(tmp_path)
    plugin = f"{name}.reg" if how == "namespace" else name
    code, err = run_cli(["train", "--plugin", plugin, "--model", name.replace("_", "-"), "--run-dir", "r", *QUICK],
                        capsys)
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]  # the stdlib's module of that name, not this test's, for whoever imports it later
    assert code == 2 and err[-1].startswith("hypersparse: error: your code (step in steps.py:3)"), err
    assert any("nets.py\", line" in line for line in err) and "late bug in my helper" in "\n".join(err), err
    assert not any("hypersparse/" in line or "torch/" in line for line in err[:-1]), err


def test_a_plugin_in_a_namespace_that_installed_libraries_share_does_not_make_theirs_the_users(tmp_path, capsys,
                                                                                              monkeypatch):
    """Re-review: a plugin in google/ (a namespace package protobuf shares) made every google.* module the user's:
    hypersparse's own bug, raised inside protobuf, was blamed on them. The plugin's package is google.hsplug."""
    pytest.importorskip("google.protobuf")
    from google.protobuf import json_format

    import hypersparse.engine
    from hypersparse.cli import main

    _plugin_package(tmp_path / "google" / "hsplug", "google.hsplug",
                    "register_model('nsplugnet', lambda num_classes=10, in_channels=1, image_size=8: Net())\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hypersparse.engine.F, "cross_entropy", json_format.MessageToJson)  # a bug of ours
    with pytest.raises(AttributeError):
        main(["train", "--plugin", "google.hsplug", "--model", "nsplugnet", "--run-dir", "r", *QUICK])
    assert "your code" not in capsys.readouterr().err


def test_a_plugin_that_wraps_anothers_model_leaves_both_the_users_code(tmp_path, capsys, monkeypatch):
    """Re-review: a second plugin registering the name again around the first one's builder made the first
    package's helper failing hypersparse's traceback: both packages registered it, both are the user's."""
    _plugin_package(tmp_path / "wrapped_pkg", "wrapped_pkg",
                    "register_model('wrappednet', lambda num_classes=10, in_channels=1, image_size=8: Net())\n")
    (tmp_path / "wrapper_plugin.py").write_text(
        "from hypersparse.models import MODELS, register_model\n\ninner = MODELS['wrappednet'][0]\n"
        "register_model('wrappednet', lambda *args, **kwargs: inner(*args, **kwargs))\n")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "--plugin", "wrapped_pkg,wrapper_plugin", "--model", "wrappednet", "--run-dir",
                         "r", *QUICK], capsys)
    assert code == 2 and err[-1].startswith("hypersparse: error: your code (step in steps.py:3)"), err


def test_a_script_that_registers_a_partial_and_runs_the_cli_is_the_users_code(tmp_path):
    """Re-review: a driver script (``__main__``) registering a functools.partial, whose forward then failed, got
    hypersparse's traceback, exit 1."""
    script = tmp_path / "drive.py"
    _model_module(tmp_path, "drive_nets", "        self.calls = getattr(self, 'calls', 0) + 1\n"
                                          "        x = late(x, self.calls) if self.training else x\n",
                  imports="from drive import late\n")
    script.write_text(
        "import functools, sys\n\nfrom hypersparse.cli import main\nfrom hypersparse.models import register_model\n"
        "\ndef late(x, calls):\n    if calls > 30:\n        raise RuntimeError('late bug in my script')\n"
        "    return x\n\n"
        "if __name__ == '__main__':\n    sys.modules['drive'] = sys.modules['__main__']\n"
        "    from drive_nets import Net\n\n    def build(num_classes=10, in_channels=1, image_size=8, width=1):\n"
        "        return Net()\n\n    register_model('drivenet', functools.partial(build, width=2))\n"
        "    sys.exit(main(sys.argv[1:]))\n")
    done = subprocess.run([sys.executable, str(script), "train", "--model", "drivenet", "--run-dir", "r", *QUICK],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-1].startswith("hypersparse: error: your code (late in drive.py:8)"), lines


@pytest.mark.parametrize("planted", ["ours", "in-a-library", "nothing"])
def test_hypersparses_own_bug_under_the_users_builder_is_ours_and_their_wrong_call_theirs(planted, tmp_path,
                                                                                         capsys, monkeypatch):
    """Re-review: a failure while the model was built was blamed on the user even when hypersparse's own code,
    which their builder called, failed (a bug of ours, raised in our frame or in a library ours called): their
    builder's wrong call into our API stays theirs."""
    import hypersparse.masks
    from hypersparse.cli import main

    name = f"builds_{planted.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        "import torch\nimport hypersparse as hs\n\ndef build(num_classes=10, in_channels=1, image_size=8):\n"
        "    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n"
        f"    hs.magnitude_masks(model, {1.5 if planted == 'nothing' else 0.5})\n    return model\n")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--model", f"{name}:build", "--run-dir", "r", *QUICK]
    if planted == "nothing":
        code, err = run_cli(argv, capsys)
        assert code == 2 and err[-1].startswith(f"hypersparse: error: your model {name}:build"), err
        return
    if planted == "ours":
        monkeypatch.setattr(hypersparse.masks, "global_keep", None)  # a bug of ours: raised in a frame of masks.py
    else:
        json_format = pytest.importorskip("google.protobuf.json_format")
        monkeypatch.setattr(hypersparse.masks, "global_keep", json_format.MessageToJson)  # raises inside protobuf
    with pytest.raises((TypeError, AttributeError)):
        main(argv)
    assert "your" not in capsys.readouterr().err


def test_a_built_in_builder_registered_under_a_plugins_name_failing_is_ours(tmp_path, capsys, monkeypatch):
    """Re-review: a plugin registering hypersparse's own mlp builder under its name, which then failed (a bug of
    ours), was "your model alias raised TypeError" with no frame at all."""
    import hypersparse.models
    from hypersparse.cli import main

    (tmp_path / "alias_plugin.py").write_text(
        "from hypersparse.models import MODELS, register_model\n\nregister_model('mlp-alias', MODELS['mlp'][0])\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hypersparse.models, "MLP", None)  # a bug of ours
    with pytest.raises(TypeError, match="'NoneType' object is not callable"):
        main(["train", "--plugin", "alias_plugin", "--model", "mlp-alias", "--run-dir", "r", *QUICK])
    assert "your" not in capsys.readouterr().err


def test_a_plugin_export_writer_failing_half_way_leaves_no_file(run, tmp_path):
    """Re-review of issue 31: a plugin's writer that raised after writing part of its file left it behind."""
    from conftest import cli

    (tmp_path / "halfway.py").write_text(
        "import hypersparse as hs\n\ndef write(model, out, arch, inputs):\n    out.write_text('half')\n"
        "    raise RuntimeError('writer broke')\n\nhs.register_export('halfway', write, '.half')\n")
    out = tmp_path / "m.half"
    done = cli("export", str(run), "--plugin", "halfway", "--format", "halfway", "--out", str(out), cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-1].startswith("hypersparse: error: your code (write in halfway.py:5)"), lines
    assert not out.exists()


def test_a_file_error_in_the_users_code_is_theirs_not_a_path_line(tmp_path, capsys, monkeypatch):
    """Re-review of issue 31: a forward raising FileNotFoundError mid-training became "No such file or directory;
    check the path", with no frame of theirs."""
    _model_module(tmp_path, "reads", "        if self.training:\n            open('/no/such/lookup.txt')\n")  # line 10
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["train", "--model", "reads:build", "--run-dir", "r", *QUICK], capsys)
    assert code == 2 and err[-1].startswith("hypersparse: error: your code (forward in reads.py:10)"), err
    assert any("reads.py\", line 10" in line for line in err) and "FileNotFoundError" in err[-1], err


def _sparse_with_meta(run: Path, tmp_path: Path, edit) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(run / "model.sparse.safetensors"), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta = {k: json.loads(v) if k in ("layout", "arch", "input") else v for k, v in meta.items()}
    edit(meta)
    path = run / "bad.safetensors"
    save_file(tensors, str(path), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    return path


def _first(meta):
    return next(iter(meta["layout"].values()))


@pytest.mark.parametrize("edit", [
    lambda m: m["layout"].update({next(iter(m["layout"])): ["not", "a", "dict"]}),
    lambda m: _first(m).update(shape=[-3, 4]),
    lambda m: _first(m).update(dtype=5),
    lambda m: _first(m).update(rows="many"),
    lambda m: m["arch"].update(num_classes="ten"),
    lambda m: m["arch"].update(model=5),
    lambda m: m.update(input={"mean": "grey", "std": [1.0]}),
    lambda m: m.update(arch=[1, 2]),
    lambda m: m.update(input=dict(m["input"], classes=["a", "b", "c"])),  # trial 31d A301/T_st_classes3
], ids=["entry-a-list", "negative-size", "dtype-a-number", "rows-a-word", "classes-a-word", "model-a-number",
        "input-mean-a-word", "arch-a-list", "3-class-names-for-10"])
def test_sparse_metadata_of_wrong_types_or_negative_sizes_is_one_line(edit, run, tmp_path, capsys):
    path = _sparse_with_meta(run, tmp_path, edit)
    code, err = run_cli(["eval", str(path)], capsys)
    _one_line(code, err, "bad.safetensors")


@pytest.mark.parametrize("edit", [
    lambda c: c.update(run=[]),
    lambda c: c["data"].update(dataset=5),
    lambda c: c["run"].update(seed="zero"),
    lambda c: c.update(extra={"x": 1}),
], ids=["section-a-list", "dataset-a-number", "seed-a-word", "unknown-section"])
def test_config_json_of_wrong_types_given_to_eval_is_one_line(edit, run, capsys):
    _edit_json(run / "config.json", edit)
    code, err = run_cli(["eval", str(run)], capsys)
    _one_line(code, err, "config.json")


@pytest.mark.parametrize("key", ["x" * 100_000, "a b" * 30_000])
def test_a_huge_unknown_key_is_named_in_a_short_line(key, run, capsys):
    """Trial 31l C020: a 100,000-character unknown key in summary.json was echoed whole in the error line."""
    _edit_json(run / "summary.json", lambda s: s.update({key: 1}))
    code, err = run_cli(["eval", str(run)], capsys)
    _one_line(code, err, "is not a known field")
    assert len(err[0]) < 400, len(err[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_a_model_file_of_another_float_dtype_is_converted_on_load(dtype, run, capsys):
    """Trial 31m C72 (a regression of trial 31h Q212): a float8 weight in model.pt made the NaN check fail inside
    torch (isfinite has no float8 kernel), a traceback from eval, export and --pretrained."""
    state = torch.load(run / "model.pt", weights_only=True)
    torch.save({k: v.to(dtype) if k == "1.weight" else v for k, v in state.items()}, run / "model.pt")
    code, err = run_cli(["eval", str(run)], capsys)
    assert code == 0 and not err, err


def test_integers_written_as_floats_in_config_json_are_read_as_integers(run, capsys):
    """Trial 31l T1: run.seed 0.0 passed the schema, and eval crashed in torch.manual_seed (a float). An integer
    written as a float is the integer: eval says what it says for the integer, and export works."""
    from hypersparse.cli import main

    def evaluated():
        code = main(["eval", str(run)])
        out, err = capsys.readouterr()
        assert code == 0 and not err, err
        return out

    before = evaluated()
    _edit_json(run / "config.json", lambda c: (c["run"].update(seed=float(c["run"]["seed"])),
                                               c["schedule"].update(batch_size=float(c["schedule"]["batch_size"]))))
    assert evaluated() == before
    code, err = run_cli(["export", str(run), "--format", "sparse", "--out", str(run.parent / "m.safetensors")], capsys)
    assert code == 0 and not err, err


@pytest.mark.parametrize("content", ["", '{"epoch": 0}\n', '{"epoch": "x", "phase": 1}\n' * 3])
def test_report_on_empty_or_odd_metrics_leaves_nothing(content, run, capsys):
    (run / "metrics.jsonl").write_text(content)
    before = snapshot(run)
    code, err = run_cli(["report", str(run)], capsys)
    _one_line(code, err, str(run))
    assert snapshot(run) == before


def test_a_non_utf8_byte_in_stats_is_one_line(run, capsys):
    lines = (run / "stats.jsonl").read_bytes().splitlines(keepends=True)
    lines[0] = lines[0].replace(b'"epoch"', b'"ep\xffoch"')
    (run / "stats.jsonl").write_bytes(b"".join(lines))
    before = snapshot(run)
    code, err = run_cli(["report", str(run)], capsys)
    _one_line(code, err, "stats.jsonl")
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["no-config", "wrong-shapes", "metrics-a-dict"])
def test_a_checkpoint_missing_its_config_or_of_wrong_shapes_is_one_line(damage, run, capsys):
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    if damage == "no-config":
        del ckpt["config"]
    elif damage == "wrong-shapes":
        name = next(k for k in ckpt["model"] if k.endswith("weight"))
        ckpt["model"][name] = torch.zeros(3, 3)
    else:
        ckpt["metrics"] = {"epoch": 1}
    torch.save(ckpt, run / "checkpoint.pt")
    before = snapshot(run)
    code, err = run_cli(["train", "--resume", str(run)], capsys)
    _one_line(code, err, "checkpoint.pt")
    assert snapshot(run) == before


def test_eval_of_an_onnx_file_is_one_whole_line_that_does_not_cry_wolf(run, tmp_path, capsys):
    (run / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch" + os.urandom(64))
    code, err = run_cli(["eval", str(run / "model.onnx")], capsys)
    _one_line(code, err, "model.onnx")
    assert "could run code" not in err[0] and " fr)" not in err[0]


def test_an_onnx_file_away_from_its_run_needs_only_the_dataset_typed(run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "alone" / "model.onnx"
    out.parent.mkdir()
    code, err = run_cli(["export", str(run), "--format", "onnx", "--out", str(out)], capsys)
    assert code == 0, err
    code, err = run_cli(["eval", str(out)], capsys)  # no config.json beside it: the data must be named
    _one_line(code, err, "pass --dataset")
    assert "--model" not in err[0]  # the graph is the model; --model would be refused
    from hypersparse.evaluate import evaluate_run

    scores = evaluate_run(out, dataset="digits")  # what `eval model.onnx --dataset digits` prints
    summary = json.loads((run / "summary.json").read_text())
    assert scores["test_acc"] == pytest.approx(summary["sparse"]["test_acc"], abs=0.005)


# -- 7. the API: misuse fails at the call -----------------------------------------------------------------------------
def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _art_then(call):
    model = _mlp()
    art = hs.ART(hs.HyperSparse(model, 0.9), warmup_epochs=0, lambda_init=1e-3)
    return call(art, model)


API_MISUSE = {
    "ART-eta-below-1": (lambda: hs.ART(hs.HyperSparse(_mlp(), 0.9), eta=0.5), ValueError, "eta"),
    "ART-without-regularizer": (lambda: hs.ART(None, sparsity=0.9), TypeError, "regularizer"),
    "ART-nan-dense-accuracy": (lambda: _art_then(lambda a, m: a.end_epoch(m, dense_acc=math.nan,
                                                                          pruned_acc=lambda x: 0.5)),
                               ValueError, "dense_acc"),
    "ART-nan-pruned-accuracy": (lambda: _art_then(lambda a, m: a.end_epoch(m, dense_acc=0.5,
                                                                           pruned_acc=lambda x: math.nan)),
                                ValueError, "pruned_acc"),
    "float-masks": (lambda: hs.apply_masks_(_mlp(), {"0.weight": torch.rand(16, 8)}), TypeError, "bool"),
    "empty-layer-regularizer": (lambda: hs.HyperSparse(torch.nn.Linear(0, 4), 0.5), ValueError, "no entries"),
    "empty-layer-masks": (lambda: hs.magnitude_masks(torch.nn.Linear(0, 4), 0.5), ValueError, "no entries"),
    "add-grad-nan": (lambda: hs.HyperSparse(_mlp(), 0.9).add_grad_(math.nan), ValueError, "strength"),
    "add-grad-negative": (lambda: hs.L1(_mlp()).add_grad_(-1.0), ValueError, "strength"),
    # trial 31l: B048/B049 a dense accuracy out of range or a string was taken in warm-up; B054 a negative drift;
    # B029 two tensors of one name (one silently left out); B060 a lazy layer; G035/G037 meta models; M009 a format
    # name --format cannot type
    "ART-dense-accuracy-1.5-in-warm-up": (lambda: _art_then(lambda a, m: hs.ART(
        hs.HyperSparse(m, 0.9), warmup_epochs=1).end_epoch(m, dense_acc=1.5)), ValueError, "between 0 and 1"),
    "ART-dense-accuracy-a-string": (lambda: _art_then(lambda a, m: a.end_epoch(m, dense_acc="0.5",
                                                                               pruned_acc=lambda x: 0.5)),
                                    TypeError, "dense_acc must be a number"),
    "HyperSparse-negative-drift": (lambda: hs.HyperSparse(_mlp(), 0.9, max_rank_drift=-1.0), ValueError,
                                   "max_rank_drift"),
    "two-tensors-of-one-name": (lambda: hs.magnitude_masks([("w", _mlp()[0].weight), ("w", _mlp()[2].weight)], 0.5),
                                ValueError, "two different tensors are named 'w'"),
    "lazy-layer": (lambda: hs.prunable_parameters(torch.nn.Sequential(torch.nn.LazyLinear(4))), ValueError,
                   "not initialised yet"),
    "masks-from-zeros-of-meta": (lambda: hs.masks_from_zeros(_mlp().to("meta")), ValueError, "meta device"),
    "HyperSparse-of-meta": (lambda: hs.HyperSparse(_mlp().to("meta"), 0.9), ValueError, "meta device"),
    "export-format-named-with-a-slash": (lambda: hs.register_export("a/b", lambda *a: "", ".x"), ValueError,
                                         "an export format's name"),
}


@pytest.mark.parametrize("case", list(API_MISUSE))
def test_api_misuse_raises_value_or_type_error_at_the_call(case):
    call, error, needle = API_MISUSE[case]
    with pytest.raises(error, match=needle):
        call()


# -- 8. signals end every command with one line ----------------------------------------------------------------------
@pytest.mark.parametrize("command,delay", [("report", 0.3), ("export", 1.3), ("report", 1.6), ("eval", 1.3)])
def test_sigterm_ends_export_report_and_eval_with_one_line_and_no_partial_file(command, delay, run, tmp_path):
    out = {"export": ["--out", str(tmp_path / "m.safetensors")], "report": ["--out", str(tmp_path / "figures")],
           "eval": []}[command]
    proc = subprocess.Popen([sys.executable, "-m", "hypersparse", command, str(run), *out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    if proc.returncode == 0:
        pytest.skip("the command finished before the signal")
    lines = err.strip().splitlines()
    assert proc.returncode == 143 and len(lines) == 1 and "terminated" in lines[0], (proc.returncode, err)
    assert not [p for p in [*tmp_path.rglob("*"), *run.iterdir()] if p.name.endswith(".tmp")]
    assert not (tmp_path / "figures").exists() or not list((tmp_path / "figures").iterdir())


def test_a_stopped_tune_is_one_line_and_retries_the_stopped_trial(tmp_path, capsys, monkeypatch):
    optuna = pytest.importorskip("optuna")
    from hypersparse import engine
    from hypersparse.errors import Terminated

    def stop(self):
        raise Terminated()

    monkeypatch.setattr(engine.Trainer, "run", stop)  # SIGTERM in the middle of the first trial's training
    code, err = run_cli(["tune", "--study-dir", str(tmp_path / "s"), "--trials", "2", *QUICK[:2]], capsys)
    _one_line(code, err, "terminated", exit_code=143)
    assert "run the command again" in err[0]
    study = optuna.load_study(study_name="hypersparse", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    first, retry = study.trials[0], study.trials[-1]
    assert retry.state == optuna.trial.TrialState.WAITING and retry.system_attrs["fixed_params"] == first.params


# -- 9. trial 31: a run never writes through what a folder it was given holds ---------------------------------------
@pytest.mark.parametrize("files,named", [
    ({"config.json": '{"my": "precious"}', "model.pt": "keep", "notes.txt": "hello"}, "config.json"),  # R001
    ({"metrics.jsonl": "my metrics\n", "summary.json": "x"}, "metrics.jsonl"),  # R002
    ({"model.pt": "keep"}, "model.pt"),
    ({"stats.jsonl": "mine\n"}, "stats.jsonl"),
])
def test_train_into_a_folder_of_the_users_own_files_writes_nothing(files, named, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    before = snapshot(folder)
    code, err = run_cli(["train", "--run-dir", str(folder), *QUICK], capsys)
    _one_line(code, err, f"already holds {named}, which this run would replace; pick a new or empty folder")
    assert snapshot(folder) == before


def test_a_run_stopped_before_its_first_checkpoint_starts_again_in_its_folder_and_only_the_same_run(tmp_path, capsys,
                                                                                                    monkeypatch):
    from hypersparse import run_write

    folder, args = tmp_path / "r", ["train", "--run-dir", str(tmp_path / "r"), "--seed", "4", *QUICK]

    def stop(*a, **k):
        raise KeyboardInterrupt()

    with monkeypatch.context() as m:  # Ctrl-C after the first epoch's logs, before its checkpoint
        m.setattr(run_write, "save_checkpoint", stop)
        code, err = run_cli(args, capsys)
    _one_line(code, err, "no checkpoint yet", exit_code=130)
    assert "start the run again" in err[0] and (folder / "metrics.jsonl").read_text()
    before = snapshot(folder)
    code, err = run_cli([*args[:3], "--seed", "5", *QUICK], capsys)  # another run: its config.json is not ours
    _one_line(code, err, "already holds config.json")
    assert snapshot(folder) == before
    code, err = run_cli(args, capsys)  # the same run again: it starts over, its logs with it
    assert code == 0, err
    epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(len(epochs)))
    code, err = run_cli(args, capsys)  # a run that has a checkpoint: as before
    _one_line(code, err, f"already holds a run; continue it with --resume {folder}")


@pytest.mark.parametrize("plant", ["symlink", "fifo", "socket", "hardlink", "a users file"])
@pytest.mark.parametrize("command", ["train", "resume"])  # L005, L001, 31h K309
def test_a_planted_lock_file_is_refused_and_nothing_is_written_through_it(plant, command, run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("victim")
    folder = run if command == "resume" else tmp_path / "fresh"
    folder.mkdir(exist_ok=True)
    lock = folder / ".hypersparse.lock"
    if plant == "symlink":
        lock.symlink_to(victim)
    elif plant == "fifo":
        os.mkfifo(lock)
    elif plant == "socket":
        import socket

        server = socket.socket(socket.AF_UNIX)
        server.bind(os.path.relpath(lock))  # a path over 107 bytes cannot be bound
        server.close()  # the socket file stays
    elif plant == "hardlink":
        os.link(victim, lock)
    else:
        lock.write_text("my own notes, under an odd name\n")
    before = snapshot(folder)
    argv = ["train", "--resume", str(run)] if command == "resume" else ["train", "--run-dir", str(folder), *QUICK]
    code, err = run_cli(argv, capsys, seconds=30)
    _one_line(code, err, str(lock))
    assert "not the lock file hypersparse makes" in err[0]
    assert victim.read_text() == "victim" and snapshot(folder) == before


def _victim(tmp_path: Path) -> Path:
    """A folder of the user's, outside the run folder, that a planted link points to."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text('{"mine": 1}')
    (victim / "model.pt").write_text("mine")
    return victim


def test_a_planted_compare_folder_link_is_refused_before_training(tmp_path, capsys):  # CS02
    victim, folder = _victim(tmp_path), tmp_path / "r"
    folder.mkdir()
    (folder / "compare-gmp").symlink_to(victim)
    before, theirs = snapshot(folder), snapshot(victim)
    code, err = run_cli(["train", "--run-dir", str(folder), "--compare", "gmp", *QUICK], capsys)
    _one_line(code, err, f"{folder / 'compare-gmp'} (the folder of --compare gmp) is a symbolic link")
    assert snapshot(folder) == before and snapshot(victim) == theirs


def test_resume_refuses_a_compare_folder_replaced_by_a_link(tmp_path, capsys):  # CS01
    folder = tmp_path / "r"
    code, err = run_cli(["train", "--run-dir", str(folder), "--compare", "oneshot", *QUICK], capsys, seconds=120)
    assert code == 0, err
    shutil.rmtree(folder / "compare-oneshot")
    victim = _victim(tmp_path)
    (folder / "compare-oneshot").symlink_to(victim)
    before, theirs = snapshot(folder), snapshot(victim)
    code, err = run_cli(["train", "--resume", str(folder)], capsys)
    _one_line(code, err, "compare-oneshot (the folder of --compare oneshot) is a symbolic link")
    assert snapshot(folder) == before and snapshot(victim) == theirs


def test_tune_refuses_a_planted_trial_folder_link(tmp_path, capsys):  # TS01
    pytest.importorskip("optuna")
    victim, study = _victim(tmp_path), tmp_path / "s"
    study.mkdir()
    (study / "trial-0").symlink_to(victim)
    theirs = snapshot(victim)
    code, err = run_cli(["tune", "--study-dir", str(study), "--trials", "1", *QUICK[:2]], capsys)
    _one_line(code, err, f"{study / 'trial-0'} (a trial's run folder) is a symbolic link")
    assert snapshot(victim) == theirs and not (study / "best.json").exists()


@pytest.mark.parametrize("command", ["train", "resume"])
def test_a_planted_tensorboard_folder_link_is_refused(command, run, tmp_path, capsys):  # TS02
    from hypersparse.config import TrainConfig

    victim = _victim(tmp_path)
    if command == "resume":  # a run that logs to TensorBoard, as it would be after its first epochs
        _edit_json(run / "config.json", lambda c: c["run"].update(log="tensorboard"))
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        ckpt["config"]["run"]["log"] = "tensorboard"
        ckpt["identity"] = TrainConfig.from_dict(ckpt["config"], check=False).identity
        torch.save(ckpt, run / "checkpoint.pt")
        folder, argv = run, ["train", "--resume", str(run)]
    else:
        folder = tmp_path / "r"
        folder.mkdir()
        argv = ["train", "--run-dir", str(folder), "--set", "run.log=tensorboard", *QUICK]
    (folder / "tensorboard").symlink_to(victim)
    before, theirs = snapshot(folder), snapshot(victim)
    code, err = run_cli(argv, capsys)
    _one_line(code, err, "tensorboard (the folder of --set run.log=tensorboard) is a symbolic link")
    assert snapshot(folder) == before and snapshot(victim) == theirs


@pytest.mark.parametrize("where", ["metrics", "history"])
def test_a_checkpoint_with_a_list_longer_than_any_run_is_refused_at_once(where, run, capsys):  # Q011
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    rows = ckpt["metrics"] if where == "metrics" else ckpt["method"]["history"]
    rows *= 2_000_000 // len(rows) + 1  # the same few rows, referenced 2 M times (a small file): no run has as many
    torch.save(ckpt, run / "checkpoint.pt")
    before = snapshot(run)
    started = time.perf_counter()
    code, err = run_cli(["train", "--resume", str(run)], capsys, seconds=20)
    _one_line(code, err, f"got {len(rows)}")
    assert "checkpoint.pt" in err[0] and time.perf_counter() - started < 10
    assert snapshot(run) == before


@pytest.mark.parametrize("name,fmt", [("model.pt", "sparse"), ("config.json", "onnx"), ("summary.json", "sparse"),
                                      ("checkpoint.pt", "dense")])
def test_an_export_over_the_runs_own_files_is_refused(run, capsys, name, fmt):
    """Trial 31e O001/O003/O004: ``export --out RUN/model.pt`` (or config.json, summary.json) replaced the run's own
    file, leaving eval, report and --resume unable to read the run. One line, and the file stays."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
    target = run / name
    before = target.read_bytes() if target.exists() else None
    code, err = run_cli(["export", str(run), "--format", fmt, "--out", str(target)], capsys)
    assert code == 2 and len(err) == 1 and "the run's own" in err[0], err
    assert (target.read_bytes() if target.exists() else None) == before


def test_an_export_out_ending_in_a_slash_is_a_folder_not_a_file(run, tmp_path, capsys):
    """Trial 31e O012: ``--out outdir/`` wrote a file named outdir."""
    code, err = run_cli(["export", str(run), "--format", "sparse", "--out", str(tmp_path / "outdir") + "/"], capsys)
    assert code == 2 and len(err) == 1 and "names a folder" in err[0], err
    assert not (tmp_path / "outdir").exists()


def _run_and_a_victim(tmp_path):
    """A run folder's path, another folder holding files under a run's names (and their snapshot), and tiny settings:
    the run is swapped for a link to the other folder mid-run."""
    from hypersparse.config import TrainConfig

    run, victim = tmp_path / "run", tmp_path / "victim"
    victim.mkdir()
    for name in ("model.pt", "summary.json", "metrics.jsonl", "checkpoint.pt"):
        (victim / name).write_text("the user's own\n")
    cfg = TrainConfig.from_dict({"sparsity": 0.9, "warmup_epochs": 2, "finetune_epochs": 2, "lr_steps": "1",
                                 "lambda_init": 1e-3})
    return run, victim, snapshot(victim), cfg


@pytest.mark.parametrize("how", ["train", "resume"])
def test_a_run_folder_swapped_for_a_link_mid_run_is_not_written_through(tmp_path, monkeypatch, how):
    """Trial 31f S5: someone who can write the run folder's parent renames it once checkpoint.pt exists and puts a
    link to another folder in its place; train went on writing through the link, over that folder's model.pt and
    summary.json, and exited 0. Each write now checks that the folder is still the one whose lock the run holds."""
    from hypersparse.engine import resume, train
    from hypersparse.errors import UserError
    from hypersparse.run_write import RunFiles

    run, victim, before, cfg = _run_and_a_victim(tmp_path)
    if how == "resume":  # a run stopped after its first epoch, continued
        original = RunFiles.record_epoch

        def stop_after_one(self, row, stats, state):
            original(self, row, stats, state)
            raise KeyboardInterrupt

        monkeypatch.setattr(RunFiles, "record_epoch", stop_after_one)
        with pytest.raises(BaseException):
            train(cfg, run, progress=False, out=open(os.devnull, "w"))
        monkeypatch.undo()
    original = RunFiles.record_epoch

    def swap_after_one(self, row, stats, state):
        original(self, row, stats, state)
        if not run.is_symlink():
            run.rename(tmp_path / "moved")
            run.symlink_to(victim, target_is_directory=True)

    monkeypatch.setattr(RunFiles, "record_epoch", swap_after_one)
    with pytest.raises(UserError, match="its lock file moved or linked elsewhere, while this run wrote it"):
        if how == "train":
            train(cfg, run, progress=False, out=open(os.devnull, "w"))
        else:
            resume(run, progress=False, out=open(os.devnull, "w"))
    assert snapshot(victim) == before


@pytest.mark.parametrize("carry", ["moved", "hard-linked"])
def test_a_swapped_run_folder_is_refused_even_with_the_lock_carried_into_the_other(tmp_path, monkeypatch, carry):
    """The attacker moves (or hard-links) the run's lock file into the other folder before the swap, so that the lock
    at the run's path is still this run's file: the folder is not, and nothing of the other folder is replaced."""
    from hypersparse.engine import train
    from hypersparse.errors import UserError
    from hypersparse.run_write import LOCK, RunFiles

    run, victim, before, cfg = _run_and_a_victim(tmp_path)
    original = RunFiles.record_epoch

    def swap_after_one(self, row, stats, state):
        original(self, row, stats, state)
        if not run.is_symlink():
            if carry == "moved":
                (run / LOCK).rename(victim / LOCK)
            else:
                os.link(run / LOCK, victim / LOCK)
            run.rename(tmp_path / "moved")
            run.symlink_to(victim, target_is_directory=True)

    monkeypatch.setattr(RunFiles, "record_epoch", swap_after_one)
    with pytest.raises(UserError, match="its lock file moved or linked elsewhere, while this run wrote it"):
        train(cfg, run, progress=False, out=open(os.devnull, "w"))
    after = snapshot(victim)
    after.pop(LOCK, None)  # the attacker's own doing
    assert after == before


def test_a_lock_that_cannot_be_written_on_a_full_disk_is_not_left_in_the_users_folder(tmp_path, monkeypatch):
    """Trial 31e F012: train refused on a full disk left its .hypersparse.lock in the user's folder."""
    import errno

    from hypersparse.run_write import RunLock

    (tmp_path / "notes.txt").write_text("the user's\n")
    before = snapshot(tmp_path)

    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError, match="No space left"):
        RunLock(tmp_path).acquire()
    assert snapshot(tmp_path) == before


def test_a_first_write_that_fills_the_disk_leaves_nothing_in_the_users_folder(tmp_path, monkeypatch, capsys):
    """Trial 31k E034: train into an existing folder on a nearly full disk: the write test's file was made, its
    write failed, and the file stayed in the user's folder."""
    import errno
    import pathlib

    (tmp_path / "notes.txt").write_text("the user's\n")
    before = snapshot(tmp_path)
    write_text = pathlib.Path.write_text

    def full(self, *args, **kwargs):
        if "write-test" in self.name:
            self.touch()  # made, then no room for its bytes
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    code, err = run_cli(["train", "--run-dir", str(tmp_path), *QUICK], capsys)
    _one_line(code, err, "No space left on device")
    assert snapshot(tmp_path) == before


def test_a_dense_export_does_not_replace_a_users_json_beside_its_out(run, tmp_path, capsys):
    """Trial 31h X217: `export --format dense --out x.pt` also writes x.json, and replaced a user's own x.json that no
    flag named. It is refused; the JSON an earlier dense export wrote is replaced as before."""
    (tmp_path / "x.json").write_text('{"my": "notes"}\n')
    before = snapshot(tmp_path)
    code, err = run_cli(["export", str(run), "--format", "dense", "--out", str(tmp_path / "x.pt")], capsys)
    _one_line(code, err, "not written by a dense export")
    assert snapshot(tmp_path) == before
    for _ in range(2):  # its own JSON: written, then replaced by the next export
        code, err = run_cli(["export", str(run), "--format", "dense", "--out", str(tmp_path / "y.pt")], capsys)
        assert code == 0, err
    assert set(json.loads((tmp_path / "y.json").read_text())) == {"arch", "input"}


def test_a_lock_file_overwritten_while_held_is_not_quoted_as_a_process(run, capsys):
    """Trial 31h K317: a lock file overwritten with text while held made the next writer's refusal name "process
    garbage", the file's text."""
    from hypersparse.run_write import LOCK, RunLock

    with RunLock(run):
        (run / LOCK).write_text("garbage\n")
        code, err = run_cli(["train", "--resume", str(run)], capsys)
    _one_line(code, err, "holds no process id")
    assert "garbage" not in err[0]
