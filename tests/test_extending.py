"""Extending hypersparse from outside the package: a method defined in this module, registered through the
``hypersparse.plugins`` entry point, trains from the command line beside a built-in one and its runs work with eval,
export and report; docs/extending.md's files and commands run as written."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypersparse import Method, register_method
from hypersparse.config import setting
from hypersparse.masks import magnitude_masks
from hypersparse.schema import Int

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
SHORT = ["--sparsity", "0.9", "--epochs-scale", "0.05", "--prune-epochs", "40"]


# -- the method: layer-wise magnitude pruning in even rounds over its phase -----------------------------------------
@dataclass(frozen=True)
class MineSettings:
    """mine: layer-wise magnitude pruning in even rounds (--method mine only)."""

    mine_rounds: int = setting(2, "rounds of pruning over the phase", Int(1, 100))


class Mine(Method):
    def __init__(self, rounds: int, **budget):
        super().__init__(**budget)
        self.rounds = rounds

    def update_mask(self, model):
        every = max(1, self.sparse_steps // self.rounds)
        if self.sparse_step % every:
            return None
        done = min(self.rounds, self.sparse_step // every)
        return magnitude_masks(model, self.sparsity * done / self.rounds, scope="layer", filter=self.filter)


def register() -> None:
    """The entry point (``mine = test_extending:register``): called when hypersparse loads its plugins."""
    register_method("mine", MineSettings, lambda setup: Mine(setup.settings.mine_rounds, **setup.budget),
                    help="mine (layer-wise magnitude in rounds)")


# -- helpers ---------------------------------------------------------------------------------------------------------
def installed(folder: Path, entry_points: dict[str, str]) -> dict:
    """The environment of a command that sees ``entry_points`` (name -> value) as an installed package's."""
    info = folder / "site" / "mine_plugins-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mine-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[hypersparse.plugins]\n" + "".join(f"{k} = {v}\n"
                                                                               for k, v in entry_points.items()))
    path = [str(folder / "site"), str(folder), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def cli(*args, cwd: Path, env: dict):
    return subprocess.run([sys.executable, "-m", "hypersparse", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env=env)


# -- the acceptance test ---------------------------------------------------------------------------------------------
def test_a_method_from_an_entry_point_trains_compares_and_its_run_is_read_back(tmp_path):
    env = installed(tmp_path, {"mine": "test_extending:register"})
    help = cli("train", "--help", cwd=tmp_path, env=env)
    shown = " ".join(help.stdout.split())  # argparse wraps the lines
    assert help.returncode == 0 and "or mine (layer-wise magnitude in rounds)" in shown
    assert "--mine-rounds ROUNDS rounds of pruning over the phase" in shown
    assert "compare: oneshot, gmp, snip, rigl, mine" in shown

    out = cli("train", "--method", "mine", "--mine-rounds", "3", "--compare", "gmp", *SHORT, "--run-dir", "run",
              cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["sparsity"]["method"] == "mine" and config["mine"] == {"mine_rounds": 3}
    assert abs(summary["sparse"]["sparsity"] - 0.9) < 0.005 and summary["sparse"]["test_acc"] > 0.6
    gmp = json.loads((tmp_path / "run" / "compare-gmp" / "summary.json").read_text())
    assert sum(gmp["epochs"].values()) == sum(summary["epochs"].values()) == 3 + 2 + 8  # the same budget
    assert summary["compare"]["gmp"]["test_acc"] == gmp["sparse"]["test_acc"]
    assert "test accuracy: mine" in out.stdout

    ev = cli("eval", "run", cwd=tmp_path, env=env)
    assert ev.returncode == 0 and f"{summary['sparse']['test_acc']:.2%}" in ev.stdout, ev.stderr
    ex = cli("export", "run", cwd=tmp_path, env=env)
    assert ex.returncode == 0 and (tmp_path / "run" / "model.sparse.safetensors").exists(), ex.stderr
    rep = cli("report", "run", "run/compare-gmp", "--out", "report", cwd=tmp_path, env=env)
    assert rep.returncode == 0, rep.stderr
    page = next((tmp_path / "report").glob("*.html")).read_text()
    assert "<td>mine</td>" in page and "<td>gmp</td>" in page

    # without the plugin installed the name is unknown: one line
    bare = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    refused = cli("train", "--method", "mine", *SHORT, "--run-dir", "other", cwd=tmp_path, env=bare)
    assert refused.returncode == 2 and "--method must be one of art, oneshot, gmp, snip, rigl" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "other").exists()


def test_no_file_in_src_names_the_plugin_method():
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"""["']mine["']|--method mine|\bMine\b|mine_rounds""", text), path


# -- docs/extending.md -----------------------------------------------------------------------------------------------
def test_every_file_and_command_of_the_extending_page_works(tmp_path):
    text = DOC.read_text()
    files = dict(re.findall(r"```\w+ file=(\S+)\n(.*?)```", text, re.S))
    assert set(files) == {"pyproject.toml", "my_methods.py", "my_models.py", "my_data.py", "my_export.py"}
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    group = files["pyproject.toml"].split('[project.entry-points."hypersparse.plugins"]\n')[1]
    entry_points = dict((k.strip(), v.strip().strip('"')) for k, v in (line.split("=") for line in group.splitlines()
                                                                       if "=" in line))
    env = installed(tmp_path, entry_points)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()
                if line.startswith("hypersparse ")]
    assert len(commands) == 4
    for line in commands:
        out = cli(*shlex.split(line)[1:], cwd=tmp_path, env=env)
        assert out.returncode == 0, (line, out.stderr)
    for run, method in (("random", "random"), ("stripes", "gmp")):
        summary = json.loads((tmp_path / "runs" / run / "summary.json").read_text())
        assert summary["config"]["sparsity"]["method"] == method
        assert abs(summary["sparse"]["sparsity"] - 0.9) < 0.01 and summary["sparse"]["test_acc"] > 0.5, run
    assert json.loads((tmp_path / "runs" / "random" / "config.json").read_text())["random"] == {"draw_seed": 3}
    assert "gmp" in json.loads((tmp_path / "runs" / "random" / "summary.json").read_text())["compare"]
    import numpy as np

    arrays = np.load(tmp_path / "runs" / "stripes" / "model.npz")
    zeros = sum(int((arrays[k] == 0).sum()) for k in arrays.files if k.endswith("weight"))
    total = sum(arrays[k].size for k in arrays.files if k.endswith("weight"))
    assert zeros >= int(0.9 * total)


