"""pytest fixtures every neuron's tests use: ``pytest_plugins = ["scaffold_runtime.pytest_plugin"]``.

- ``emulator``: the Firestore emulator. One that is already running (FIRESTORE_EMULATOR_HOST,
  with GOOGLE_CLOUD_PROJECT) is used as is; otherwise one is started on a free 127.0.0.1 port
  for the session. Missing emulator: a skip locally, a failure under CI.
- ``server``: the neuron's server, in this process, on 127.0.0.1 and a free port.
- ``channel``: a channel from the neuron's own client.py.
Each test that uses the server or the emulator starts with an empty database.
"""

from __future__ import annotations

import os

import pytest

from scaffold_runtime.testing import (
    EMULATOR_PROJECT,
    emulator_command,
    firestore_emulator,
    running_emulator,
    serve_in_process,
    uses_firestore,
)


@pytest.fixture(scope="session")
def emulator():
    """The Firestore emulator: the running one, or one started for this session."""
    running = running_emulator()
    if running is not None:
        os.environ.setdefault("GOOGLE_CLOUD_PROJECT", running.project)
        yield running
        return
    if emulator_command() is None:
        message = "the Firestore emulator is not installed (gcloud components install cloud-firestore-emulator)"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(message)
        pytest.skip(message)
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
