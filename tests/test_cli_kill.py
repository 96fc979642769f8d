"""A `scaffold neuron create` or `update` killed at a random moment leaves the old tree or the
new one, and the next run finishes the job. SIGKILL, so no cleanup code gets to run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BOOKS = "xmpl.br.resources-books-v1"
ATTEMPTS = int(os.environ.get("KILL_ATTEMPTS", "12"))


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def cli(ws: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "generator", *args], cwd=ws, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def kill_at_random(proc: subprocess.Popen, rnd: random.Random, upto: float) -> bool:
    time.sleep(rnd.uniform(0, upto))
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


@pytest.fixture
def ws(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    return workspace


def test_killed_create(ws, scaffold):
    root = ws / "neurons/resources-books-v1"
    assert scaffold("neuron", "create", BOOKS).code == 0
    complete = snapshot(root)
    shutil.rmtree(root)
    rnd = random.Random(7)
    seen = {"absent": 0, "complete": 0}
    killed = 0
    for _ in range(ATTEMPTS):
        killed += kill_at_random(cli(ws, "neuron", "create", BOOKS), rnd, 0.8)
        state = snapshot(root)
        assert state in ({}, complete), f"a mix: {len(state)} of {len(complete)} files"
        seen["absent" if not state else "complete"] += 1
        if state:
            shutil.rmtree(root)
    assert killed >= ATTEMPTS // 3  # the kills really landed while it ran
    assert scaffold("neuron", "create", BOOKS).code == 0  # a leftover stage does not block a re-run
    assert snapshot(root) == complete
    print(f"\nRELIABILITY killed create: {{\"attempts\": {ATTEMPTS}, \"killed_mid_run\": {killed}, \"states\": {seen}}}")


def test_killed_update(ws, scaffold):
    root = ws / "neurons/resources-books-v1"
    assert scaffold("neuron", "create", BOOKS).code == 0
    proto = ws / "proto/xmpl/br/resources/books/v1/books.proto"
    old_proto = proto.read_text()
    new_proto = old_proto.replace("  // Deletes a book.", "  rpc ArchiveBook(GetBookRequest) returns (Book);\n  // Deletes a book.")
    old = snapshot(root)
    backup = ws.parent / "backup"
    shutil.copytree(root, backup)
    proto.write_text(new_proto)
    assert scaffold("neuron", "update", BOOKS).code == 0
    new = snapshot(root)
    assert new != old
    rnd = random.Random(11)
    seen = {"old": 0, "new": 0, "journal finished by the next run": 0}
    killed = 0
    for _ in range(ATTEMPTS):
        shutil.rmtree(root)
        shutil.copytree(backup, root)
        killed += kill_at_random(cli(ws, "neuron", "update", BOOKS), rnd, 0.8)
        state = snapshot(root)
        journal = {k: v for k, v in state.items() if k.startswith(".scaffold-txn/")}
        state = {k: v for k, v in state.items() if not k.startswith(".scaffold-txn/")}
        if state == old:
            seen["old"] += 1
        elif state == new:
            seen["new"] += 1
        else:
            assert ".scaffold-txn/COMMIT" in journal, "a mix without a committed journal"
            seen["journal finished by the next run"] += 1
        assert scaffold("neuron", "update", BOOKS).code == 0
        assert snapshot(root) == new
    assert killed >= ATTEMPTS // 3
    print(f"\nRELIABILITY killed update: {{\"attempts\": {ATTEMPTS}, \"killed_mid_run\": {killed}, \"states\": {seen}}}")
