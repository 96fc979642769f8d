"""A missing emulator or Java is named with how to install it; a run that tested nothing is not green."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port

BOOKS = "xmpl.br.resources-books-v1"
JAVA_FIX = "apt-get install openjdk-17-jre-headless"
EMULATOR_FIX = "gcloud components install cloud-firestore-emulator"


@pytest.fixture
def books(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    assert scaffold("neuron", "create", BOOKS).code == 0
    return workspace / "neurons" / "resources-books-v1"


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def run_cli(workspace: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``scaffold ARGS`` with ``env`` over ours (no CI, no emulator configured, no JAVA)."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("CI", "JAVA", "PYTHONPATH", "FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT",
                         "FIRESTORE_EMULATOR_BIN", "SCAFFOLD_ALLOW_NO_EMULATOR")}
    return subprocess.run([sys.executable, "-m", "generator", *args], cwd=workspace, env={**base, **env},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def no_java(tmp_path) -> dict[str, str]:
    """An emulator launcher that exists, and a PATH with no java on it."""
    bin_dir = tmp_path / "empty-bin"
    bin_dir.mkdir()
    return {"PATH": str(bin_dir), "FIRESTORE_EMULATOR_BIN": _script(tmp_path / "emulator", "exit 127")}


def test_neuron_test_without_java_names_it_and_how_to_install_it(books, workspace, no_java):
    r = run_cli(workspace, no_java, "neuron", "test", BOOKS, "-q", "-p", "no:randomly")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Java 11+ is needed by the Firestore emulator" in out and JAVA_FIX in out
    assert "Traceback" not in out and "ERROR tests/" not in out and len(out.splitlines()) < 15, out


def test_neuron_run_without_java_says_one_line(books, workspace, no_java):
    r = run_cli(workspace, no_java, "neuron", "run", BOOKS, "--port", str(free_port()), "--gateway-port", str(free_port()))
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Java 11+ is needed by the Firestore emulator" in errors[0] and JAVA_FIX in errors[0]
    assert "exited with code 127" not in r.stderr and "Traceback" not in r.stderr


def test_an_old_java_is_named_with_its_version(books, workspace, no_java, tmp_path):
    old = _script(tmp_path / "java8", """echo 'openjdk version "1.8.0_292"' >&2""")
    r = run_cli(workspace, {**no_java, "JAVA": old}, "neuron", "test", BOOKS, "-q")
    assert r.returncode == 1 and f"{old} is Java 8" in r.stdout + r.stderr


def test_missing_emulator_fails_unless_the_user_opts_out(books, workspace, tmp_path):
    missing = {"FIRESTORE_EMULATOR_BIN": str(tmp_path / "no-such-emulator")}
    r = run_cli(workspace, missing, "neuron", "test", BOOKS, "-q", "-p", "no:randomly")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert EMULATOR_FIX in out and "SCAFFOLD_ALLOW_NO_EMULATOR=1" in out and "passed" not in out
    allowed = run_cli(workspace, {**missing, "SCAFFOLD_ALLOW_NO_EMULATOR": "1"}, "neuron", "test", BOOKS, "-q")
    out = allowed.stdout + allowed.stderr
    assert allowed.returncode == 0, out
    assert "WARNING:" in out and "did NOT run" in out and EMULATOR_FIX in out
    under_ci = run_cli(workspace, {**missing, "SCAFFOLD_ALLOW_NO_EMULATOR": "1", "CI": "true"}, "neuron", "test", BOOKS, "-q")
    assert under_ci.returncode == 1, "CI never accepts a run that skipped the emulator"
