"""The README's training-loop snippet runs as written."""
import re
from pathlib import Path

import hypersparse as hs

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_snippet_runs_and_reaches_target_sparsity(capsys):
    text = README.read_text()
    block = re.search(r"## Use it in your own training loop\n\n```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    report = hs.sparsity_report(scope["model"])
    assert report.zeros == int(0.95 * report.numel)
    assert scope["art"].done and scope["art"].chosen_epoch is not None
    assert scope["accuracy"](scope["model"]) > 0.9
    assert "total" in capsys.readouterr().out


def test_readme_starts_with_the_two_setup_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1).strip().splitlines()
    assert len(first_block) == 2
    assert "hypersparse train" in first_block[0] and "pytest" in first_block[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert first_block[1].split("#")[0].strip() in ci  # CI runs exactly the README's test command
