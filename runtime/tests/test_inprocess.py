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
