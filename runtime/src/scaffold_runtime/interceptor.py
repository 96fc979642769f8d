"""Per-call logging and statistics: method, status code and latency.

By default only failed calls (any code but OK) and slow calls (over ``LOG_SLOW_MS``, 1000 ms)
are logged, so the per-call cost stays a few attribute reads; ``LOG_EVERY_CALL=true`` logs
every call. Request payloads are never logged (they may carry personal data).
"""

from __future__ import annotations

import logging
import os
import time

import grpc

from scaffold_runtime.auth import caller
from scaffold_runtime.logs import TRACE_KEY, trace_from_metadata
from scaffold_runtime.stats import RpcStats

log = logging.getLogger("grpc.call")
_OK = grpc.StatusCode.OK


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class CallLogInterceptor(grpc.ServerInterceptor):
    """Wraps each method's handler once; the per-call work is a timer and a code check."""

    def __init__(self, every_call: bool | None = None, slow_ms: float | None = None, stats: RpcStats | None = None) -> None:
        self.stats = stats
        self.every_call = _env_bool("LOG_EVERY_CALL") if every_call is None else every_call
        self.slow = (float(os.environ.get("LOG_SLOW_MS", "1000")) if slow_ms is None else slow_ms) / 1000
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        try:
            return self._wrapped[method]
        except KeyError:
            pass
        handler = continuation(handler_call_details)
        wrapped = self._wrap(method, handler) if handler is not None else None
        if not method.startswith(("/grpc.health.", "/grpc.reflection.")):
            self._wrapped[method] = wrapped
        else:
            self._wrapped[method] = handler
            wrapped = handler
        return wrapped

    def _record(self, method: str, context, started: float, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        code = context.code() if hasattr(context, "code") else None
        if error is not None and code in (None, _OK):
            code = grpc.StatusCode.UNKNOWN
        code = code or _OK
        if self.stats is not None:
            self.stats.record(method, code.name, elapsed)
        if code is _OK and not self.every_call and elapsed < self.slow:
            return
        fields = {"grpc.method": method, "grpc.code": code.name, "latency_ms": round(elapsed * 1000, 3)}
        trace = trace_from_metadata(context.invocation_metadata())
        if trace:
            fields[TRACE_KEY] = trace
        identity = caller()
        if identity:
            fields["caller"] = identity
        level = logging.INFO
        if code is not _OK:
            level = logging.ERROR if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                                              grpc.StatusCode.DATA_LOSS) else logging.WARNING
        elif elapsed >= self.slow:
            level = logging.WARNING
        log.log(level, "%s %s %.1fms", method, code.name, elapsed * 1000, extra={"fields": fields},
                exc_info=error if code is grpc.StatusCode.UNKNOWN and error is not None else None)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        record = self._record

        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            def unary(request, context):
                started = time.perf_counter()
                try:
                    response = inner(request, context)
                except BaseException as exc:
                    record(method, context, started, exc)
                    raise
                record(method, context, started, None)
                return response

            factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return factory(unary, handler.request_deserializer, handler.response_serializer)

        inner_stream = handler.unary_stream or handler.stream_stream

        def streaming(request, context):
            started = time.perf_counter()
            try:
                yield from inner_stream(request, context)
            except BaseException as exc:
                record(method, context, started, exc)
                raise
            record(method, context, started, None)

        factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return factory(streaming, handler.request_deserializer, handler.response_serializer)
