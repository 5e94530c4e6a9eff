"""Models and datasets from outside hypersparse: ``module.path:callable`` names, ``--plugin`` modules, entry points.

A plugin is any importable module that calls :func:`hypersparse.models.register_model` or
:func:`hypersparse.data.register_dataset` when imported. Name it with ``--plugin module`` (recorded in the run's
config, so ``--resume``, ``eval`` and ``export`` import it again), or install a package that lists it in the
``hypersparse.plugins`` entry-point group, which hypersparse imports the first time a name is not found.
"""
from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points
from typing import Any

from hypersparse.errors import UserError

GROUP = "hypersparse.plugins"
_entry_points_loaded = False


def import_object(spec: str, flag: str) -> Any:
    """The object ``module.path:name`` names, or UserError saying what is missing."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"{flag} {spec!r}: expected module.path:callable")
    module = import_module(module_name, flag)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{flag} {spec!r}: module {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def import_module(name: str, flag: str):
    """Import ``name`` (the current folder counts, as for ``python -m``), or UserError."""
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UserError(f"{flag} {name}: cannot import it ({exc}); is it on PYTHONPATH or installed?") from None


def load_plugins(modules: str | None) -> None:
    """Import the comma-separated plugin modules of ``--plugin``."""
    for name in (m.strip() for m in (modules or "").split(",")):
        if name:
            import_module(name, "--plugin")


def load_entry_points() -> bool:
    """Import every installed ``hypersparse.plugins`` entry point once; True if this call imported any."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return False
    _entry_points_loaded = True
    found = list(entry_points(group=GROUP))
    for ep in found:
        try:
            ep.load()
        except Exception as exc:  # a broken third-party plugin: name it, do not crash on someone else's bug
            raise UserError(f"plugin {ep.name} ({ep.value}) of entry-point group {GROUP} failed to import: {exc}") \
                from None
    return bool(found)
