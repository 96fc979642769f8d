"""OpenTelemetry traces: a span per RPC served, per store call, per gateway request and per
call to another neuron, all in one trace across neurons.

Settings (environment):
- TRACING: ``off`` (the default: nothing traced, OpenTelemetry not even imported),
  ``console`` (spans as one JSON line each on stdout, for local runs) or ``cloud-trace``
  (exported in batches to Cloud Trace; the neuron's Terraform sets it, and its service
  account holds roles/cloudtrace.agent).
- TRACE_SAMPLE_RATIO (1.0): the share of new traces recorded. A call that carries a parent
  follows its parent's decision (``;o=1`` / the traceparent sampled flag), so a trace is
  recorded whole or not at all.

Context travels in both header formats, read and written alike: W3C ``traceparent``
(``00-TRACE_ID-SPAN_ID-FLAGS``, with ``tracestate``) and Google's ``x-cloud-trace-context``
(``TRACE_ID/SPAN_ID;o=1``, the span id in decimal). ``traceparent`` wins when both come.
Log lines written inside a span carry its trace id (see scaffold_runtime.logs).

Only this module imports OpenTelemetry (the ``tracing`` extra), and only once tracing is on.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import re
import sys

import grpc

from scaffold_runtime.wrapping import MethodInterceptor

MODES = ("off", "console", "cloud-trace")
TRACE_HEADERS = ("traceparent", "tracestate", "x-cloud-trace-context")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_CLOUD = re.compile(r"([0-9a-fA-F]{32})/([0-9]{1,20})(?:;\s*o=([0-9]+))?\Z")
# Codes that mean the server failed (OpenTelemetry's gRPC conventions); the others are the
# caller's mistake or an ordinary outcome (NOT_FOUND), recorded but not marked as errors.
_FAILURES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})
_UNTRACED = ("/grpc.health.", "/grpc.reflection.")

_tracer = None  # the OpenTelemetry tracer while tracing is on; None when off
_provider = None


def settings(env=os.environ) -> tuple[str, float]:
    """(mode, sample ratio) from TRACING and TRACE_SAMPLE_RATIO; raises ValueError naming the
    bad setting and what it accepts."""
    mode = env.get("TRACING", "").strip().lower() or "off"
    if mode not in MODES:
        raise ValueError(f"TRACING={env.get('TRACING')!r}: use off, console or cloud-trace")
    raw = env.get("TRACE_SAMPLE_RATIO", "").strip() or "1"
    try:
        ratio = float(raw)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"TRACE_SAMPLE_RATIO={raw!r}: use a number from 0 to 1 (the share of new traces recorded)")
    return mode, ratio


def enabled() -> bool:
    """Whether spans are being made (setup() turned tracing on)."""
    return _tracer is not None


def setup(service: str = "", *, exporter=None, mode: str | None = None, ratio: float | None = None) -> bool:
    """Turn tracing on as TRACING says (or as ``mode`` / ``ratio`` say); returns whether it is on.

    ``exporter``: an OpenTelemetry span exporter to use instead (tests: an in-memory one),
    with spans exported as they end. Each call replaces the previous set-up. ``service``
    names the process in Cloud Trace (default $K_SERVICE, Cloud Run's service name). Raises
    ValueError for a bad setting, RuntimeError when the ``tracing`` extra is not installed.
    """
    global _tracer, _provider
    env_mode, env_ratio = settings()
    mode = mode or ("console" if exporter is not None and env_mode == "off" else env_mode)
    ratio = env_ratio if ratio is None else ratio
    if mode == "off" and exporter is None:
        shutdown()
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise RuntimeError(f"TRACING={mode} needs the tracing extra: pip install 'scaffold-runtime[tracing]'") from None
    name = service or os.environ.get("K_SERVICE") or "neuron"
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)),
                              resource=Resource.create({"service.name": name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif mode == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(
            out=sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")))
    else:
        try:
            from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter
        except ImportError:
            raise RuntimeError("TRACING=cloud-trace needs opentelemetry-exporter-gcp-trace "
                               "(pip install 'scaffold-runtime[tracing]')") from None
        provider.add_span_processor(BatchSpanProcessor(CloudTraceSpanExporter(
            project_id=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)))
    shutdown()
    _provider, _tracer = provider, provider.get_tracer("scaffold_runtime")
    with contextlib.suppress(Exception):  # so code of your own can use trace.get_tracer() too
        if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":
            trace.set_tracer_provider(provider)
    return True


def shutdown() -> None:
    """Export what is pending and turn tracing off."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


# -- context in headers ----------------------------------------------------------------------
def _remote_context(get):
    """The OpenTelemetry context of the caller's span, from ``get(header)`` (traceparent first,
    then x-cloud-trace-context); None when neither is there and valid."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    parent = None
    m = _TRACEPARENT.match((get("traceparent") or "").strip().lower())
    if m and m.group(1) != "ff" and not (m.group(1) == "00" and m.group(5)):
        state = TraceState.from_header([get("tracestate")]) if get("tracestate") else None
        parent = SpanContext(int(m.group(2), 16), int(m.group(3), 16), is_remote=True,
                             trace_flags=TraceFlags(int(m.group(4), 16) & 1), trace_state=state)
    else:
        m = _CLOUD.match((get("x-cloud-trace-context") or "").strip())
        if m and int(m.group(2)) < 2**64:
            parent = SpanContext(int(m.group(1), 16), int(m.group(2)), is_remote=True,
                                 trace_flags=TraceFlags(1 if m.group(3) == "1" else 0))
    if parent is None or not parent.is_valid:
        return None
    return trace.set_span_in_context(NonRecordingSpan(parent))


def headers(span_context=None) -> list[tuple[str, str]]:
    """traceparent, tracestate (when set) and x-cloud-trace-context for ``span_context``
    (default: the current span's); empty when tracing is off or there is no span."""
    if _tracer is None:
        return []
    if span_context is None:
        from opentelemetry import trace

        span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return []
    sampled = span_context.trace_flags.sampled
    out = [("traceparent", f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(sampled):02x}")]
    if span_context.trace_state:
        out.append(("tracestate", span_context.trace_state.to_header()))
    out.append(("x-cloud-trace-context", f"{span_context.trace_id:032x}/{span_context.span_id};o={int(sampled)}"))
    return out


def propagate(metadata: list) -> list:
    """``metadata`` with the trace headers it carried replaced by the current span's (when
    tracing is on; unchanged when off, so incoming headers still pass through)."""
    own = headers()
    if not own:
        return metadata
    return [(k, v) for k, v in metadata if k not in TRACE_HEADERS] + own


def current_ids() -> tuple[str, str, bool] | None:
    """(trace id, span id, sampled) of the current span, in hex; None when off or outside a span."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    sc = trace.get_current_span().get_span_context()
    return (f"{sc.trace_id:032x}", f"{sc.span_id:016x}", sc.trace_flags.sampled) if sc.is_valid else None


# -- spans -----------------------------------------------------------------------------------
def _code_of(context, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with (as the call log records it)."""
    from scaffold_runtime.interceptor import call_code

    return call_code(context, error)


def _finish(span, code: grpc.StatusCode) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code.name in _FAILURES:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


@contextlib.contextmanager
def _span(name: str, kind: str, attributes: dict, context, parent=None):
    """A span made current for the body; it ends with the status of ``context`` (a grpc
    ServicerContext) and the body's exception, which propagates."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    span = _tracer.start_span(name, context=parent, kind=getattr(trace.SpanKind, kind), attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    error = None
    try:
        yield span
    except BaseException as exc:
        error = exc
        raise
    finally:
        otel_context.detach(token)
        _finish(span, _code_of(context, error))


def _rpc_attributes(method: str) -> dict:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class TraceInterceptor(MethodInterceptor):
    """A SERVER span per call (health and reflection excepted), child of the caller's span
    from the call's traceparent or x-cloud-trace-context metadata. Put it first, so the
    other interceptors' work (admission, auth, the call log) happens inside the span."""

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if method.startswith(_UNTRACED):
            return handler
        from scaffold_runtime.interceptor import around

        return around(handler, functools.partial(self._guard, method, _rpc_attributes(method)))

    @staticmethod
    def _guard(method: str, attributes: dict, context, streaming: bool):
        if _tracer is None:
            return contextlib.nullcontext()
        metadata = {}
        for key, value in context.invocation_metadata() or ():
            if key in TRACE_HEADERS and key not in metadata and isinstance(value, str):
                metadata[key] = value
        return _span(method.lstrip("/"), "SERVER", attributes, context, _remote_context(metadata.get))


def store_call(operation: str):
    """Decorator for a ResourceStore method ``(self, context, ...)``: a CLIENT span
    ``firestore.<operation>`` around it, with the collection and the call's resulting code."""

    def decorate(method):
        @functools.wraps(method)
        def traced(self, context, *args, **kwargs):
            if _tracer is None:
                return method(self, context, *args, **kwargs)
            attributes = {"db.system": "firestore", "db.operation.name": operation,
                          "db.collection.name": getattr(self, "collection_id", "")}
            with _span(f"firestore.{operation}", "CLIENT", attributes, context):
                return method(self, context, *args, **kwargs)

        return traced

    return decorate


@contextlib.contextmanager
def http_span(method: str, path: str, get):
    """A SERVER span for one HTTP request (``get(header)`` reads its headers), current for the
    body; yields the span (None when tracing is off). Set its status with http_status()."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    span = _tracer.start_span(f"{method} {path}", context=_remote_context(get), kind=trace.SpanKind.SERVER,
                              attributes={"http.request.method": method, "url.path": path})
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)
        span.end()


def http_status(span, status: int) -> None:
    """Record an HTTP answer's status on a span from http_span() (5xx marks it failed)."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, str(status)))


# -- calls to other neurons ------------------------------------------------------------------
class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials",
                                                    "wait_for_ready", "compression")), grpc.ClientCallDetails):
    pass


