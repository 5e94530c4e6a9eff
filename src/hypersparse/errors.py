"""Errors the command line turns into one line on stderr and an exit code."""
from __future__ import annotations

import functools
import warnings


class UserError(Exception):
    """Bad input the user can fix (exit code 2); the message says how."""


class DataError(UserError):
    """A data file is missing, truncated or corrupt."""


class RunDiverged(Exception):
    """Training produced a non-finite loss (exit code 1)."""


class RunStopped(Exception):
    """Ctrl-C or SIGTERM stopped a command; ``code`` is 130 or 143 and the message says how to continue."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be so that both stop a run the same clean way."""


def did_you_mean(name: object, choices) -> str:
    """`` (did you mean 'lenet300'?)`` for the closest of ``choices`` to a mistyped ``name``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_ours(obj: object) -> bool:
    """Whether ``obj`` (a function or class) is defined in hypersparse itself, by its module's name."""
    module = getattr(obj, "__module__", None)
    return isinstance(module, str) and (module == "hypersparse" or module.startswith("hypersparse."))


def refuse_builtin_override(kind: str, name: str, old: object, new: object) -> None:
    """A plugin may add a method, model, dataset or export format, but not replace a built-in one: its runs would go
    by the built-in's name. ValueError if ``old`` (what ``name`` holds now) is hypersparse's and ``new`` is not; a
    warning if ``new`` is other code than ``old`` (two plugins chose one name), not if it is the same code again."""
    if old is not None and old is not new and is_ours(old) and not is_ours(new):
        raise ValueError(f"{kind} {name!r} is built into hypersparse; register yours under another name")
    if old is not None and not _same_code(old, new):  # two plugins' names clash; the same code run again does not
        warnings.warn(f"{kind} {name!r} was registered by {_where(old)}; {_where(new)} replaces it", stacklevel=3)


def _where(obj: object) -> str:
    if isinstance(obj, functools.partial):
        return f"functools.partial({_where(obj.func)}, ...)"
    return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', None) or type(obj).__name__}"


def _same_code(a: object, b: object) -> bool:
    """Whether ``b`` is ``a`` defined again (a notebook cell or a module run twice): the same function by name, body,
    defaults and closed-over values, or a partial of such with equal arguments. Builders made by one factory with
    other values, or two partials of other arguments, are different code."""
    if a is b:
        return True
    try:
        if isinstance(a, functools.partial) and isinstance(b, functools.partial):
            return _same_code(a.func, b.func) and bool(a.args == b.args) and bool(a.keywords == b.keywords)
        ca, cb = getattr(a, "__code__", None), getattr(b, "__code__", None)
        if ca is None or cb is None or _where(a) != _where(b):
            return False
        cells = [tuple(c.cell_contents for c in f.__closure__ or ()) for f in (a, b)]
        return (ca.co_code, ca.co_consts) == (cb.co_code, cb.co_consts) and bool(cells[0] == cells[1]) \
            and bool(a.__defaults__ == b.__defaults__)
    except Exception:  # noqa: BLE001 - values whose comparison raises (tensors, say) are taken as different
        return False


def first_line(exc: BaseException, limit: int | None = 160, last: bool = False) -> str:
    """The first (or ``last``) non-empty line of an exception's message (and the next, where the first ends in a
    colon), cut to ``limit`` characters (None: whole); the exception's type name when the message is empty. For
    quoting a library's error in our one-line messages."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if last else lines[0]
    if not last and line.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for MLP:" introduces
        line = f"{line} {lines[1]}"  # the line that says what is wrong
    return line if limit is None or len(line) <= limit else line[:limit - 1] + "…"


def shown(text: str) -> str:
    """``text`` safe to print as one line: control characters (a newline, a terminal's escape sequence in a file
    name) and undecodable bytes as backslash escapes, so a name cannot break the line or drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
