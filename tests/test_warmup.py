"""Firestore warm-up at start-up (issue 13): the connection opens before health is SERVING,
and a slow database never keeps the server from SERVING."""

from __future__ import annotations

import logging
import socket
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scaffold_runtime.deps import Deps
from scaffold_runtime.server import Neuron, Service


class UsesFirestore:
    """A servicer that takes the Firestore client when it is made, as base servicers do."""

    def __init__(self, deps) -> None:
        self.client = deps.firestore


def register_nothing(servicer, server) -> None:
    """Stands in for add_<Service>Servicer_to_server: the test serves health only."""


@pytest.fixture
def blackhole():
    """A 127.0.0.1 port that accepts connections and never answers (a database that hangs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def warmup_failures(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "warm-up failed" in r.getMessage()]


def test_warmup_reads_through_the_emulator(emulator, monkeypatch, caplog):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-warmup")
    deps = Deps(database="warmup")
    assert deps.warm_firestore() is None  # no servicer asked for the client: nothing to warm
    deps.firestore  # noqa: B018 - what a base servicer does when it is made
    with caplog.at_level(logging.WARNING):
        thread = deps.warm_firestore()
        assert thread is not None
        thread.join(60)
    assert not thread.is_alive()
    assert warmup_failures(caplog) == []


def test_warmup_can_be_turned_off(emulator, monkeypatch):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    monkeypatch.setenv("FIRESTORE_WARMUP_SECONDS", "0")
    deps = Deps(database="warmup")
    deps.firestore  # noqa: B018
    assert deps.warm_firestore() is None


def test_hanging_database_still_goes_serving(blackhole, monkeypatch, caplog):
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", blackhole)
    monkeypatch.setenv("FIRESTORE_WARMUP_SECONDS", "1")
    monkeypatch.setattr("scaffold_runtime.deps.WARMUP_READ_SECONDS", 2.0)
    neuron = Neuron([Service("test.warmup.Nothing", register_nothing, UsesFirestore)], host="127.0.0.1", port=0)
    done = threading.Event()
    with caplog.at_level(logging.WARNING):
        try:
            neuron.start(grace=1)
            with grpc.insecure_channel(f"127.0.0.1:{neuron.port}") as ch:
                status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            # The warm-up read gives up within its own bound and says so.
            for _ in range(300):
                if warmup_failures(caplog):
                    done.set()
                    break
                threading.Event().wait(0.1)
        finally:
            neuron.drain(1)
    assert done.is_set(), "the warm-up against a hanging database never ended"
