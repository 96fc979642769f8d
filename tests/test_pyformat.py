"""generator/pyformat.py: ruff format results cached per file by content (issue 13 item 4)."""

from __future__ import annotations

from generator import pyformat

CONFIG = "line-length = 40\n"
SOURCE = "def f(a,b):\n    return {'a':a,'b':b, 'c': [a,b,a,b,a,b,a,b]}\n"


def test_cached_results_match_ruff_and_only_new_sources_run(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = pyformat.format_sources({"m.py": SOURCE}, CONFIG)
    assert first["m.py"] != SOURCE and "'a'" not in first["m.py"]  # ruff ran: wrapped, double quotes
    cached = list((tmp_path / "scaffold" / "ruff").glob("*.py"))
    assert len(cached) == 1

    ran = []
    real = pyformat._format
    monkeypatch.setattr(pyformat, "_format", lambda ruff, files, config: ran.append(set(files)) or real(ruff, files, config))
    again = pyformat.format_sources({"m.py": SOURCE, "n.py": "x=1\n"}, CONFIG)
    assert again == {"m.py": first["m.py"], "n.py": "x = 1\n"}
    assert ran == [{"n.py"}]  # m.py came from the cache
    other = pyformat.format_sources({"m.py": SOURCE}, "line-length = 120\n")  # another config: not a hit
    assert other["m.py"] != first["m.py"] and len(ran) == 2


def test_invalid_python_is_kept_as_rendered_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    bad = {"bad.py": "def (:\n"}
    assert pyformat.format_sources(bad, CONFIG) == bad
    assert not list((tmp_path / "scaffold" / "ruff").glob("*.py"))
