"""Code from outside hypersparse: ``module.path:callable`` names, ``--plugin`` modules, entry points; and the rule
that decides when it may be imported.

Code comes only from what the user types (``--plugin``, ``--model`` and ``--dataset`` on the command line) or passes
in Python, never from a file. A run's ``config.json``, its ``summary.json``, a ``--config`` file and a sparse file's
metadata may *name* code (a plugin, a model or dataset by import path); hypersparse then refuses with one line that
says which flag to type (:func:`require_typed`, :func:`trust_line`) and imports nothing. Names typed on the command
line are looked up in the current folder too, as ``python -m`` would (:func:`typed_names_from`); nothing else is, and
the current folder is never left on ``sys.path``.

A plugin is any importable module that calls :func:`hypersparse.models.register_model`,
:func:`hypersparse.data.register_dataset`, :func:`hypersparse.register_method` or
:func:`hypersparse.export.register_export` when imported. An installed package may list one in the
``hypersparse.plugins`` entry-point group (a module, or a ``module:function`` that registers when called), which
hypersparse imports when a command starts whose flags list what is registered, and otherwise the first time a name
is not found.

When the user's own code raises (their model, dataset, plugin, or a syntax error in it), :class:`UserCodeError`
carries their frames only, and the command line prints those and one line saying which of their objects failed.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import os
import sys
import sysconfig
import traceback
from importlib.metadata import entry_points
from typing import Any, Iterator, NamedTuple

from hypersparse.errors import UserError, is_ours

GROUP = "hypersparse.plugins"
_entry_points_loaded = False
#: setting -> the flag that names code through it
CODE_FLAGS = {"run.plugin": "--plugin", "model.model": "--model", "data.dataset": "--dataset"}
#: prefixes of names that are not imports: libraries' own registries, an image folder, a Hugging Face config
NOT_CODE = {"model.model": ("torchvision", "timm", "hf"), "data.dataset": ("folder",)}
_typed_folder: contextvars.ContextVar[str | None] = contextvars.ContextVar("typed_folder", default=None)
#: the files of the modules imported because the user typed or passed their names (their code, by their word)
_TYPED_FILES: set[str] = set()
#: (kind, name) -> the packages whose code registered it (a later registration of the name adds its own): a plugin
#: package's modules are its code
_REGISTRARS: dict[tuple[str, str], set[str]] = {}


class UserCode(NamedTuple):
    """What the error boundary counts as the user's code besides the modules they typed: the source files of what
    plugins registered (their own, outside installed packages) and the packages that registered (by module name)."""
    files: frozenset[str] = frozenset()
    packages: frozenset[str] = frozenset()


def note_registrar(kind: str, name: str) -> None:
    """Remember which package registers ``name``: that of the first caller outside hypersparse, if it is the user's
    (not the standard library's: the import system, for hypersparse's own registrations, or a thread). Its modules, a
    plugin package's helper module say, are the user's code when one of them fails."""
    frame = sys._getframe(1)
    while frame is not None and _hypersparses(frame.f_code.co_filename):
        frame = frame.f_back
    module = frame.f_globals.get("__name__") if frame is not None and _theirs(frame.f_code.co_filename) else None
    del frame  # a frame held here would keep its locals alive
    package = _package_of(module) if isinstance(module, str) else None
    if package:
        _REGISTRARS.setdefault((kind, name), set()).add(package)


def _package_of(module: str) -> str:
    """The package a module belongs to, by name: its first enclosing package that is a regular one or a namespace
    package of the user's folders alone (a namespace such as ``google``, which installed libraries share, is
    skipped); else the module itself."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        found = sys.modules.get(prefix)
        if found is None:
            continue
        if getattr(found, "__file__", None):
            return prefix
        paths = list(getattr(found, "__path__", []) or [])
        if paths and all(_theirs(p) and not _installed(p) for p in paths):
            return prefix
    return module


def registered_code(builders: list[object], names: set[tuple[str, str]]) -> UserCode:
    """The user's code that registered what is registered now (``names``: (kind, name) pairs; ``builders``: the
    registered callables), for :func:`their_frame`."""
    files = set()
    for obj in builders:
        if is_ours(obj):
            continue
        with contextlib.suppress(TypeError, OSError):
            source = inspect.getsourcefile(obj)
            if source and _theirs(source) and not _installed(source):  # another library's class: not theirs
                files.add(os.path.realpath(source))
    packages = frozenset().union(*(_REGISTRARS.get(key, ()) for key in names))
    return UserCode(frozenset(files), packages)


def _in_package(module: str | None, packages: frozenset[str]) -> bool:
    return isinstance(module, str) and any(module == p or module.startswith(p + ".") for p in packages)


