"""Per-call logging and statistics: method, status code and latency.

By default only failed calls (any code but OK) and slow calls (over ``LOG_SLOW_MS``, 1000 ms)
are logged, so the per-call cost stays a few attribute reads; ``LOG_EVERY_CALL=true`` logs
every call. Request payloads are never logged (they may carry personal data).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import grpc

from scaffold_runtime import tracing
from scaffold_runtime.auth import caller
from scaffold_runtime.logs import TRACE_KEY, trace_from_metadata
from scaffold_runtime.stats import RpcStats
from scaffold_runtime.wrapping import MethodInterceptor, rewrap

log = logging.getLogger("grpc.call")
_OK = grpc.StatusCode.OK


def call_code(context, error: BaseException | None) -> grpc.StatusCode:
    """The code a call ends with: the one set on ``context`` (a grpc ServicerContext, or
    None), UNKNOWN when ``error`` escaped without one, else OK. A server stream closed before
    its end (GeneratorExit: its reader stopped) is DEADLINE_EXCEEDED when the call's deadline
    has passed, else CANCELLED (the caller is gone)."""
    code = context.code() if hasattr(context, "code") else None
    if error is not None and code in (None, _OK):
        if isinstance(error, GeneratorExit):
            left = context.time_remaining() if hasattr(context, "time_remaining") else None
            return grpc.StatusCode.DEADLINE_EXCEEDED if left is not None and left <= 0 else grpc.StatusCode.CANCELLED
        return grpc.StatusCode.UNKNOWN
    return code or _OK


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class _Undecodable:
    """What a guarded deserializer returns for bytes that are not the request message."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _reject(request, context) -> None:
    """Abort ``context`` with INVALID_ARGUMENT when ``request`` is undecodable; else return."""
    if isinstance(request, _Undecodable):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"the request is not a valid {request.type_name} message (malformed protobuf bytes)")


