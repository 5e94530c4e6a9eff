"""The C kernel's cache: only a library this user built, unchanged, is ever loaded; anything else is rebuilt or
refused."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from hypersparse import native
from hypersparse.inference import sparse_inference

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc").split()[0]) is None,
                                reason="no C compiler")

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) { FILE *f = fopen("%s", "w"); if (f) fclose(f); }
int hs_chain_forward(void) { return 7; }
"""


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache and a module that has loaded nothing yet."""
    monkeypatch.setenv("HYPERSPARSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_error", None)
    return tmp_path / "cache"


def _in_new_process(cache) -> str:
    """What a fresh process (one that has loaded no library yet) says about the kernel, after a real call."""
    code = ("from hypersparse import native; import torch\n"
            "from hypersparse.inference import CompactMLP, find_chains\n"
            "m = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))\n"
            "why = native.unavailable()\n"
            "if why is None:\n"
            "    x = torch.randn(4, 5)\n"
            "    with torch.no_grad():\n"
            "        y = CompactMLP(find_chains(m)[0]['layers'], kernel='native')(x)\n"
            "        ok = torch.allclose(y, m(x), atol=1e-6)\n"
            "    why = 'works' if ok else 'wrong outputs'\n"
            "print(why)")
    env = dict(os.environ, HYPERSPARSE_CACHE=str(cache))
    env.pop("CC", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _replace(path, data: bytes) -> None:
    """New bytes under ``path`` as a new file (as an attacker's rename would): a loaded library keeps its pages."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _compile(tmp_path, source: str, name: str):
    (tmp_path / f"{name}.c").write_text(source)
    subprocess.run(["cc", "-shared", "-fPIC", str(tmp_path / f"{name}.c"), "-o", str(tmp_path / f"{name}.so")],
                   check=True)
    return tmp_path / f"{name}.so"


def _one(cache, pattern):
    found = sorted(cache.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_the_cache_is_private_and_the_library_checked(fresh):
    assert _in_new_process(fresh) == "works"
    assert (fresh.stat().st_mode & 0o777) == 0o700
    assert native._verified(_one(fresh, "chain-*.sha256")) is not None


def test_a_planted_library_is_never_loaded(fresh, tmp_path):
    assert _in_new_process(fresh) == "works"  # learn the names this machine uses
    record, built = _one(fresh, "chain-*.sha256"), _one(fresh, "chain-*.so")
    marker = tmp_path / "constructor-ran"
    _replace(built, _compile(tmp_path, PLANTED % marker, "evil").read_bytes())  # planted under the real name
    assert _in_new_process(fresh) == "works"
    assert not marker.exists()
    assert native._verified(record) is not None  # built again over it


def test_a_cache_others_can_write_or_own_is_refused(fresh, monkeypatch):
    fresh.mkdir(mode=0o777)
    fresh.chmod(0o777)
    assert "writable by others" in native.unavailable()
    if os.getuid() == 0:  # only root can hand a folder to someone else
        monkeypatch.setattr(native, "_error", None)
        fresh.chmod(0o700)
        os.chown(fresh, 12345, -1)
        assert "belongs to another user" in native.unavailable()


def test_corrupt_and_symbol_less_libraries_are_rebuilt(fresh, tmp_path):
    assert _in_new_process(fresh) == "works"
    record = _one(fresh, "chain-*.sha256")
    _replace(native._verified(record), b"\x7fELF garbage")  # corrupt: the digest no longer matches
    assert _in_new_process(fresh) == "works"
    # a library without the symbol whose digest *is* recorded (a broken build): loaded, found lacking, rebuilt
    hollow = _compile(tmp_path, "int nothing_here(void) { return 0; }\n", "hollow")
    digest = native._sha256(hollow)
    shutil.copy(hollow, fresh / f"{record.stem}-{digest[:16]}.so")
    record.write_text(digest + "\n")
    assert _in_new_process(fresh) == "works"
    assert native._sha256(native._verified(record)) != digest


@pytest.mark.parametrize("which", ["record", "library"])
def test_a_fifo_in_the_cache_is_rebuilt_over_not_waited_on(fresh, which):
    """Trial 31h H1: a FIFO in place of the digest record (or the library) blocked eval --fast and train forever,
    before either printed a thing: the open waited for a writer."""
    assert _in_new_process(fresh) == "works"
    record = _one(fresh, "chain-*.sha256")
    target = record if which == "record" else native._verified(record)
    target.unlink()
    os.mkfifo(target)
    assert _in_new_process(fresh) == "works"  # within the helper's timeout, not blocked


def test_cc_with_arguments_is_split_like_a_shell(fresh, monkeypatch):
    monkeypatch.setenv("CC", "env cc")  # as CC="ccache gcc" would be
    assert native.unavailable() is None


def test_without_the_kernel_sparse_inference_says_why_once(fresh, monkeypatch):
    monkeypatch.setenv("CC", "/no/such/cc")
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 4))
    x = torch.randn(1, 20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sparse_inference(model, x, reps=2)
        sparse_inference(model, x, reps=2)
    said = [w for w in caught if "PyTorch kernels only" in str(w.message)]
    assert len(said) == 1 and "/no/such/cc" in str(said[0].message)


def test_a_compiler_that_fails_is_one_warning_line_on_the_command_line(finished_run, tmp_path):
    """Trial 31e F007/R005: a full or read-only cache disk printed a raw RuntimeWarning: a site-packages path, then
    the linker's whole output. The command line says it in one line, with the compiler's verdict."""
    fake = tmp_path / "cc"
    fake.write_text("#!/bin/sh\necho 'collect2: note: many words' >&2\n"
                    "echo '/usr/bin/ld: final link failed: No space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = dict(os.environ, HYPERSPARSE_CACHE=str(tmp_path / "cache"), CC=str(fake))
    done = subprocess.run([sys.executable, "-m", "hypersparse", "eval", str(finished_run), "--fast", "2"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "C kernel is unavailable" in line]
    assert len(said) == 1 and said[0].startswith("hypersparse: warning: "), done.stderr
    assert "final link failed: No space left on device" in said[0] and "many words" not in said[0]
    assert ".py:" not in done.stderr and "Warning" not in done.stderr, done.stderr


def test_a_build_folder_a_stopped_process_left_is_removed_by_the_next_build(fresh, tmp_path):
    """Trial 31f S226: SIGTERM during the kernel's build ends the command at once and left its build folder (chain.c,
    chain.so) in the cache for good. The build folder is a registered temporary now: the next build removes it."""
    assert native.unavailable() is None  # the cache exists: built once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a process id that is no longer running
    left = fresh / f".hypersparse-{dead}-0123456789ab.build.tmp"
    left.mkdir()
    (left / "chain.c").write_text("int x;")
    mine = fresh / ".my.notes.tmp"
    mine.write_text("the user's")
    for f in fresh.glob("chain-*"):
        f.unlink()  # the next call builds again
    native._lib = None
    assert native.unavailable() is None and native.chain_kernel() is not None
    assert not left.exists() and mine.read_text() == "the user's"


def test_a_cache_path_that_is_a_file_is_named_as_such(fresh):
    """Trial 31k C046: HYPERSPARSE_CACHE naming a regular file gave "[Errno 17] File exists"."""
    fresh.write_text("mine\n")
    why = native.unavailable()
    assert why is not None and "is not a folder; point HYPERSPARSE_CACHE at a folder" in why
    assert fresh.read_text() == "mine\n"


def test_a_cache_path_that_is_a_dangling_link_is_named_as_such(fresh, tmp_path):
    """Trial 31m C171: HYPERSPARSE_CACHE a link to nothing gave "[Errno 17] File exists"; nothing is made there."""
    fresh.symlink_to(tmp_path / "nowhere")
    why = native.unavailable()
    assert why is not None and "is a symbolic link to" in why and "which does not exist" in why
    assert not (tmp_path / "nowhere").exists()


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path):
    """Trial 31k E007: a relative XDG_CACHE_HOME put the cache under the current folder; the XDG spec says such a
    value is invalid and is ignored."""
    monkeypatch.delenv("HYPERSPARSE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert native._cache_dir() == tmp_path / ".cache" / "hypersparse"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native._cache_dir() == tmp_path / "xdg" / "hypersparse"
