"""generator/protoc_cache.py: protoc's results cached per user, ccache-style (issue 13 item 4).

Real protoc runs throughout; ``runs`` counts them by wrapping generator.protoc._run (the real
one still runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generator import protoc, protoc_cache
from generator.errors import ProtoError

MAIN = 'syntax = "proto3";\npackage m;\nimport "dep/dep.proto";\nmessage Main { dep.Dep dep = 1; }\n'
DEP = 'syntax = "proto3";\npackage dep;\nmessage Dep { string a = 1; }\n'


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "scaffold" / "protoc"


@pytest.fixture
def runs(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = protoc._run

    def counting(args, cwd=None):
        calls.append(args)
        return real(args, cwd)

    monkeypatch.setattr(protoc, "_run", counting)
    return calls


def tree(tmp_path: Path) -> protoc.Source:
    """main.proto importing dep/dep.proto, under include roots ``tmp_path/a`` (main) and ``tmp_path/b``."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "main.proto").write_text(MAIN)
    (tmp_path / "b" / "dep").mkdir(parents=True)
    (tmp_path / "b" / "dep" / "dep.proto").write_text(DEP)
    return protoc.source_for([tmp_path / "a" / "main.proto"], [tmp_path / "a", tmp_path / "b"])


def fields(result: protoc.Compiled, message: str) -> list[str]:
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(result.descriptors)
    return [f.name for fd in fds.file for m in fd.message_type if m.name == message for f in m.field]


def entries(cache: Path) -> list[Path]:
    return [p for p in cache.glob("*/*") if p.name != "manifest.json"]


def test_a_second_run_is_served_from_the_cache_with_the_same_bytes(tmp_path, cache, runs):
    source = tree(tmp_path)
    first = protoc.compile_source(source, files=("main.proto", "dep/dep.proto"))
    assert len(runs) == 1 and set(first.stubs) >= {"main_pb2.py", "main_pb2.pyi", "main_pb2_grpc.py", "dep/dep_pb2.py"}
    again = protoc.compile_source(source, files=("main.proto", "dep/dep.proto"))
    assert len(runs) == 1 and again == first
    manifest = json.loads(next(cache.glob("*/manifest.json")).read_text())
    assert set(manifest[0]["files"]) == {"main.proto", "dep/dep.proto"}
    # Other outputs are other keys: the descriptor set alone, or stubs of main.proto only.
    only_set = protoc.compile_source(source, stubs=False)
    assert len(runs) == 2 and only_set.stubs == {} and only_set.descriptors == first.descriptors


def test_an_edited_import_misses_and_the_result_reflects_the_edit(tmp_path, cache, runs):
    source = tree(tmp_path)
    assert fields(protoc.compile_source(source), "Dep") == ["a"]
    (tmp_path / "b" / "dep" / "dep.proto").write_text(DEP.replace("string a = 1;", "string a = 1; int32 b = 2;"))
    edited = protoc.compile_source(source)
    assert len(runs) == 2 and fields(edited, "Dep") == ["a", "b"]
    (tmp_path / "b" / "dep" / "dep.proto").write_text(DEP)  # back as it was: the first result serves again
    assert fields(protoc.compile_source(source), "Dep") == ["a"] and len(runs) == 2


def test_an_import_shadowed_by_an_earlier_include_root_misses(tmp_path, cache, runs):
    source = tree(tmp_path)
    protoc.compile_source(source)
    (tmp_path / "a" / "dep").mkdir()
    (tmp_path / "a" / "dep" / "dep.proto").write_text(DEP.replace("string a = 1;", "string shadow = 1;"))
    assert fields(protoc.compile_source(source), "Dep") == ["shadow"] and len(runs) == 2


def test_an_edited_main_file_misses(tmp_path, cache, runs):
    source = tree(tmp_path)
    protoc.compile_source(source)
    (tmp_path / "a" / "main.proto").write_text(MAIN.replace("dep.Dep dep = 1;", "dep.Dep dep = 1; bool ok = 2;"))
    assert fields(protoc.compile_source(source), "Main") == ["dep", "ok"] and len(runs) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "delete"])
def test_a_corrupted_or_partial_result_is_ignored_and_rewritten(tmp_path, cache, runs, damage):
    source = tree(tmp_path)
    first = protoc.compile_source(source)
    [entry] = entries(cache)
    data = entry.read_bytes()
    if damage == "flip":
        entry.write_bytes(data[:-10] + bytes(b ^ 0xFF for b in data[-10:]))
    elif damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        entry.unlink()
    assert protoc.compile_source(source) == first and len(runs) == 2
    assert entry.read_bytes() == data  # rewritten whole
    assert protoc.compile_source(source) == first and len(runs) == 2


@pytest.mark.parametrize("manifest", [b"", b"{not json", b'{"a": 1}', b'[{"files": {"main.proto": "x"}, "result": "y"}]'])
def test_a_damaged_manifest_is_a_miss_and_is_rewritten(tmp_path, cache, runs, manifest):
    source = tree(tmp_path)
    first = protoc.compile_source(source)
    [path] = cache.glob("*/manifest.json")
    path.write_bytes(manifest)
    assert protoc.compile_source(source) == first and len(runs) == 2
    assert protoc.compile_source(source) == first and len(runs) == 2  # the rewritten manifest serves


def test_a_file_changed_while_protoc_ran_is_not_cached(tmp_path, cache, monkeypatch):
    source = tree(tmp_path)
    real = protoc._run

    def edit_during_the_run(args, cwd=None):
        result = real(args, cwd)
        (tmp_path / "b" / "dep" / "dep.proto").write_text(DEP.replace("string a = 1;", "string later = 1;"))
        return result

    monkeypatch.setattr(protoc, "_run", edit_during_the_run)
    assert fields(protoc.compile_source(source), "Dep") == ["a"]
    assert entries(cache) == []  # its result describes a file that no longer reads the same
    monkeypatch.setattr(protoc, "_run", real)
    assert fields(protoc.compile_source(source), "Dep") == ["later"]


