"""generator/render_cache.py: a neuron's rendered files kept per user (issue 13 item 4)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from generator import render, render_cache

BOOKS = "xmpl.br.resources-books-v1"
PROBE = """
import sys
from generator.cli import run
code = run(sys.argv[1:])
print("jinja2" in sys.modules, "inflect" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


def run_cli(ws: Path, cache: str, *args: str) -> tuple[bool, bool]:
    """Run the CLI in a fresh process with ``cache`` as XDG_CACHE_HOME; whether it imported Jinja2 and inflect."""
    env = {**os.environ, "XDG_CACHE_HOME": cache}
    r = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ws, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    jinja, inflect = r.stderr.split()[-2:]
    return jinja == "True", inflect == "True"


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make(ws: Path, cache: str) -> tuple[dict[str, bytes], tuple[bool, bool]]:
    """A fresh neuron from the Books proto: its files, and whether Jinja2 and inflect were imported."""
    shutil.rmtree(ws / "neurons", ignore_errors=True)
    imported = run_cli(ws, cache, "neuron", "create", BOOKS)
    return tree(ws / "neurons"), imported


def test_a_cached_rendering_is_the_same_neuron_without_jinja(workspace, scaffold, tmp_path):
    assert scaffold("proto", "create", BOOKS).code == 0
    blocker = tmp_path / "file"
    blocker.write_text("no cache can live here\n")
    uncached, imported = make(workspace, str(blocker))
    assert imported == (True, True) and blocker.read_text() == "no cache can live here\n"
    cache = str(tmp_path / "cache")
    first, imported = make(workspace, cache)
    assert first == uncached and imported == (True, True)
    [entry] = (tmp_path / "cache" / "scaffold" / "render").iterdir()
    again, imported = make(workspace, cache)
    assert again == uncached and imported == (False, False)  # rendered from the cache entry

    for damage in (b"", entry.read_bytes()[:-100], b"0" * 64 + b"\n[]", entry.read_bytes().replace(b"server", b"servir")):
        entry.write_bytes(damage)
        damaged, imported = make(workspace, cache)
        assert damaged == uncached and imported[0]  # ignored: rendered again
        assert make(workspace, cache) == (uncached, (False, False))  # and rewritten whole


def test_an_edited_proto_renders_again(workspace, scaffold, tmp_path):
    assert scaffold("proto", "create", BOOKS).code == 0
    cache = str(tmp_path / "cache")
    first, _ = make(workspace, cache)
    proto = workspace / "proto/xmpl/br/resources/books/v1/books.proto"
    text = proto.read_text()
    proto.write_text(text.replace("service BooksService {", "service BooksService {\n  // Says hello.\n"
                                  "  rpc Greet(google.protobuf.Empty) returns (google.protobuf.Empty);", 1))
    edited, imported = make(workspace, cache)
    assert imported[0] and edited != first
    assert "def Greet" in edited["resources-books-v1/base.py"].decode()
    assert "Greet" not in first["resources-books-v1/base.py"].decode()
    proto.write_text(text)  # back as it was: the first entry serves again
    assert make(workspace, cache) == (first, (False, False))


def test_the_key_follows_templates_code_and_inputs(workspace, scaffold, tmp_path, monkeypatch):
    """Any template or scaffold module touched, another input: another key."""
    from generator import neuron, proto
    from generator import workspace as wsmod
    from generator.runtime_dist import wheel

    assert scaffold("proto", "create", BOOKS).code == 0
    ws = wsmod.find()
    api, _stubs = neuron.compile_all(proto.resolve(ws, BOOKS, None, None))
    model = neuron.build(api, "resources-books-v1", "Books")
    runtime = wheel()
    copy = tmp_path / "templates"
    shutil.copytree(render.template_root(), copy)
    monkeypatch.setattr(render, "template_root", lambda: copy)
    key = render_cache._key((model, api, "", None), runtime)
    assert key == render_cache._key((model, api, "", None), runtime)
    assert key != render_cache._key((model, api, "https://index.example/simple", None), runtime)
    from dataclasses import replace

    assert key != render_cache._key((replace(model, title="Other"), api, "", None), runtime)
    template = copy / "neuron" / "server.py.j2"
    template.write_text(template.read_text() + "# one more line\n")
    assert render_cache._key((model, api, "", None), runtime) != key
    module = tmp_path / "generator"
    shutil.copytree(Path(render_cache.__file__).parent, module, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(render_cache, "__file__", str(module / "render_cache.py"))
    before = render_cache._key((model, api, "", None), runtime)
    os.utime(module / "openapi.py", ns=(1, 1))  # as if edited
    assert render_cache._key((model, api, "", None), runtime) != before


def test_least_recently_used_entries_are_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(render_cache, "MAX_ENTRIES", 2)
    from generator.runtime_dist import wheel
    from generator.writer import FileOwner, Plan

    def one(text: str) -> Plan:
        p = Plan()
        p.add("a.txt", text, FileOwner.GENERATED)
        return p

    for i in range(4):
        assert render_cache.rendered((f"input {i}",), wheel(), lambda i=i: one(f"text {i}")).files[0].content == f"text {i}"
    assert len(list((tmp_path / "scaffold" / "render").iterdir())) == 2


def test_an_entry_naming_a_path_outside_the_neuron_is_a_miss(tmp_path):
    import hashlib
    import json

    from generator.runtime_dist import wheel

    for files in ([["../escape.py", "generated", False, False, False, "x"]], [["a", "nobody", False, False, False, "x"]],
                  [["a"]], [[1, "generated", False, False, False, "x"]], {"a": 1}):
        body = json.dumps(files).encode()
        assert render_cache._load(hashlib.sha256(body).hexdigest().encode() + b"\n" + body, wheel()) is None
    body = json.dumps([["ok.txt", "generated", False, False, False, "x"]]).encode()
    assert render_cache._load(hashlib.sha256(body).hexdigest().encode() + b"\n" + body, wheel()).files[0].content == "x"


def test_the_neurons_own_files_are_inputs_too(workspace, scaffold, tmp_path):
    """indexes.toml and methods.py feed the rendering besides the proto: an edit renders again,
    and the cached result is what an uncached run writes."""
    assert scaffold("proto", "create", BOOKS).code == 0
    cache = str(tmp_path / "cache")
    blocker = tmp_path / "file"
    blocker.write_text("no cache can live here\n")
    first, _ = make(workspace, cache)
    root = workspace / "neurons" / "resources-books-v1"
    (root / "indexes.toml").write_text('[[index]]\ncollection = "books"\nfields = [["author", "ASCENDING"], '
                                       '["create_time", "DESCENDING"]]\n')
    assert run_cli(workspace, cache, "neuron", "update", BOOKS)[0]  # rendered again
    indexes_tf = (root / "terraform" / "indexes.tf").read_text()
    assert "author" in indexes_tf and indexes_tf.encode() != first["resources-books-v1/terraform/indexes.tf"]
    cached = tree(workspace / "neurons")
    run_cli(workspace, str(blocker), "neuron", "update", BOOKS)  # no cache: the same files, nothing to change
    assert tree(workspace / "neurons") == cached
    run_cli(workspace, cache, "neuron", "update", BOOKS)  # from the cache entry
    assert tree(workspace / "neurons") == cached
