"""`scaffold proto release`: versioned stub packages on a real package index (pypiserver).

The index (tests/release_support.py) runs on 127.0.0.1; uploads need credentials. A released
package is installed into a fresh virtual environment and used to call a running Books neuron.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import venv
import zipfile

import pytest

from generator import protoc, release
from generator.workspace import find
from tests.helpers import ServerProcess, free_port
from tests.release_support import BOOKS, DIST, PROTO, USER, edit, log

pytest_plugins = ["tests.release_support"]  # fixtures: index, credentials, books

@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "01.0.0", "1.0.0-rc1", "1.0.0 "])
def test_bad_version_is_refused_and_nothing_recorded(books, scaffold, version):
    r = scaffold("proto", "release", BOOKS, "--version", version, "--repository-url", "http://127.0.0.1:9/")
    assert r.code == 2
    assert "invalid --version" in r.err and "MAJOR.MINOR.PATCH" in r.err and "Traceback" not in r.output
    assert not (books / "releases").exists()


@pytest.mark.parametrize("url, says", [
    (None, "no package index to publish to"),
    ("ftp://example.com/", "expected http(s)://HOST/PATH"),
    ("https://user:pw@example.com/", "must not contain a user name or password"),
])
def test_bad_repository_url_is_refused(books, scaffold, url, says):
    r = scaffold("proto", "release", BOOKS, "--version", "1.0.0", *(["--repository-url", url] if url else []))
    assert r.code == 2 and says in r.err, r.output
    assert not (books / "releases").exists()


def test_unreachable_index_gives_one_message_and_records_nothing(books, scaffold, credentials):
    r = scaffold("proto", "release", BOOKS, "--version", "1.0.0", "--repository-url", f"http://127.0.0.1:{free_port()}/")
    assert r.code == 1
    assert "failed: cannot connect (Connection refused)" in r.err and "Traceback" not in r.output
    assert not (books / "releases").exists()


def test_missing_or_wrong_credentials_are_refused(books, scaffold, index, monkeypatch):
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    for var in ("TWINE_USERNAME", "TWINE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    r = scaffold("proto", "release", BOOKS, "--version", "1.0.0", "--repository-url", index.url)
    assert r.code == 1 and "Credential not found" in r.err and "TWINE_USERNAME" in r.err, r.output
    monkeypatch.setenv("TWINE_USERNAME", USER)
    monkeypatch.setenv("TWINE_PASSWORD", "wrong")
    r = scaffold("proto", "release", BOOKS, "--version", "1.0.0", "--repository-url", index.url)
    assert r.code == 1 and ("403" in r.err or "401" in r.err) and "TWINE_PASSWORD" in r.err, r.output
    assert index.files() == [] and not (books / "releases").exists()


def test_repository_url_comes_from_scaffold_toml(books, scaffold, index, credentials):
    toml = books / "scaffold.toml"
    toml.write_text(toml.read_text() + f'\n[release]\nrepository_url = "{index.url}"\n')
    r = scaffold("proto", "release", BOOKS, "--version", "0.1.0")
    assert r.code == 0, r.output
    assert index.files() == ["xmpl_br_resources_books_v1-0.1.0-py3-none-any.whl", "xmpl_br_resources_books_v1-0.1.0.tar.gz"]
    assert f"install: pip install --extra-index-url {index.url.rstrip('/')}/simple/ {DIST}==0.1.0" in r.out, r.out
    assert log(books) == [(DIST, "0.1.0")]
    assert (books / "releases" / DIST / "0.1.0.binpb").is_file()
    # The next release needs that baseline: without it, one message and nothing uploaded.
    (books / "releases" / DIST / "0.1.0.binpb").unlink()
    r = scaffold("proto", "release", BOOKS, "--version", "0.2.0")
    assert r.code == 1 and "descriptor set of release 0.1.0 is missing" in r.err, r.output
    assert len(index.files()) == 2 and log(books) == [(DIST, "0.1.0")]


def test_breaking_changes_need_a_major_bump(books, scaffold, index, credentials):
    def rel(version: str, *extra: str):
        return scaffold("proto", "release", BOOKS, "--version", version, "--repository-url", index.url, *extra)

    r = rel("1.0.0")
    assert r.code == 0 and "first release" in r.out, r.output
    # The same version again, or an older one: refused before anything is built.
    again = rel("1.0.0")
    assert again.code == 1 and "is already released" in again.err
    older = rel("0.9.0")
    assert older.code == 1 and "not greater than the last release" in older.err

    # A compatible change (a new field) is a minor release.
    edit(books, "  string description = 3", "  string subtitle = 9 [(google.api.field_behavior) = OPTIONAL];\n\n  string description = 3")
    r = rel("1.1.0")
    assert r.code == 0 and "checked against 1.0.0" in r.out and "breaking" not in r.out, r.output

    # A field's type changed: refused with buf's reason at the proto's file:line, nothing recorded.
    edit(books, "  string description = 3", "  int64 description = 3")
    r = rel("1.2.0")
    assert r.code == 1, r.output
    assert "breaks clients of 1.1.0" in r.err
    assert f'{PROTO}:' in r.err and 'changed type from "string" to "int64"' in r.err
    assert "2.0.0" in r.err and "--allow-breaking" in r.err
    assert log(books) == [(DIST, "1.0.0"), (DIST, "1.1.0")]
    assert not (books / "releases" / DIST / "1.2.0.binpb").exists()
    # ... and accepted with a major bump, which lists what broke.
    r = rel("2.0.0")
    assert r.code == 0 and "breaking" in r.out and "changed type" in r.out, r.output

    # A removed field: refused again within 2.x, forced with --allow-breaking.
    edit(books, "  string subtitle = 9 [(google.api.field_behavior) = OPTIONAL];\n", "")
    r = rel("2.1.0")
    assert r.code == 1 and 'Previously present field "9" with name "subtitle"' in r.err, r.output
    r = rel("2.1.0", "--allow-breaking")
    assert r.code == 0 and "subtitle" in r.out, r.output
    assert log(books) == [(DIST, v) for v in ("1.0.0", "1.1.0", "2.0.0", "2.1.0")]
    assert len(index.files()) == 8


def test_build_is_reproducible_installable_and_matches_hatchling(books, tmp_path):
    ws = find(books)
    source = protoc.source_for([books / PROTO], [], (ws.proto_root,))
    builds = []
    for i in range(2):
        pkg = release.package(DIST, "1.2.3", source, BOOKS)
        out = tmp_path / f"build{i}"
        out.mkdir()
        builds.append((release.build_wheel(pkg, out), release.build_sdist(pkg, out)))
    (w1, s1), (w2, s2) = builds
    assert w1.read_bytes() == w2.read_bytes() and s1.read_bytes() == s2.read_bytes()

    import google.protobuf
    import grpc

    names = zipfile.ZipFile(w1).namelist()
    stubs = "xmpl/br/resources/books/v1/"
    for f in ("books_pb2.py", "books_pb2_grpc.py", "books_pb2.pyi", "py.typed", "__init__.py"):
        assert stubs + f in names
    assert "xmpl/__init__.py" not in names  # namespace: releases of one org install side by side
    meta = zipfile.ZipFile(w1).read("xmpl_br_resources_books_v1-1.2.3.dist-info/METADATA").decode()
    requires = sorted(line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist"))
    from generator.pins import _installed

    assert requires == sorted([f"googleapis-common-protos>={_installed('googleapis-common-protos')}",
                               f"grpcio>={grpc.__version__}", requires[2]])
    assert requires[2].startswith("protobuf>=") and requires[2][len("protobuf>="):] <= google.protobuf.__version__

    # twine's own checks pass, and hatchling builds the same wheel from the sdist.
    check = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(w1), str(s1)],
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count("PASSED") == 2, check.stdout + check.stderr
    with tarfile.open(s1) as tar:
        tar.extractall(tmp_path / "src", filter="data")
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "hatch"),
                            str(tmp_path / "src" / "xmpl_br_resources_books_v1-1.2.3")], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    (hw,) = (tmp_path / "hatch").glob("*.whl")
    assert hw.name == w1.name
    hnames = zipfile.ZipFile(hw).namelist()
    assert sorted(n for n in hnames if ".dist-info/" not in n) == sorted(n for n in names if ".dist-info/" not in n)
    hmeta = zipfile.ZipFile(hw).read("xmpl_br_resources_books_v1-1.2.3.dist-info/METADATA").decode()
    assert sorted(line for line in hmeta.splitlines() if line.startswith("Requires-Dist")) == [
        f"Requires-Dist: {r}" for r in requires]


@pytest.mark.slow
def test_released_stubs_call_a_running_neuron_from_a_fresh_venv(books, scaffold, index, credentials, emulator, tmp_path):
    r = scaffold("proto", "release", BOOKS, "--version", "1.0.0", "--repository-url", index.url)
    assert r.code == 0, r.output
    assert scaffold("neuron", "create", BOOKS).code == 0
    env_dir = tmp_path / "client-venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Dependencies from pip's usual index; the package itself only exists on the local one.
    pip = subprocess.run([py, "-m", "pip", "install", "--quiet", "--extra-index-url", f"{index.url}simple/",
                          f"{DIST}==1.0.0"], capture_output=True, text=True, env=env, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    client = tmp_path / "client"
    client.mkdir()
    (client / "call.py").write_text(CLIENT)
    server = ServerProcess(books / "neurons" / "resources-books-v1",
                           {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-release",
                            "FIRESTORE_TIMEOUT_SECONDS": "30"})
    try:
        call = subprocess.run([py, "call.py", server.target], cwd=client, capture_output=True, text=True, env=env,
                              timeout=120)
    finally:
        logs = server.stop()
    assert call.returncode == 0, call.stdout + call.stderr + logs[-3000:]
    out = json.loads(call.stdout)
    assert out["module"].startswith(str(env_dir)) and "site-packages" in out["module"]
    assert out["get"] == {"name": "books/odyssey", "display_name": "The Odyssey"}
    assert out["list"] == ["books/odyssey"]


CLIENT = """\
import json, sys

import grpc
from xmpl.br.resources.books.v1 import books_pb2, books_pb2_grpc

with grpc.insecure_channel(sys.argv[1]) as channel:
    stub = books_pb2_grpc.BooksServiceStub(channel)
    book = books_pb2.Book(display_name="The Odyssey")
    stub.CreateBook(books_pb2.CreateBookRequest(book_id="odyssey", book=book), timeout=30)
    got = stub.GetBook(books_pb2.GetBookRequest(name="books/odyssey"), timeout=30)
    listed = stub.ListBooks(books_pb2.ListBooksRequest(page_size=10), timeout=30)
print(json.dumps({
    "module": books_pb2.__file__,
    "get": {"name": got.name, "display_name": got.display_name},
    "list": [b.name for b in listed.books],
}))
"""
