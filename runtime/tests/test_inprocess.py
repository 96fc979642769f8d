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
