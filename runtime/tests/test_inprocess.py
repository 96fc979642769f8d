"""The in-process upstream refuses calls once it drains (its thread pool is shut down then)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from scaffold_runtime.inprocess import CallError, InProcess
from scaffold_runtime.server import Service, Wiring

CHECK = SimpleNamespace(method="/grpc.health.v1.Health/Check", response=health_pb2.HealthCheckResponse)


def test_calls_after_drain_are_unavailable_not_errors():
    wiring = Wiring([Service("grpc.health.v1.Health", health_pb2_grpc.add_HealthServicer_to_server,
                             lambda deps: health.HealthServicer())], max_workers=4)
    upstream = InProcess(wiring)

    async def check():
        return await upstream.unary(CHECK, health_pb2.HealthCheckRequest(), [], 5.0)

    assert asyncio.run(check()).status == health_pb2.HealthCheckResponse.SERVING
    assert upstream.drain(1.0)
    with pytest.raises(CallError) as caught:
        asyncio.run(check())
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE and "shutting down" in caught.value.details()


def test_a_call_that_finds_the_pool_shut_down_is_unavailable():
    """drain() may shut the pool down between the draining check and the hand-off."""
    wiring = Wiring([Service("grpc.health.v1.Health", health_pb2_grpc.add_HealthServicer_to_server,
                             lambda deps: health.HealthServicer())], max_workers=4)
    upstream = InProcess(wiring)
    upstream.pool.shutdown()
    with pytest.raises(CallError) as caught:
        asyncio.run(upstream.unary(CHECK, health_pb2.HealthCheckRequest(), [], 5.0))
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


class _Slow:
    def __init__(self, _deps) -> None:
        pass

    def sleep(self, request, context):
        import time

        time.sleep(0.3)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


def _add_slow(servicer, server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.sleep, health_pb2.HealthCheckRequest.FromString, health_pb2.HealthCheckResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Slow", {"Sleep": handler}),))


SLEEP = SimpleNamespace(method="/t.Slow/Sleep", response=health_pb2.HealthCheckResponse)


def test_an_answer_after_the_deadline_or_after_the_loop_closed_is_dropped_quietly(caplog):
    """The worker settles the call's future on the event loop: a future the deadline already
    settled, or a loop that has closed since, must cost nothing but the answer."""
    import logging
    import time

    wiring = Wiring([Service("t.Slow", _add_slow, _Slow)], max_workers=4)
    upstream = InProcess(wiring)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(CallError) as caught:  # the deadline settles it first
            asyncio.run(upstream.unary(SLEEP, health_pb2.HealthCheckRequest(), [], 0.05))
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)  # the worker has answered a loop that is gone
        answer = asyncio.run(upstream.unary(SLEEP, health_pb2.HealthCheckRequest(), [], 5.0))
        upstream.pool.shutdown()
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


class _Ticks:
    def __init__(self, _deps) -> None:
        self.produced = 0

    def ticks(self, request, context):
        import time

        while True:
            self.produced += 1
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
            time.sleep(0.02)


def test_a_stream_whose_event_loop_closed_stops_producing_quietly(caplog):
    """The gateway's loop ends (shutdown) while a server stream runs: the producer stops at
    its next message instead of failing in the worker."""
    import logging
    import time

    servicers = []

    def make(deps):
        servicers.append(_Ticks(deps))
        return servicers[-1]

    def add(servicer, server) -> None:
        handler = grpc.unary_stream_rpc_method_handler(
            servicer.ticks, health_pb2.HealthCheckRequest.FromString, health_pb2.HealthCheckResponse.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Ticks", {"Ticks": handler}),))

    upstream = InProcess(Wiring([Service("t.Ticks", add, make)], max_workers=4))
    rule = SimpleNamespace(method="/t.Ticks/Ticks", response=health_pb2.HealthCheckResponse)

    async def first():
        stream = upstream.stream(rule, health_pb2.HealthCheckRequest(), [], 30.0)
        return await stream.read(), stream

    with caplog.at_level(logging.WARNING):
        message, stream = asyncio.run(first())  # the loop closes with the stream still running
        deadline = time.monotonic() + 5
        while stream.context._active and time.monotonic() < deadline:
            time.sleep(0.05)
        produced = servicers[0].produced
        time.sleep(0.2)
        upstream.pool.shutdown()
    assert message.status == health_pb2.HealthCheckResponse.SERVING
    assert not stream.context._active and servicers[0].produced == produced  # it stopped
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == ["WARNING"]
    assert caplog.records[-1].getMessage().startswith("/t.Ticks/Ticks CANCELLED")  # not UNKNOWN, no traceback
