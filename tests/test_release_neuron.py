"""Issue 15: a neuron installs its proto's released stubs instead of carrying them.

`scaffold neuron create|update NAME --stubs released` pins the package `scaffold proto release`
published (a real pypiserver on 127.0.0.1, tests/release_support.py), refuses a proto that
changed since that release, and `neuron check` says when a newer release exists. The slow
test installs the neuron's requirements into a fresh virtual environment with the Dockerfile's
own pip commands and calls the running server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from generator import release
from tests.helpers import ServerProcess
from tests.release_support import BOOKS, DIST, edit, log
from tests.test_release import CLIENT

pytest_plugins = ["tests.release_support"]  # fixtures: index, credentials, books

FOLDER = "resources-books-v1"
OWN_STUBS = "protobuf/xmpl/br/resources/books/v1"


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes: compared to prove nothing was written."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stubs_pin(root: Path) -> tuple[str, str, str]:
    """(index, requirement, sha256) of the neuron's requirements-stubs.txt."""
    text = (root / "requirements-stubs.txt").read_text()
    index = re.search(r"^--extra-index-url (\S+)$", text, re.MULTILINE)
    req = re.search(r"^(\S+==\S+) \\\n\s+--hash=sha256:([0-9a-f]{64})$", text, re.MULTILINE)
    assert index and req, text
    return index[1], req[1], req[2]


def released(ws: Path, version: str) -> dict:
    return next(r for r in tomllib.loads((ws / "releases" / "releases.toml").read_text())["release"]
                if r["version"] == version)


@pytest.fixture
def rel(books, scaffold, index, credentials):
    """``rel("1.0.0")`` releases the Books proto to the local index and asserts it worked."""

    def release(version: str) -> None:
        r = scaffold("proto", "release", BOOKS, "--version", version, "--repository-url", index.url)
        assert r.code == 0, r.output

    return release


def test_a_proto_without_a_release_is_refused_and_nothing_written(books, scaffold):
    r = scaffold("neuron", "create", BOOKS, "--stubs", "released")
    assert r.code == 2, r.output
    assert f"{DIST} has no release in releases/releases.toml" in r.err and "scaffold proto release" in r.err
    assert "Traceback" not in r.output
    assert not (books / "neurons").exists()
    bad = scaffold("neuron", "create", BOOKS, "--stubs", "pypi")
    assert bad.code == 2 and "invalid --stubs 'pypi': expected one of copied, released" in bad.err
    alone = scaffold("neuron", "create", BOOKS, "--stubs-version", "1.0.0")
    assert alone.code == 2 and "add --stubs released" in alone.err
    assert not (books / "neurons").exists()