def test_protoc_errors_are_not_cached(tmp_path, cache, runs):
    source = tree(tmp_path)
    (tmp_path / "b" / "dep" / "dep.proto").write_text(DEP.replace("string a = 1;", "strin a = 1;"))
    for attempt in (1, 2):
        with pytest.raises(ProtoError, match="dep.proto:3"):
            protoc.compile_source(source)
        assert len(runs) == attempt
    assert entries(cache) == []


def test_an_unusable_cache_folder_means_no_cache(tmp_path, monkeypatch, runs):
    source = tree(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be\n")
    expected = protoc.compile_source(source)  # the user's real cache: whatever it holds
    for home in (str(blocker), "/proc/self"):  # a file in the way; a filesystem nobody writes
        monkeypatch.setenv("XDG_CACHE_HOME", home)
        before = len(runs)
        assert protoc.compile_source(source) == expected and len(runs) == before + 1
    assert blocker.read_text() == "a file where the cache folder would be\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_means_no_cache(tmp_path, cache, runs):
    source = tree(tmp_path)
    first = protoc.compile_source(source)
    for p in [cache, *cache.rglob("*")]:
        p.chmod(0o500 if p.is_dir() else 0o400)
    try:
        (tmp_path / "b" / "dep" / "dep.proto").write_text(DEP.replace("string a = 1;", "string b = 1;"))
        assert fields(protoc.compile_source(source), "Dep") == ["b"]
        assert protoc.compile_source(source) != first and len(runs) == 3
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(0o700)


def test_a_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch, runs):
    source = tree(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative-cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    protoc.compile_source(source)
    assert not (tmp_path / "relative-cache").exists()
    assert list((tmp_path / "home" / ".cache" / "scaffold" / "protoc").glob("*/manifest.json"))


def test_least_recently_used_keys_are_dropped(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(protoc_cache, "MAX_KEYS", 2)
    source = tree(tmp_path)
    for i in range(4):
        (tmp_path / "a" / "main.proto").write_text(MAIN + f"message Extra{i} {{}}\n")
        protoc.compile_source(source)
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_pack_round_trip_and_rejects_unsafe_names():
    blob = protoc_cache._pack({"a/b_pb2.py": b"x", "c.pyi": b""}, b"set")
    assert protoc_cache._unpack(blob) == ({"a/b_pb2.py": b"x", "c.pyi": b""}, b"set")
    for bad in ("../evil.py", "/abs.py", "a/../../b.py"):
        assert protoc_cache._unpack(protoc_cache._pack({bad: b"x"}, b"set")) is None


CREATE = """
import sys
from generator.cli import run
sys.exit(run(["neuron", "create", "xmpl.br.resources-books-v1", "--out", sys.argv[1]]))
"""


def test_concurrent_creates_share_the_cache_and_agree(workspace, scaffold, tmp_path):
    """Two `scaffold neuron create` at once with an empty cache, then again with a full one:
    the second round's neurons are byte for byte the first's, and both caches hold whole entries."""
    import shutil

    assert scaffold("proto", "create", "xmpl.br.resources-books-v1").code == 0
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    rounds = []
    for _ in range(2):
        shutil.rmtree(workspace / "neurons", ignore_errors=True)
        procs = [subprocess.Popen([sys.executable, "-c", CREATE, f"n{i}"], cwd=workspace, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0, out
        root = workspace / "neurons"
        rounds.append({p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()})
    assert len(rounds[0]) > 40 and rounds[1] == rounds[0]
    stubs = [{k.split("/", 1)[1]: v for k, v in rounds[0].items() if k.startswith(f"n{i}/protobuf/")} for i in (0, 1)]
    assert stubs[0] and stubs[0] == stubs[1]
    protoc_root = tmp_path / "cache" / "scaffold" / "protoc"
    [manifest] = protoc_root.glob("*/manifest.json")
    [entry] = json.loads(manifest.read_text())
    assert (manifest.parent / entry["result"]).is_file()
    assert len(list((tmp_path / "cache" / "scaffold" / "render").iterdir())) == 2  # one per folder name
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # no temporary file left behind


def test_editing_an_imported_proto_reaches_the_neuron_on_update(workspace, scaffold, tmp_path, monkeypatch):
    """Through the CLI: a neuron's stubs of a local import follow that import's edit."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    common = workspace / "proto" / "xmpl" / "br" / "common" / "v1"
    common.mkdir(parents=True)
    (common / "common.proto").write_text('syntax = "proto3";\npackage xmpl.br.common.v1;\nmessage Tag { string key = 1; }\n')
    assert scaffold("proto", "create", "xmpl.br.resources-books-v1").code == 0
    books = workspace / "proto" / "xmpl" / "br" / "resources" / "books" / "v1" / "books.proto"
    text = books.read_text()
    books.write_text(text.replace('import "google/api/annotations.proto";',
                                  'import "google/api/annotations.proto";\nimport "xmpl/br/common/v1/common.proto";', 1))
    r = scaffold("neuron", "create", "xmpl.br.resources-books-v1")
    assert r.code == 0, r.output
    stub = next((workspace / "neurons").glob("*/protobuf/xmpl/br/common/v1/common_pb2.pyi"))
    assert "value" not in stub.read_text()
    (common / "common.proto").write_text((common / "common.proto").read_text().replace(
        "string key = 1;", "string key = 1; string value = 2;"))
    r = scaffold("neuron", "update", "xmpl.br.resources-books-v1")
    assert r.code == 0, r.output
    assert "value" in stub.read_text()
