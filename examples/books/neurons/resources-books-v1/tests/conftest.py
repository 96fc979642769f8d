"""Fixtures for xmpl.br.resources-books-v1's tests: the real Firestore emulator and the server, in-process.

Created by scaffold; yours to edit.
"""

from __future__ import annotations

import os

import grpc
import pytest

import client
from runtime.testing import EMULATOR_PROJECT, emulator_command, firestore_emulator, serve_in_process, uses_firestore

USES_FIRESTORE = uses_firestore()


@pytest.fixture(scope="session")
def emulator():
    """The Firestore emulator on a free port; missing is a skip locally, a failure under CI."""
    if emulator_command() is None:
        message = "the Firestore emulator is not installed (gcloud components install cloud-firestore-emulator)"
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(message)
        pytest.skip(message)
    with firestore_emulator() as emu:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emu.host
        os.environ["GOOGLE_CLOUD_PROJECT"] = EMULATOR_PROJECT
        yield emu


@pytest.fixture(autouse=True)
def _clean_database(request):
    """Each test that talks to the server starts with an empty database."""
    if USES_FIRESTORE and ("server" in request.fixturenames or "emulator" in request.fixturenames):
        request.getfixturevalue("emulator").wipe()


@pytest.fixture(scope="session")
def server(request):
    """The server, started in this process on 127.0.0.1 and a free port."""
    if USES_FIRESTORE:
        request.getfixturevalue("emulator")
    with serve_in_process() as (target, _neuron):
        yield target


@pytest.fixture(scope="session")
def channel(server):
    """A channel from the neuron's own client (client.py)."""
    ch = client.connect(server)
    grpc.channel_ready_future(ch).result(timeout=10)
    yield ch
    ch.close()