def test_a_method_from_a_typed_plugin_needs_it_typed_again_to_read_its_runs(tmp_path):
    files = dict(re.findall(r"```\w+ file=(\S+)\n(.*?)```", DOC.read_text(), re.S))
    (tmp_path / "my_methods.py").write_text(files["my_methods.py"])
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    out = cli("train", "--plugin", "my_methods", "--method", "random", "--draw-seed", "1", *SHORT, "--run-dir", "r",
              cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    for command in (["eval", "r"], ["export", "r"], ["report", "r"]):
        refused = cli(*command, cwd=tmp_path, env=env)
        assert refused.returncode == 2 and "the run in r needs --plugin my_methods" in refused.stderr, refused.stderr
        assert cli(*command, "--plugin", "my_methods", cwd=tmp_path, env=env).returncode == 0, command
    # --resume without it, or eval with another plugin typed: the plugin is named as missing, the files not blamed
    for command in (["train", "--resume", "r"], ["eval", "r", "--plugin", "my_methods_other"]):
        if command[-1] == "my_methods_other":
            (tmp_path / "my_methods_other.py").write_text("")
        refused = cli(*command, cwd=tmp_path, env=env)
        assert refused.returncode == 2 and "--plugin" in refused.stderr, refused.stderr
        assert "damaged" not in refused.stderr, refused.stderr


def test_a_plugin_cannot_replace_a_built_in_method_model_dataset_or_export_format():
    import hypersparse as hs
    from hypersparse.data import register_dataset
    from hypersparse.models import register_model

    def mine(*args, **kwargs):
        return None

    for register, name in ((lambda n: hs.register_method(n, None, mine), "gmp"),
                           (lambda n: hs.register_export(n, mine, ".txt"), "onnx"),
                           (lambda n: register_model(n, mine), "mlp"), (lambda n: register_dataset(n, mine), "digits")):
        with pytest.raises(ValueError, match="built into hypersparse"):
            register(name)


def test_two_plugins_registering_one_name_are_told_and_the_same_code_again_is_not():
    """One registry shape for all four: a second, different registration of a user's name warns, naming both; the
    same code registered again (a notebook cell run twice, a module imported twice) replaces it silently."""
    import warnings

    import hypersparse as hs
    from hypersparse import method
    from hypersparse.data import DATASETS, register_dataset
    from hypersparse.export import EXPORTS
    from hypersparse.models import MODELS, register_model

    def first(*args, **kwargs):
        return None

    def second(*args, **kwargs):
        return None

    cases = ((lambda f: hs.register_method("clash-m", None, f), method._METHODS, "clash-m"),
             (lambda f: hs.register_export("clash-e", f, ".txt"), EXPORTS, "clash-e"),
             (lambda f: register_model("clash-model", f), MODELS, "clash-model"),
             (lambda f: register_dataset("clash-d", f), DATASETS, "clash-d"))
    for register, registry, name in cases:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                register(first)
                register(first)  # the same code again: silent
            with pytest.warns(UserWarning, match=rf"'{name}' was registered by .*first; .*second replaces it"):
                register(second)
        finally:
            registry.pop(name, None)


def test_a_plugin_whose_setting_or_section_clashes_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for name, section, field in (("clashy", "clashy", "seed"), ("schedule", "schedule", "foo")):
        (tmp_path / f"plug_{name}.py").write_text(
            "from dataclasses import dataclass\n"
            "from hypersparse import register_method\n"
            "from hypersparse.config import setting\n"
            "from hypersparse.schema import Int\n\n\n"
            "@dataclass(frozen=True)\n"
            f"class S:\n    {field}: int = setting(0, 'mine', Int(0, 10))\n\n\n"
            f"register_method({name!r}, S, lambda setup: None)\n")
        out = cli("train", "--plugin", f"plug_{name}", "--help", cwd=tmp_path, env=env)
        assert out.returncode == 2, out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert section in out.stderr


def test_builders_from_one_factory_or_partials_of_other_arguments_are_other_code():
    """Trial 31j L001b/L002b: two plugins whose builders were functools.partial objects, or closures of one shared
    factory with other values, replaced each other without a word."""
    import functools
    import warnings

    from hypersparse.models import MODELS, register_model

    def factory(width):
        def build(*args):
            return width
        return build

    def base(width, *args):
        return width

    try:
        for first, second in ((factory(1), factory(2)), (functools.partial(base, 1), functools.partial(base, 2))):
            register_model("clash-f", first)
            with pytest.warns(UserWarning, match="'clash-f' was registered by"):
                register_model("clash-f", second)
            MODELS.pop("clash-f")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the same values again: the same code, silently
            register_model("clash-f", factory(3))
            register_model("clash-f", factory(3))
    finally:
        MODELS.pop("clash-f", None)
