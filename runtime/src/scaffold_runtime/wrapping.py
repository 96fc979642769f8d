"""The shape every server interceptor of the runtime shares: wrap each method's handler once.

grpc calls ``intercept_service`` on every call; wrapping a handler there each time would make
new closures per call. :class:`MethodInterceptor` wraps a registered method's handler the first
time it is called and keeps the result; an unknown method (grpc answers UNIMPLEMENTED) is never
cached, so callers inventing method names cost no memory.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc


class MethodInterceptor(grpc.ServerInterceptor):
    """A server interceptor whose :meth:`wrap` runs once per registered method."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}  # registered methods only

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrapped[method] = self.wrap(method, handler)
        return wrapped

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler to serve ``method`` with (``handler`` itself to leave it alone)."""
        return handler


def rewrap(handler: grpc.RpcMethodHandler, unary: Callable, stream: Callable) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind and serializers whose behaviour is ``unary(inner)`` when
    it answers with one message, ``stream(inner)`` (a generator function) when it streams;
    ``inner`` is ``handler``'s own behaviour."""
    if not handler.response_streaming:
        behaviour = unary(handler.unary_unary or handler.stream_unary)
        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
    else:
        behaviour = stream(handler.unary_stream or handler.stream_stream)
        factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return factory(behaviour, handler.request_deserializer, handler.response_serializer)
