"""Shared by the release tests: a local package index (pypiserver) and a Books workspace.

The index runs on 127.0.0.1 on a free port in its own process group, with an htpasswd file:
uploads need credentials, downloads do not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import need
from tests.helpers import free_port, wait_for_port

BOOKS = "xmpl.br.resources-books-v1"
DIST = "xmpl-br-resources-books-v1"
PROTO = "proto/xmpl/br/resources/books/v1/books.proto"
USER, PASSWORD = "releaser", "s3cret-for-tests"


class Index:
    """pypiserver serving ``folder``; uploads authenticated against an htpasswd file."""

    def __init__(self, tmp: Path) -> None:
        from passlib.apache import HtpasswdFile

        self.folder = tmp / "packages"
        self.folder.mkdir(parents=True)
        htpasswd = HtpasswdFile(str(tmp / "htpasswd"), new=True)
        htpasswd.set_password(USER, PASSWORD)
        htpasswd.save()
        self.port = free_port()
        exe = Path(sys.executable).parent / "pypi-server"
        self.proc = subprocess.Popen(
            [str(exe), "run", "-p", str(self.port), "-i", "127.0.0.1", "-a", "update", "-P", str(tmp / "htpasswd"),
             "--disable-fallback", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, self.proc)
        self.url = f"http://127.0.0.1:{self.port}/"

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def index(tmp_path):
    need((Path(sys.executable).parent / "pypi-server").exists(), "pypiserver (pip install 'scaffold[dev]')")
    server = Index(tmp_path / "index")
    yield server
    server.stop()


@pytest.fixture
def credentials(monkeypatch):
    """twine's credentials from the environment; no desktop keyring is consulted."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    monkeypatch.setenv("TWINE_USERNAME", USER)
    monkeypatch.setenv("TWINE_PASSWORD", PASSWORD)


@pytest.fixture
def books(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    return workspace


def log(ws: Path) -> list[tuple[str, str]]:
    path = ws / "releases" / "releases.toml"
    if not path.exists():
        return []
    return [(r["distribution"], r["version"]) for r in tomllib.loads(path.read_text())["release"]]


def edit(ws: Path, old: str, new: str) -> None:
    path = ws / PROTO
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
