"""The house's shape: the package's imports form no cycle and never reach up a layer; no test module imports another.

The layers are drawn in docs/extending.md (its last section); :data:`LAYERS` below is the same drawing, bottom first.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "hypersparse"

#: bottom first; a module may import from its own layer and the ones below. A name covers a package's submodules.
LAYERS = {
    "base": ["errors", "schema", "checkpoint", "native", "params", "threads", "device", "distributed",
             "plugins", "tracking", "integrations.budget"],
    "parts": ["models", "data", "masks", "keep_pruned", "regularizers", "sparse_conv"],
    "mechanisms": ["method", "schedule", "config", "methods", "driver", "stats", "compaction", "compact_training",
                   "inference", "export", "progress"],
    "runs": ["engine", "evaluate", "run_read", "run_write", "report", "integrations"],
    "front": ["compare", "tune", "cli", "command", "__main__", ""],  # "": the package itself, its lazy facade
}


def test_docs_extending_draws_the_same_layers():
    """Each layer's line in the page's drawing names the same modules (``a/b`` for ``a.b``, ``pkg/*`` for ``pkg``)."""
    page = (ROOT / "docs" / "extending.md").read_text()
    block = re.search(r"## Where new code goes: the layers\n.*?```\n(.*?)```", page, re.S).group(1)
    drawn: dict[str, set[str]] = {}
    layer = None
    for line in block.splitlines():
        words = re.sub(r"\(.*?\)", "", line).split()
        if not words or words[0] == "|":
            continue
        if not line.startswith(" "):
            layer, words = words[0], words[1:]
        drawn.setdefault(layer, set()).update("" if w == "hypersparse" else w.removesuffix("/*").replace("/", ".")
                                              for w in words)
    assert drawn == {name: set(modules) for name, modules in LAYERS.items()}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The package modules ``name`` imports, at module level or inside a function (``typing.TYPE_CHECKING`` too).

    ``import hypersparse`` and ``from hypersparse import __version__`` load only the facade, whose names load on
    first use: they are not counted."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("hypersparse.") for a in node.names if a.name.startswith("hypersparse.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                (node.module == "hypersparse" or node.module.startswith("hypersparse.")):
            base = node.module.removeprefix("hypersparse").removeprefix(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}".lstrip(".")
                if sub in MODULES:
                    found.add(sub)
                elif base:
                    found.add(base)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{name}: a relative import; write hypersparse.<module>")
    return found - {name}


GRAPH = {name: _imports(name) for name in MODULES}


def layer_of(name: str) -> int | None:
    """The layer of the longest listed name that is ``name`` or a package above it (None: not listed)."""
    listed = [(len(n), i) for i, names in enumerate(LAYERS.values()) for n in names
              if name == n or (n and name.startswith(n + "."))]
    return max(listed)[1] if listed else None


def test_every_module_is_in_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert unplaced == [], f"add these modules to a layer in tests/test_layers.py and docs/extending.md: {unplaced}"


def test_no_import_reaches_up_a_layer():
    names = list(LAYERS)
    upward = sorted(f"{a} ({names[layer_of(a)]}) imports {b} ({names[layer_of(b)]})"
                    for a, targets in GRAPH.items() for b in targets if layer_of(b) > layer_of(a))
    assert not upward, "\n" + "\n".join(upward)


def _cycle() -> list[str] | None:
    """One import cycle among the package's modules, as the path around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
            if nxt in GRAPH and not state.get(nxt):
                found = visit(nxt, path + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(GRAPH):
        if not state.get(start):
            found = visit(start, [])
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle)


TESTS = sorted(Path(__file__).parent.glob("test_*.py"))


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_no_test_module_imports_another(path):
    """Shared helpers live in conftest.py; a test module imported by another would also run its tests' setup."""
    tests = {p.stem for p in TESTS}
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0] if node.module.split(".")[0] != "tests"
                         else node.module.split(".")[-1])
    assert not imported & tests, f"move what {path.name} takes from {sorted(imported & tests)} into conftest.py"
