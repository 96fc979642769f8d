"""pytest fixtures every neuron's tests use: ``pytest_plugins = ["scaffold_runtime.pytest_plugin"]``.

- ``emulator``: the Firestore emulator. One that is already running (FIRESTORE_EMULATOR_HOST,
  with GOOGLE_CLOUD_PROJECT) is used as is; otherwise one is started on a free 127.0.0.1 port
  for the session.
- ``server``: the neuron's server, in this process, on 127.0.0.1 and a free port.
- ``channel``: a channel from the neuron's own client.py.
Each test that uses the server or the emulator starts with an empty database.

Tests that need the emulator fail before any test runs when it cannot run (a run that tested
nothing must not look green), with one message saying what to install;
SCAFFOLD_ALLOW_NO_EMULATOR=1 skips them instead (never under CI) and says so loudly.
"""

from __future__ import annotations

import os

import pytest

from scaffold_runtime.testing import (
    EMULATOR_PROJECT,
    emulator_problem,
    firestore_emulator,
    running_emulator,
    serve_in_process,
    uses_firestore,
)

_NOT_RUN: list[str] = []  # why the tests that need the emulator were skipped


def _allow_no_emulator() -> bool:
    return os.environ.get("SCAFFOLD_ALLOW_NO_EMULATOR") == "1" and os.environ.get("CI", "").lower() not in ("1", "true")


def pytest_collection_modifyitems(config, items):
    """Before any test runs: when tests need the emulator and it cannot run, stop with one
    message saying what to install (or skip them under SCAFFOLD_ALLOW_NO_EMULATOR=1)."""
    if running_emulator() is not None or not uses_firestore():
        return
    needing = [item for item in items if {"emulator", "server"} & set(item.fixturenames)]
    problem = emulator_problem() if needing else None
    if problem is None:
        return
    if not _allow_no_emulator():
        pytest.exit(f"{problem}\n{len(needing)} test(s) need it; SCAFFOLD_ALLOW_NO_EMULATOR=1 skips them instead",
                    returncode=1)
    _NOT_RUN.append(f"{len(needing)} test(s) that need the Firestore emulator did NOT run: {problem}")
    for item in needing:
        item.add_marker(pytest.mark.skip(reason=problem))


def pytest_terminal_summary(terminalreporter):
    for line in _NOT_RUN:
        terminalreporter.write_line(f"WARNING: {line}", red=True, bold=True)


@pytest.fixture(scope="session")
def emulator(request):
    """The Firestore emulator: the running one, or one started for this session."""
    running = running_emulator()
    if running is not None:
        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", running.project)
        yield running
        return
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # say it now, not in a captured section
            reporter.write_line("starting the Firestore emulator…")
    with firestore_emulator() as emu:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emu.host
        os.environ["GOOGLE_CLOUD_PROJECT"] = EMULATOR_PROJECT
        yield emu


@pytest.fixture(scope="session")
def _uses_firestore() -> bool:
    return uses_firestore()


@pytest.fixture(autouse=True)
def _clean_database(request, _uses_firestore):
    """Each test that talks to the server starts with an empty database."""
    if _uses_firestore and ("server" in request.fixturenames or "emulator" in request.fixturenames):
        request.getfixturevalue("emulator").wipe()


@pytest.fixture(scope="session")
def server(request, _uses_firestore):
    """The server, started in this process on 127.0.0.1 and a free port."""
    if _uses_firestore:
        request.getfixturevalue("emulator")
    with serve_in_process() as (target, _neuron):
        yield target


@pytest.fixture(scope="session")
def channel(server):
    """A channel from the neuron's own client (client.py)."""
    import client
    import grpc

    ch = client.connect(server)
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()
