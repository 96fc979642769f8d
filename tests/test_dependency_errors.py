"""scaffold_runtime.neuron_client.abort_from (issue 15): a neuron whose call to another neuron
fails answers a clean status, never UNKNOWN and never the dependency's internals.

Two real gRPC servers on 127.0.0.1: a dependency answering the code it is asked for, and a
caller whose method calls it and ends with abort_from.
"""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from scaffold_runtime.neuron_client import CALLER_ERRORS, abort_from, status_of

SECRET = "stack trace at /srv/app/secret.py line 12"
C = grpc.StatusCode


def _server(handler) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.S", {"Call": grpc.unary_unary_rpc_method_handler(handler)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def caller():
    """A caller whose request is ``CODE`` (the dependency's answer) or ``CODE+UNAUTHENTICATED``
    (with that code passed through too); ``down`` calls an address nobody listens on."""
    def dependency(request, context):
        code = C[request.decode()]
        context.abort(code, "functions/x not found" if code is C.NOT_FOUND else SECRET)

    dep, dep_target = _server(dependency)
    dep_channel = grpc.insecure_channel(dep_target)
    down_channel = grpc.insecure_channel("127.0.0.1:1")

    def handler(request, context):
        text = request.decode()
        code, _, extra = text.partition("+")
        channel = down_channel if code == "down" else dep_channel
        try:
            return channel.unary_unary("/t.S/Call")(code.encode(), timeout=10)
        except grpc.RpcError as exc:
            passthrough = CALLER_ERRORS | {C[extra]} if extra else CALLER_ERRORS
            abort_from(context, exc, "management", passthrough)

    server, target = _server(handler)
    channel = grpc.insecure_channel(target)
    yield channel.unary_unary("/t.S/Call")
    for ch in (channel, dep_channel, down_channel):
        ch.close()
    server.stop(0)
    dep.stop(0)


def answer(call, text: str) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call(text.encode(), timeout=20)
    return err.value.code(), err.value.details()


def test_caller_errors_keep_their_code_and_message(caller):
    assert answer(caller, "NOT_FOUND") == (C.NOT_FOUND, "functions/x not found")
    for code in CALLER_ERRORS - {C.NOT_FOUND}:
        assert answer(caller, code.name)[0] is code


@pytest.mark.parametrize("code", [C.UNKNOWN, C.INTERNAL, C.UNIMPLEMENTED, C.DATA_LOSS, C.UNAUTHENTICATED,
                                  C.PERMISSION_DENIED])
def test_other_failures_are_internal_without_the_dependencys_details(caller, code):
    got, details = answer(caller, code.name)
    assert (got, details) == (C.INTERNAL, "the management service failed")


def test_an_unreachable_dependency_is_unavailable_without_its_address(caller):
    assert answer(caller, "down") == (C.UNAVAILABLE, "the management service is unavailable; retry later")
    assert answer(caller, "UNAVAILABLE") == (C.UNAVAILABLE, "the management service is unavailable; retry later")


def test_a_code_can_be_passed_through_on_purpose(caller):
    assert answer(caller, "UNAUTHENTICATED+UNAUTHENTICATED") == (C.UNAUTHENTICATED, SECRET)


def test_status_of_an_error_without_a_status():
    assert status_of(grpc.RpcError("no status")) == (C.UNKNOWN, "")
    assert status_of(ValueError("x")) == (C.UNKNOWN, "")