def decode_guard(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` answering INVALID_ARGUMENT for request bytes its deserializer cannot read.

    grpc itself answers such bytes with INTERNAL ("Exception deserializing request!") and logs
    an ERROR with a traceback for each one, so any caller could fill the error log. Here the
    deserializer returns a marker instead of raising, and the call aborts before the method
    runs (for a streaming request, when the bad message is reached). Returns ``handler``
    unchanged when it has no request deserializer.
    """
    decode = handler.request_deserializer
    if decode is None:
        return handler
    owner = getattr(decode, "__self__", None)
    type_name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "") or "request"

    def safe(data: bytes):
        try:
            return decode(data)
        except Exception:  # noqa: BLE001 - DecodeError, or any other failure to read the caller's bytes
            return _Undecodable(type_name)

    if not handler.request_streaming:
        inner = handler.unary_unary or handler.unary_stream

        def unary(request, context):
            _reject(request, context)
            return inner(request, context)

        factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.unary_stream_rpc_method_handler
        return factory(unary, safe, handler.response_serializer)
    inner_stream = handler.stream_unary or handler.stream_stream

    def checked(requests, context):
        for request in requests:
            _reject(request, context)
            yield request

    def streaming(requests, context):
        return inner_stream(checked(requests, context), context)

    factory = grpc.stream_unary_rpc_method_handler if handler.stream_unary else grpc.stream_stream_rpc_method_handler
    return factory(streaming, safe, handler.response_serializer)


class CallLogInterceptor(MethodInterceptor):
    """Wraps each method's handler once; the per-call work is a timer and a code check.

    Every handler (health and reflection too) also goes through :func:`decode_guard`, so
    malformed request bytes are INVALID_ARGUMENT, logged as one warning line."""

    def __init__(self, every_call: bool | None = None, slow_ms: float | None = None, stats: RpcStats | None = None) -> None:
        super().__init__()
        self.stats = stats
        self.every_call = _env_bool("LOG_EVERY_CALL") if every_call is None else every_call
        self.slow = (float(os.environ.get("LOG_SLOW_MS", "1000")) if slow_ms is None else slow_ms) / 1000

    def _record(self, method: str, context, started: float, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        code = call_code(context, error)
        if self.stats is not None:
            self.stats.record(method, code.name, elapsed)
        if code is _OK and not self.every_call and elapsed < self.slow:
            return
        fields = {"grpc.method": method, "grpc.code": code.name, "latency_ms": round(elapsed * 1000, 3)}
        # With tracing on, the log formatter adds the current span's trace id.
        trace = "" if tracing.enabled() else trace_from_metadata(context.invocation_metadata())
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

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        handler = decode_guard(handler)
        if method.startswith(("/grpc.health.", "/grpc.reflection.")):
            return handler
        record = self._record

        def unary(inner):
            def behaviour(request, context):
                started = time.perf_counter()
                try:
                    response = inner(request, context)
                except BaseException as exc:
                    record(method, context, started, exc)
                    raise
                record(method, context, started, None)
                return response

            return behaviour

        def stream(inner):
            def behaviour(request, context):
                started = time.perf_counter()
                try:
                    yield from inner(request, context)
                except BaseException as exc:
                    record(method, context, started, exc)
                    raise
                record(method, context, started, None)

            return behaviour

        return rewrap(handler, unary, stream)


HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_PREFIX = "/grpc.health."


def around(handler: grpc.RpcMethodHandler, guard) -> grpc.RpcMethodHandler:
    """``handler`` with each call run inside ``guard(context, streaming)``, a context manager
    (entered when a worker starts the call, left when its last response is sent). Used by
    scaffold_runtime.tracing for its spans."""
    is_stream = handler.request_streaming or handler.response_streaming

    def unary(inner):
        def behaviour(request, context):
            with guard(context, is_stream):
                return inner(request, context)

        return behaviour

    def stream(inner):
        def behaviour(request, context):
            with guard(context, is_stream):
                yield from inner(request, context)

        return behaviour

    return rewrap(handler, unary, stream)


class Admission(MethodInterceptor):
    """Our own limit on calls in flight, instead of grpc's ``maximum_concurrent_rpcs``.

    - At most ``max_calls`` calls run at once, of which at most ``max_streams`` are streaming
      calls (reflection, health Watch, your streams); beyond that a call gets RESOURCE_EXHAUSTED
      at once. ``max_calls`` is below the worker count, so a worker is always free for
      health checks and for those refusals: a saturated instance still answers its probes.
    - Health Check is never limited nor counted.
    - ``drain()`` refuses new calls with UNAVAILABLE and waits for the admitted ones, so a call
      accepted before SIGTERM ends with its own result, not CANCELLED.
    """

    def __init__(self, max_calls: int, max_streams: int) -> None:
        if not 1 <= max_streams <= max_calls:
            raise RuntimeError(f"the streaming call limit ({max_streams}) must be between 1 and the call limit ({max_calls})")
        super().__init__()
        self.max_calls = max_calls
        self.max_streams = max_streams
        self.calls = 0  # admitted calls in flight, streams included (health Watch excluded)
        self.streams = 0
        self._watches = 0
        self.draining = False
        self.last_arrival = 0.0  # monotonic time of the latest call to arrive
        self._lock = threading.Lock()  # a plain lock: taken twice on every call
        self._cond = threading.Condition(self._lock)  # drain() waits on it

    def intercept_service(self, continuation, handler_call_details):
        self.last_arrival = time.monotonic()
        return super().intercept_service(continuation, handler_call_details)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` with each call admitted when a worker starts it (or refused: admit
        aborts) and released when its last response is sent. Plain functions and one lock,
        not a context-manager object per call: this runs on every call (bench/server.py)."""
        if method == HEALTH_CHECK:
            return handler
        admit, release = self._admit, self._release
        health = method.startswith(HEALTH_PREFIX)
        is_stream = handler.request_streaming or handler.response_streaming

        def unary(inner):
            def behaviour(request, context):
                admit(context, is_stream, health)
                try:
                    return inner(request, context)
                finally:
                    release(is_stream, health)

            return behaviour

        def stream(inner):
            def behaviour(request, context):
                admit(context, is_stream, health)
                try:
                    yield from inner(request, context)
                finally:
                    release(is_stream, health)

            return behaviour

        return rewrap(handler, unary, stream)

    def _admit(self, context, streaming: bool, health: bool) -> None:
        with self._lock:
            if self.draining and not health:
                refusal = (grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry")
            elif self.calls >= self.max_calls or (streaming and self.streams >= self.max_streams):
                refusal = (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls in flight; retry later")
            else:
                refusal = None
                self.calls += 1
                self.streams += streaming
                self._watches += health
        if refusal is not None:
            context.abort(*refusal)

    def _release(self, streaming: bool, health: bool) -> None:
        with self._lock:
            self.calls -= 1
            self.streams -= streaming
            self._watches -= health
            if self.draining:  # only drain() waits on the condition; draining is set under the lock
                self._cond.notify_all()

    def drain(self, timeout: float, quiet: float = 0.3, quiet_wait: float = 1.0) -> bool:
        """Refuse new calls (UNAVAILABLE) and wait up to ``timeout`` s for the admitted ones
        other than health Watch streams; then up to ``quiet_wait`` s more for ``quiet`` s
        without a new call (callers have seen their refusals: a call that reaches grpc just
        as it stops could end CANCELLED). Returns whether the admitted calls all finished."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self.draining = True
            while self.calls - self._watches > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        quiet_until = min(deadline, time.monotonic() + quiet_wait)
        while (wait := min(quiet - (time.monotonic() - self.last_arrival), quiet_until - time.monotonic())) > 0:
            time.sleep(wait)
        return True
