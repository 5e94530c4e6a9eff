"""The one-line messages quote a library's error by its first line: an empty message must not break them."""
from hypersparse.errors import first_line


def test_first_line_of_an_empty_message_is_the_type_name():
    assert first_line(OSError()) == "OSError"
    assert first_line(ValueError("  \n ")) == "ValueError"


def test_first_line_skips_blank_lines_and_cuts_with_a_mark():
    exc = RuntimeError("\n  first  \nsecond\n\nlast\n")
    assert first_line(exc) == "first"
    assert first_line(exc, last=True) == "last"
    long = ValueError("x" * 500)
    assert first_line(long, 20) == "x" * 19 + "…"
    assert first_line(long, None) == "x" * 500


def test_a_failed_path_the_environment_chose_names_the_setting(monkeypatch):
    """Trial 31e E032: TORCHINDUCTOR_CACHE_DIR=/dev/null ended in "File exists (/dev/null)", naming no setting."""
    from hypersparse.cli import _os_error

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/dev/null")
    line = _os_error(FileExistsError(17, "File exists", "/dev/null/fxgraph"))
    assert "under TORCHINDUCTOR_CACHE_DIR=/dev/null" in line
    assert "under" not in _os_error(FileExistsError(17, "File exists", "/home/me/run"))
