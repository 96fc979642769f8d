"""scaffold_runtime.testing: the Firestore emulator starts even when its first port is taken."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
from scaffold_runtime import testing

needs_emulator = pytest.mark.skipif(testing.emulator_problem() is not None and os.environ.get("CI", "").lower() not in
                                    ("1", "true", "yes"), reason="the Firestore emulator is not available")


@pytest.fixture
def squatter():
    """A port another process holds (listening), and free_port() rigged to offer it first."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@needs_emulator
def test_emulator_starts_on_a_fresh_port_when_its_first_is_taken(squatter, monkeypatch):
    offered = iter([squatter])
    real = testing.free_port
    monkeypatch.setattr(testing, "free_port", lambda: next(offered, None) or real())
    with testing.firestore_emulator() as emu:
        port = int(emu.host.rsplit(":", 1)[1])
        assert port != squatter
        with urllib.request.urlopen(f"http://{emu.host}/", timeout=10) as r:
            assert r.read().strip() == b"Ok"
    assert next(offered, None) is None, "the taken port was tried first"


@needs_emulator
def test_a_taken_port_that_was_asked_for_fails_with_the_emulators_reason(squatter):
    with pytest.raises(RuntimeError) as err, testing.firestore_emulator(port=squatter):
        pass
    message = str(err.value)
    assert f"exited with code 1 on port {squatter}" in message
    assert "Address already in use" in message and "\tat " not in message and "\n" not in message
