"""Tests for xmpl.tc.resources.functions.v1.FunctionsService: yours.

Created by scaffold; from now on this file is yours and scaffold never changes it. What the
proto promises (standard methods, stubs answering UNIMPLEMENTED) is checked by
test_functions_service_contract.py, which scaffold regenerates; test your own code here.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from xmpl.tc.resources.functions.v1 import functions_pb2_grpc


@pytest.fixture
def stub(channel):
    return functions_pb2_grpc.FunctionsServiceStub(channel)


def assert_code(call, code: grpc.StatusCode) -> grpc.RpcError:
    """Run ``call``; it must fail with ``code``. Returns the error (for its details)."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value


def test_the_service_is_serving(channel):
    """The server registered FunctionsService and reports it SERVING."""
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="xmpl.tc.resources.functions.v1.FunctionsService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