def test_released_stubs_pin_follow_releases_and_refuse_a_changed_proto(books, scaffold, index, rel):
    rel("1.0.0")
    r = scaffold("neuron", "create", BOOKS, "--stubs", "released")
    assert r.code == 0, r.output
    root = books / "neurons" / FOLDER
    # No stubs of its own proto: the package provides them (nor a regular xmpl/ package hiding it).
    assert not (root / OWN_STUBS).exists() and not (root / "protobuf" / "xmpl").exists()
    entry = released(books, "1.0.0")
    assert stubs_pin(root) == (f"{index.url}simple/", f"{DIST}==1.0.0", entry["wheel_sha256"])
    assert f"{DIST}==1.0.0" not in (root / "requirements.txt").read_text()
    docker = (root / "Dockerfile").read_text()
    assert "requirements-stubs.txt ./" in docker
    assert "--no-deps --only-binary=:all: --require-hashes -r requirements-stubs.txt" in docker
    record = tomllib.loads((root / "scaffold-neuron.toml").read_text())
    assert record["stubs"] == {"distribution": DIST, "version": "1.0.0", "protos": [entry["protos"][0]]}
    assert record["files"]["requirements-stubs.txt"]
    assert scaffold("neuron", "check", BOOKS).code == 0
    # Run locally, the stubs come from this Python's packages: without them, one message.
    r = scaffold("neuron", "test", BOOKS)
    assert r.code == 1 and f"runs on the released stubs {DIST}==1.0.0, but" in r.err and "none installed" in r.err
    assert "pip install --no-deps -r requirements-stubs.txt" in r.err and "Traceback" not in r.output

    # Only a comment changed: the stubs are the same, so the release still matches.
    edit(books, "  string description = 3", "  // What the book is about.\n  string description = 3")
    assert scaffold("neuron", "update", BOOKS).code == 0
    assert stubs_pin(root)[1] == f"{DIST}==1.0.0"

    # A new field without a new release: refused, one message, nothing written.
    edit(books, "  string description = 3", "  string subtitle = 9 [(google.api.field_behavior) = OPTIONAL];\n\n  string description = 3")
    before = files(root)
    for args in (("update", BOOKS), ("update", "--all"), ("update", BOOKS, "--stubs-version", "1.0.0")):
        r = scaffold("neuron", *args)
        assert r.code == 2, (args, r.output)
        assert f"proto changed since release 1.0.0 of {DIST}; run `scaffold proto release` first" in r.err
        assert "Traceback" not in r.output
    assert files(root) == before
    r = scaffold("neuron", "update", BOOKS, "--stubs-version", "0.9.0")
    assert r.code == 2 and "0.9.0 was never released; released: 1.0.0" in r.err, r.output

    # After the release, check was stale and update moves the pin (update --all keeps released stubs).
    rel("1.1.0")
    r = scaffold("neuron", "check", BOOKS)
    assert r.code == 1 and f"pins {DIST} 1.0.0; the latest release is 1.1.0" in r.out, r.output
    r = scaffold("neuron", "update", "--all")
    assert r.code == 0, r.output
    assert stubs_pin(root) == (f"{index.url}simple/", f"{DIST}==1.1.0", released(books, "1.1.0")["wheel_sha256"])
    assert not (root / OWN_STUBS).exists()
    assert scaffold("neuron", "check", BOOKS).code == 0

    # An older release that matches the proto can be pinned on purpose; check then says it is behind.
    rel("1.2.0")
    assert scaffold("neuron", "update", BOOKS, "--stubs-version", "1.1.0").code == 0
    assert stubs_pin(root)[1] == f"{DIST}==1.1.0"
    r = scaffold("neuron", "check", BOOKS)
    assert r.code == 1 and "the latest release is 1.2.0" in r.out

    # Back to copied stubs: they return to protobuf/, the stubs requirements file goes.
    r = scaffold("neuron", "update", BOOKS, "--stubs", "copied")
    assert r.code == 0, r.output
    assert (root / OWN_STUBS / "books_pb2.py").is_file() and not (root / "requirements-stubs.txt").exists()
    assert "requirements-stubs.txt" not in (root / "Dockerfile").read_text()
    assert "stubs" not in tomllib.loads((root / "scaffold-neuron.toml").read_text())
    assert scaffold("neuron", "check", BOOKS).code == 0


def test_a_missing_release_descriptor_set_is_one_message(books, scaffold, rel):
    rel("1.0.0")
    (books / "releases" / DIST / "1.0.0.binpb").unlink()
    r = scaffold("neuron", "create", BOOKS, "--stubs", "released")
    assert r.code == 1 and "the descriptor set of release 1.0.0 is missing" in r.err, r.output
    assert not (books / "neurons").exists()