class _ClientInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """A CLIENT span per outgoing call, ended when the call ends, its context sent as
    traceparent and x-cloud-trace-context (replacing any the caller set)."""

    def _intercept(self, continuation, details, request):
        if _tracer is None:
            return continuation(details, request)
        from opentelemetry import trace

        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        span = _tracer.start_span(method.lstrip("/"), kind=trace.SpanKind.CLIENT, attributes=_rpc_attributes(method))
        metadata = [(k, v) for k, v in (details.metadata or ()) if k not in TRACE_HEADERS]
        metadata += headers(span.get_span_context())
        details = _Details(details.method, details.timeout, metadata, details.credentials,
                           getattr(details, "wait_for_ready", None), getattr(details, "compression", None))
        try:
            call = continuation(details, request)
        except BaseException:
            _finish(span, grpc.StatusCode.UNKNOWN)
            raise
        call.add_done_callback(lambda done: _finish(span, done.code() or grpc.StatusCode.OK))
        return call

    intercept_unary_unary = intercept_unary_stream = _intercept
    intercept_stream_unary = intercept_stream_stream = _intercept


def client_interceptors() -> list[grpc.UnaryUnaryClientInterceptor]:
    """Interceptors for a channel to another neuron: ``grpc.intercept_channel(channel,
    *client_interceptors())``. Each call gets a CLIENT span (child of the current span, e.g.
    the RPC being served) and carries its context to the callee; no cost but a check while
    tracing is off."""
    return [_ClientInterceptor()]