class UserCodeError(UserError):
    """The user's own code raised: ``frames`` are their frames (file:line) and the error, formatted; the message
    names their object. ``registered``: what plugins registered (:func:`registered_code`); given, their frames are
    those and their modules outside installed packages (not Optuna's, say)."""

    def __init__(self, what: str, exc: BaseException, registered: UserCode | None = None):
        self.frames = _own_frames(exc, registered)
        super().__init__(f"{what} raised {type(exc).__name__} (its frames above); fix it and run again")


def _theirs(filename: str) -> bool:
    """Whether a frame's file is the user's: not hypersparse's, torch's or the standard library's."""
    if filename.startswith("<"):
        return False
    path = os.path.realpath(filename)
    hypersparse_dir, torch_dir, stdlib = _folders()
    if path.startswith((hypersparse_dir, torch_dir)):
        return False
    return not path.startswith(stdlib) or "site-packages" in path


@functools.lru_cache(maxsize=1)
def _folders() -> tuple[str, str, str]:
    """hypersparse's, torch's and the standard library's folders (real paths ending in a separator)."""
    import torch

    import hypersparse

    return tuple(os.path.join(os.path.realpath(d), "") for d in (
        os.path.dirname(hypersparse.__file__), os.path.dirname(torch.__file__), sysconfig.get_paths()["stdlib"]))


def _own_frames(exc: BaseException, registered: UserCode | None = None) -> str:
    """The traceback of ``exc`` without the frames of hypersparse, torch and the standard library (with
    ``registered``: nor those of installed packages that registered nothing, such as Optuna's)."""
    frames = [f for f, module in _frames(exc)
              if (_theirs(f.filename) if registered is None else _users(f.filename, module, registered))]
    text = "".join(traceback.format_list(frames))
    head = "Traceback (most recent call last, your code only):\n" if frames else ""
    return head + text + "".join(traceback.format_exception_only(type(exc), exc))


def _frames(exc: BaseException) -> list[tuple[traceback.FrameSummary, str | None]]:
    """Each frame of ``exc``'s traceback with the name of the module it ran in."""
    modules = [frame.f_globals.get("__name__") for frame, _ in traceback.walk_tb(exc.__traceback__)]
    return list(zip(traceback.extract_tb(exc.__traceback__), modules))


def _installed(filename: str) -> bool:
    return any(p in filename for p in ("site-packages", "dist-packages"))


def _users(filename: str, module: str | None, registered: UserCode) -> bool:
    """Whether a frame's file is the user's own code: a module of theirs outside installed packages, one they typed,
    or one of a package that registered a model, dataset, method or export format."""
    return _given(filename, module, registered) or (_theirs(filename) and not _installed(filename))


def _given(filename: str, module: str | None, registered: UserCode) -> bool:
    """Whether a frame is of a module the user typed or passed, a registered file, or a module of a registering
    package (by its module name: torch under a plugin's folder, a virtual environment say, stays torch)."""
    path = os.path.realpath(filename)
    return path in _TYPED_FILES or path in registered.files or _in_package(module, registered.packages)


def _hypersparses(filename: str) -> bool:
    return os.path.realpath(filename).startswith(_folders()[0])


def their_frame(exc: BaseException, registered: UserCode) -> traceback.FrameSummary | None:
    """The innermost frame of ``exc``'s traceback in a module the user typed or passed (``--model``, ``--dataset``,
    ``--plugin``) or of a package that registered a model, dataset, method or export format (``registered``), if the
    error arose there: None
    when it has no such frame, or when hypersparse's own code ran below it and raised (a hook of ours inside their
    forward: our bug, whose traceback is the report). Frames below theirs of torch, other libraries or their own
    helper modules are what their code called."""
    pairs = _frames(exc)
    frames = [f for f, _ in pairs]
    mine = [i for i, (f, module) in enumerate(pairs) if _given(f.filename, module, registered)]
    if not mine or not _failed_in_theirs(exc, frames, mine[-1]):
        return None
    return frames[mine[-1]]


def _failed_in_theirs(exc: BaseException, frames: list[traceback.FrameSummary], last: int) -> bool:
    """Whether ``exc`` arose in the user's code, whose innermost frame is ``frames[last]``: nothing of hypersparse's
    ran below it, or our API refused what their code passed it (they called it directly, and a ValueError or
    TypeError came from one of our own `raise` lines). Anything else that arose in our code (a hook of ours that
    torch ran inside their forward, say) is our bug."""
    below = frames[last + 1:]
    if not any(_hypersparses(f.filename) for f in below):
        return True
    called, raised = below[0], frames[-1]
    return isinstance(exc, (ValueError, TypeError)) and _hypersparses(called.filename) and \
        _hypersparses(raised.filename) and (raised.line or "").lstrip().startswith("raise ")