def test_a_called_neurons_stubs_stay_in_protobuf_beside_the_released_ones(books, scaffold, index, rel, tmp_path):
    rel("1.0.0")
    assert scaffold("proto", "create", "xmpl.br.resources-authors-v1").code == 0
    assert scaffold("neuron", "create", "xmpl.br.resources-authors-v1").code == 0
    assert scaffold("neuron", "create", BOOKS, "--stubs", "released").code == 0
    r = scaffold("neuron", "depend", FOLDER, "resources-authors-v1")
    assert r.code == 0, r.output
    root = books / "neurons" / FOLDER
    authors = "protobuf/xmpl/br/resources/authors/v1"
    assert (root / authors / "authors_pb2_grpc.py").is_file() and (root / authors / "__init__.py").is_file()
    assert not (root / OWN_STUBS).exists()
    # Folders above the modules stay namespace packages: protobuf/xmpl/ must not hide the installed xmpl.br….
    assert not (root / "protobuf" / "xmpl" / "__init__.py").exists()
    assert stubs_pin(root)[1] == f"{DIST}==1.0.0"  # depend's update kept the released stubs
    site = tmp_path / "site"
    wheel = next(index.folder.glob("*.whl"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                         capture_output=True, text=True, timeout=120)
    assert pip.returncode == 0, pip.stderr
    probe = ("import xmpl.br.resources.books.v1.books_pb2_grpc as b, xmpl.br.resources.authors.v1.authors_pb2_grpc as a;"
             "print(b.__file__); print(a.__file__)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "protobuf"), str(site)])}
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(str(site)) and r.stdout.splitlines()[1].startswith(str(root / "protobuf"))


def test_the_hash_pin_refuses_a_swapped_wheel_on_the_index(books, scaffold, index, rel, tmp_path):
    """--extra-index-url lets another index offer the name too; the recorded sha256 decides."""
    import zipfile

    rel("1.0.0")
    assert scaffold("neuron", "create", BOOKS, "--stubs", "released").code == 0
    root = books / "neurons" / FOLDER

    def install(target: str):
        return subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--require-hashes",
                               "--target", str(tmp_path / target), "-r", "requirements-stubs.txt"],
                              cwd=root, capture_output=True, text=True, timeout=180)

    ok = install("good")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "good" / "xmpl" / "br" / "resources" / "books" / "v1" / "books_pb2.py").is_file()
    wheel = next(index.folder.glob("*.whl"))
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("xmpl/br/resources/books/v1/evil.py", "raise SystemExit('swapped')\n")
    bad = install("bad")
    assert bad.returncode != 0 and "DO NOT MATCH THE HASHES" in bad.stderr, bad.stdout + bad.stderr
    assert not (tmp_path / "bad" / "xmpl").exists()


def _dockerfile_pip_steps(root: Path) -> list[list[str]]:
    """The build stage's `/venv/bin/pip …` commands of the neuron's Dockerfile, as argv lists."""
    text = (root / "Dockerfile").read_text().replace("\\\n", " ")
    run = next(line for line in text.splitlines() if line.startswith("RUN /venv/bin/pip"))
    return [step.split() for step in run.removeprefix("RUN ").split("&&")]


@pytest.mark.slow
def test_neuron_runs_on_released_stubs_installed_from_the_index(books, scaffold, rel, emulator, tmp_path):
    rel("1.0.0")
    assert scaffold("neuron", "create", BOOKS, "--stubs", "released").code == 0
    root = books / "neurons" / FOLDER
    env_dir = tmp_path / "neuron-venv"
    venv.create(env_dir, with_pip=True)
    py = str(env_dir / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # The Dockerfile's own pip commands, with this venv for /venv: dependencies from this
    # machine's usual index, the runtime from wheels/, the stubs from the local release index.
    steps = _dockerfile_pip_steps(root)
    assert any("requirements-stubs.txt" in step for step in steps)
    for step in steps:
        argv = [py, "-m", "pip", *step[1:]] if step[0] == "/venv/bin/pip" else step
        r = subprocess.run(argv, cwd=root, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, (step, r.stdout + r.stderr)
    where = subprocess.run([py, "-c", "import xmpl.br.resources.books.v1.books_pb2 as m; print(m.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, env=env)
    assert where.returncode == 0 and where.stdout.startswith(str(env_dir)), where.stdout + where.stderr
    assert not (root / OWN_STUBS).exists()
    release.check_installed(py, root)  # `neuron run`/`test` with this Python would accept it

    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-relneuron",
                                  "FIRESTORE_TIMEOUT_SECONDS": "30"}, python=py)
    try:
        (tmp_path / "call.py").write_text(CLIENT)
        call = subprocess.run([py, "call.py", server.target], cwd=tmp_path, capture_output=True, text=True, env=env,
                              timeout=120)
    finally:
        logs = server.stop()
    assert call.returncode == 0, call.stdout + call.stderr + logs[-3000:]
    out = json.loads(call.stdout)
    assert out["get"] == {"name": "books/odyssey", "display_name": "The Odyssey"}
    assert out["list"] == ["books/odyssey"]
    assert log(books) == [(DIST, "1.0.0")]