@contextlib.contextmanager
def user_code(what: str) -> Iterator[None]:
    """Run the user's code: an exception from it (not a UserError) becomes :class:`UserCodeError` naming ``what``,
    unless hypersparse's own code, which theirs called, failed (not a refusal of what they passed): that stays our
    traceback."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - their code may raise anything; we report it, not crash on it
        pairs = _frames(exc)
        frames = [f for f, _ in pairs]
        registrars = UserCode(packages=frozenset().union(*_REGISTRARS.values()))
        theirs = [i for i, (f, module) in enumerate(pairs) if _users(f.filename, module, registrars)]
        if theirs and not _failed_in_theirs(exc, frames, theirs[-1]):
            raise  # hypersparse's own code failed under theirs (a builder calling our API, say): our bug
        if not theirs and frames and _hypersparses(frames[-1].filename):
            raise  # no code of theirs ran, and ours raised (a built-in builder registered under their name)
        raise UserCodeError(what, exc) from exc


@contextlib.contextmanager
def typed_names_from(folder: str) -> Iterator[None]:
    """While active, module names the user typed are also looked up in ``folder`` (the command line's current
    folder, as for ``python -m``); it is on ``sys.path`` only during each such import."""
    token = _typed_folder.set(folder)
    try:
        yield
    finally:
        _typed_folder.reset(token)


def names_code(key: str, value: Any) -> bool:
    """Whether setting ``key`` (``run.plugin``, ``model.model``, ``data.dataset``) with ``value`` names code."""
    if not isinstance(value, str) or not value or key not in CODE_FLAGS:
        return False
    if key == "run.plugin":
        return True
    prefix, sep, _ = value.partition(":")
    return bool(sep) and prefix not in NOT_CODE[key]


def code_settings(settings: dict) -> dict[str, str]:
    """``{setting: value}`` for each setting of a config (as ``config.json`` holds it) that names code."""
    found = {}
    for key in CODE_FLAGS:
        section, name = key.split(".")
        value = (settings.get(section) or {}).get(name) if isinstance(settings.get(section), dict) else None
        if names_code(key, value):
            found[key] = value
    return found


def trust_line(needed: dict[str, str], source: str, api: bool = False) -> str:
    """``<source> needs --plugin mine; pass it if you trust it`` (or, for the API, which argument to pass)."""
    shown = " and ".join(f"{CODE_FLAGS[k]} {v}" for k, v in needed.items())
    if api:
        return f"{source} names code ({shown}); pass the model yourself, or trust_code=True if you trust the file"
    it = "it" if len(needed) == 1 else "them"
    return f"{source} needs {shown}; pass {it} if you trust {it} (hypersparse imports no code a file names)"


def require_typed(cfg, typed: set[str] | frozenset, source: str) -> None:
    """UserError unless every setting of ``cfg`` (a TrainConfig) that names code was typed (``typed``: keys)."""
    needed = {k: v for k, v in code_settings(cfg.to_dict()).items() if k not in typed}
    if needed:
        raise UserError(trust_line(needed, source))


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
    """Import ``name`` (a name the user typed or passed), or UserError; its own errors become UserCodeError."""
    if name.startswith("."):  # importlib needs a package to resolve it against: a TypeError that is not theirs
        raise UserError(f"{flag} {name}: a relative module name; give its full dotted name (package.module)")
    folder = _typed_folder.get()
    added = folder is not None and folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(name)
        if getattr(module, "__file__", None):  # (a namespace package has no file of its own)
            _TYPED_FILES.add(os.path.realpath(module.__file__))
        return module
    except ImportError as exc:
        raise UserError(f"{flag} {name}: cannot import it ({exc}); is it on PYTHONPATH or installed?") from None
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a syntax error in their module, or its import-time code raising
        raise UserCodeError(f"your module {name} ({flag} {name})", exc) from exc
    finally:
        if added:
            sys.path.remove(folder)


def load_plugins(modules: str | None) -> None:
    """Import the comma-separated plugin modules of ``--plugin``."""
    for name in (m.strip() for m in (modules or "").split(",")):
        if name:
            import_module(name, "--plugin")


def load_entry_points() -> bool:
    """Import every installed ``hypersparse.plugins`` entry point once (one naming a function is called: it
    registers); True if this call imported any."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return False
    _entry_points_loaded = True
    found = list(entry_points(group=GROUP))
    for ep in found:
        try:
            loaded = ep.load()
            if inspect.isfunction(loaded):
                loaded()
        except Exception as exc:  # a broken third-party plugin: name it, do not crash on someone else's bug
            raise UserError(f"plugin {ep.name} ({ep.value}) of entry-point group {GROUP} failed to import: {exc}") \
                from None
    return bool(found)
