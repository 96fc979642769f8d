"""HTTP/JSON to gRPC, from the proto's google.api.http rules (grpc-gateway's model, in Python).

Each route binds path variables, query parameters and the body into the request message,
calls the gRPC server at GRPC_TARGET, and answers in the proto3 JSON mapping (lowerCamel
names). gRPC status codes map onto HTTP status codes with a JSON error body like Google
APIs return: ``{"error": {"code", "message", "status"}}``, for every error.

Paths follow google.api.http's grammar (``/v1/{name=shelves/*}/books/*:verb``): the ``:verb``
is split off the last segment first, ``*`` matches one segment, ``**`` the rest, and when
several rules match, the most specific wins (a literal segment beats a variable). Server-
streaming methods answer newline-delimited ``{"result": {...}}`` objects (and an
``{"error": {...}}`` object if the stream fails mid-way); client- and bidi-streaming methods
answer 501.

Metadata: Authorization, X-Api-Key and trace headers are forwarded once each, and so is any
header named ``grpc-metadata-<key>`` unless the key is reserved or hop-by-hop (``grpc-*``,
``x-serverless-authorization``, ``connection``, ``te``, ``host``, ``content-length``,
``content-type``, ``user-agent``, ``transfer-encoding``, ``keep-alive``, ``upgrade``,
``proxy-*``) or a credential already sent. ``-bin`` keys take padded standard base64 values (as grpc-gateway reads them).

Settings (environment):
- GRPC_TARGET (127.0.0.1:8080), GRPC_TARGET_TLS, GRPC_AUDIENCE (Cloud Run ID token audience).
- GATEWAY_MAX_BODY_BYTES: largest request body; default GRPC_MAX_RECEIVE_BYTES, else 4 MiB.
  A larger Content-Length is refused with 413 before the body is read; a chunked body is cut
  off with 413 as soon as it passes the limit.
- GATEWAY_HEADER_TIMEOUT_SECONDS (10): a connection that has not sent a complete request head
  within this time (of connecting or of its previous response) is closed.
- GATEWAY_BODY_TIMEOUT_SECONDS (30): a body not received in full within this time gets 408.
- GATEWAY_CALL_TIMEOUT_SECONDS (60) and GATEWAY_STREAM_TIMEOUT_SECONDS (3600): gRPC deadlines
  of unary and server-streaming calls.
- TRACING, TRACE_SAMPLE_RATIO: a span per request (scaffold_runtime.tracing), whose context
  the gRPC call carries as traceparent and x-cloud-trace-context.
- CORS_ALLOWED_ORIGINS: comma-separated origins allowed to call from a browser (``*`` for any;
  default none: no CORS headers at all). CORS_ALLOWED_HEADERS adds request headers to the
  default list (authorization, content-type, x-api-key, traceparent, tracestate,
  x-cloud-trace-context, grpc-metadata-*); CORS_MAX_AGE_SECONDS (600) is the preflight cache.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

import grpc
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from scaffold_runtime import tracing

log = logging.getLogger("gateway")

# https://cloud.google.com/apis/design/errors#handling_errors
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}
VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FORWARDED = ("authorization", "x-api-key", "x-cloud-trace-context", "traceparent", "tracestate")
RESERVED = frozenset({"x-serverless-authorization", "connection", "te", "host", "content-length", "content-type",
                      "user-agent", "transfer-encoding", "keep-alive", "upgrade"})
RESERVED_PREFIXES = ("grpc-", "proxy-", ":")
CORS_HEADERS = ("authorization", "content-type", "x-api-key", "traceparent", "tracestate", "x-cloud-trace-context")
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+\Z")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*\Z")
_ADDRESS = re.compile(r"ipv[46]:|unix:|\d+\.\d+\.\d+\.\d+:\d+|\[[0-9a-f:]+\]")


@dataclass(frozen=True)
class Rule:
    verb: str  # get, post, put, patch, delete
    path: str  # /v1/{name=books/*}
    body: str  # "", "*" or a field
    response_body: str
    method: str  # /pkg.Service/Method
    request: type
    response: type
    kind: str = "unary_unary"  # unary_stream, stream_unary, stream_stream


# Path templates (google/api/http.proto):
#   Template = "/" Segments [ Verb ] ;  Segments = Segment { "/" Segment } ;
#   Segment  = "*" | "**" | LITERAL | Variable ;  Variable = "{" FieldPath [ "=" Segments ] "}" ;
#   Verb     = ":" LITERAL ;
LITERAL, ONE, REST = 0, 1, 2  # segment ops; the order is also their precedence


@dataclass(frozen=True)
class Template:
    """A compiled path template: one op per segment, the verb, and the variables' op spans."""

    ops: tuple[tuple[int, str], ...]  # (LITERAL, text) | (ONE, "") | (REST, "")
    verb: str
    variables: tuple[tuple[str, int, int], ...]  # (field path, first op, end op)
    rank: tuple = field(default=(), compare=False)  # sorts the most specific template first

    def match(self, segments: list[str], verb: str) -> dict[str, str] | None:
        """The variables' values if ``segments`` (percent-encoded, verb split off) match, else None."""
        if verb != self.verb:
            return None
        rest = next((i for i, (kind, _) in enumerate(self.ops) if kind == REST), None)
        if rest is None:
            if len(segments) != len(self.ops):
                return None
            spans = [(i, i + 1) for i in range(len(self.ops))]
        else:
            extra = len(segments) - len(self.ops)  # ** takes extra + 1 segments (at least one)
            if extra < 0:
                return None
            spans = [(i, i + 1) if i < rest else (rest, rest + extra + 1) if i == rest else (i + extra, i + extra + 1)
                     for i in range(len(self.ops))]
        for (kind, text), (a, b) in zip(self.ops, spans):
            if kind == LITERAL and (b - a != 1 or _decode(segments[a]) != text):
                return None
            if kind != LITERAL and not all(segments[a:b]):
                return None
        values = {}
        for name, first, end in self.variables:
            a, b = spans[first][0], spans[end - 1][1]
            if b - a == 1 and self.ops[first][0] != REST:
                values[name] = _decode(segments[a])
            else:  # a multi-segment value keeps an encoded "/" encoded, like grpc-gateway
                values[name] = "/".join(_decode(s.replace("%2F", "%252F").replace("%2f", "%252f")) for s in segments[a:b])
        return values


def _decode(segment: str) -> str:
    """A percent-decoded path segment. Raises HttpError for bytes that are not UTF-8."""
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError("INVALID_ARGUMENT", "the path is not valid percent-encoded UTF-8") from None


def _op(text: str) -> tuple[int, str]:
    if text == "*":
        return ONE, ""
    if text == "**":
        return REST, ""
    if not text or any(c in text for c in "{}*="):
        raise ValueError(f"bad path segment {text!r}")
    return LITERAL, text


def parse_template(template: str) -> Template:
    """Compile a google.api.http path template. Raises ValueError when it breaks the grammar."""
    if not template.startswith("/") or template == "/":
        raise ValueError(f"a path template starts with '/' and has a segment: {template!r}")
    body, verb = template[1:], ""
    colon = body.rfind(":")  # the verb follows the last ':', if that is past the last '/' and '}'
    if colon > max(body.rfind("/"), body.rfind("}")):
        body, verb = body[:colon], body[colon + 1:]
        if not verb:
            raise ValueError(f"empty verb in {template!r}")
    parts, depth, current = [], 0, ""
    for c in body:
        if c == "/" and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += (c == "{") - (c == "}")
        if depth not in (0, 1):
            raise ValueError(f"unbalanced braces in {template!r}")
        current += c
    parts.append(current)
    ops: list[tuple[int, str]] = []
    variables = []
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            name, _, pattern = part[1:-1].partition("=")
            first = len(ops)
            ops += [_op(s) for s in (pattern or "*").split("/")]
            variables.append((name, first, len(ops)))
        else:
            ops.append(_op(part))
    if sum(kind == REST for kind, _ in ops) > 1:
        raise ValueError(f"more than one '**' in {template!r}")
    # Segment by segment, a literal beats '*' beats '**'; a template that ends beats none that goes on.
    return Template(tuple(ops), verb, tuple(variables), rank=(*(kind for kind, _ in ops), REST + 1))


class Router:
    """Rules in order of precedence: the most specific template first, then proto order."""

    def __init__(self, rules: list[Rule]) -> None:
        compiled = [(parse_template(rule.path), rule) for rule in rules]
        self.routes = sorted(compiled, key=lambda pair: pair[0].rank)

    def lookup(self, raw_path: str) -> list[tuple[Rule, dict[str, str]]]:
        """Every (rule, variables) whose template matches ``raw_path``, best first. The text
        after the last ':' of the last segment is the verb; when no template has that verb, the
        whole segment is matched as a plain segment (ids with ':')."""
        segments = raw_path[1:].split("/")
        last = segments[-1]
        colon = last.rfind(":")
        attempts = [(segments, "")]
        if colon > 0:
            attempts.insert(0, (segments[:-1] + [last[:colon]], last[colon + 1:]))
        for segs, verb in attempts:
            found = [(rule, v) for template, rule in self.routes if (v := template.match(segs, verb)) is not None]
            if found:
                return found
        return []


class HttpError(Exception):
    def __init__(self, status: str, message: str, http_code: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.http_code = status, message, http_code


def error_body(status: str, message: str, http_code: int | None = None, details: list | tuple = ()) -> dict:
    """The Google error object: {"error": {"code", "message", "status"[, "details"]}}; ``details``
    are AIP-193 details as proto3 JSON (``{"@type": "type.googleapis.com/google.rpc.ErrorInfo", ...}``)."""
    body = {"code": http_code or HTTP_STATUS.get(status, 500), "message": message, "status": status}
    if details:
        body["details"] = list(details)
    return {"error": body}


def error(status: str, message: str, http_code: int | None = None, headers: dict | None = None,
          details: list | tuple = ()) -> JSONResponse:
    body = error_body(status, message, http_code, details)
    return JSONResponse(body, status_code=body["error"]["code"], headers=headers)


def rpc_details(exc) -> list[dict]:
    """The google.rpc.Status details a failed call carried, as proto3 JSON ([] if none or unreadable)."""
    from google.rpc import error_details_pb2, status_pb2  # noqa: F401 - registers the detail types

    raw = next((v for k, v in (exc.trailing_metadata() or ()) if k == "grpc-status-details-bin"), None)
    if not raw:
        return []
    try:
        return [json_format.MessageToDict(d) for d in status_pb2.Status.FromString(raw).details]
    except Exception:  # noqa: BLE001 - unknown detail types or a damaged trailer: the body still stands
        return []


def rpc_error(exc: grpc.aio.AioRpcError) -> tuple[str, str]:
    """(status, message) of a failed call; the gateway's own connection failures name no address."""
    status, details = exc.code().name, exc.details() or exc.code().name.lower()
    if status in ("UNAVAILABLE", "UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED") and _ADDRESS.search(details):
        details = "the service is unavailable; try again later" if status == "UNAVAILABLE" else status.lower()
    return status, details


def _set_path(data: dict, path: str, value, what: str) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise HttpError("INVALID_ARGUMENT", f"{what} {path!r} needs {key!r} to be a message (a JSON object)")
    data[keys[-1]] = value


def _query_value(field, values: list[str]):
    repeated = getattr(field, "is_repeated", None)
    repeated = repeated if repeated is not None else field.label == field.LABEL_REPEATED
    if field.type == field.TYPE_BOOL:  # ?showDeleted=true: JSON wants a bool, not the string
        values = [{"true": True, "false": False}.get(v, v) for v in values]
    return values if repeated else values[-1]


def _resolve(message_descriptor, dotted: str):
    """A query key (proto or lowerCamel names, dotted for nested fields) -> (proto path, field)."""
    desc, field_, names = message_descriptor, None, []
    for part in dotted.split("."):
        if desc is None:
            return None, None
        field_ = desc.fields_by_name.get(part) or next((f for f in desc.fields if f.json_name == part), None)
        if field_ is None:
            return None, None
        names.append(field_.name)
        desc = field_.message_type
    return ".".join(names), field_


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body. Raises HttpError 413 past ``limit`` bytes, 408 after ``timeout`` seconds."""
    chunks: list[bytes] = []

    async def collect() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError("RESOURCE_EXHAUSTED", f"the request body is larger than {limit} bytes", 413)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        raise HttpError("DEADLINE_EXCEEDED", f"the request body did not arrive within {timeout:g} s", 408) from None
    return b"".join(chunks)


def build_request(rule: Rule, raw: bytes, query, variables: dict[str, str]):
    """The request message from the body, query parameters and path variables. Raises HttpError."""
    data: dict = {}
    if rule.body:
        try:
            body = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            raise HttpError("INVALID_ARGUMENT", "the request body is not valid JSON (or nests too deeply)") from None
        if rule.body == "*":
            if not isinstance(body, dict):
                raise HttpError("INVALID_ARGUMENT", "the request body must be a JSON object")
            data = body
        else:
            _path, field_ = _resolve(rule.request.DESCRIPTOR, rule.body)
            if field_ is not None and field_.message_type is not None and not isinstance(body, dict) \
                    and not field_.message_type.full_name.startswith("google.protobuf."):
                raise HttpError("INVALID_ARGUMENT", f"the request body must be a JSON object ({field_.message_type.name})")
            _set_path(data, rule.body, body, "the body field")
    if rule.body != "*":
        for key in sorted(set(query.keys())):
            path, field_ = _resolve(rule.request.DESCRIPTOR, key)
            if field_ is None:
                raise HttpError("INVALID_ARGUMENT", f"unknown query parameter {key!r}")
            _set_path(data, path, _query_value(field_, query.getlist(key)), "query parameter")
    for path, value in variables.items():
        _set_path(data, path, value, "path variable")
    message = rule.request()
    try:
        json_format.ParseDict(data, message)
    except RecursionError:
        raise HttpError("INVALID_ARGUMENT", "cannot read the request: it nests too deeply") from None
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise HttpError("INVALID_ARGUMENT", f"cannot read the request: {str(exc)[:200]}") from None
    return message


def metadata_from(request: Request) -> list[tuple[str, str | bytes]]:
    """gRPC metadata from the request's headers (see the module docstring). Raises HttpError
    for a header that cannot be metadata: an empty or invalid key, a value that is not printable
    ASCII, a ``-bin`` value that is not base64."""
    pairs: list[tuple[str, str | bytes]] = []
    once: set[str] = set()
    raw = request.headers.raw
    named = [(n.decode("latin-1"), n.decode("latin-1"), v) for n, v in raw if n.decode("latin-1") in FORWARDED]
    prefixed = [(n.decode("latin-1"), n.decode("latin-1")[len("grpc-metadata-"):], v) for n, v in raw
                if n.startswith(b"grpc-metadata-")]
    for header, key, value in named + prefixed:
        if not key:
            raise HttpError("INVALID_ARGUMENT", f"header {header!r} names no metadata key")
        if not _METADATA_KEY.match(key):
            raise HttpError("INVALID_ARGUMENT", f"header {header!r}: metadata keys use only a-z, 0-9, '-', '_' and '.'")
        if key in RESERVED or key.startswith(RESERVED_PREFIXES) or key in once:
            continue  # reserved, hop-by-hop, or a credential already forwarded
        if key.endswith("-bin"):
            try:
                pairs.append((key, base64.b64decode(value, validate=True)))
            except (binascii.Error, ValueError):
                raise HttpError("INVALID_ARGUMENT", f"header {header!r} must be padded base64 (a -bin metadata key)") from None
            continue
        if not _PRINTABLE.match(value):
            raise HttpError("INVALID_ARGUMENT", f"header {header!r} must be printable ASCII")
        pairs.append((key, value.decode("ascii")))
        if key in FORWARDED:
            once.add(key)
    return pairs


class Cors:
    """CORS_ALLOWED_ORIGINS and friends; off (no headers at all) when no origin is allowed."""

    def __init__(self) -> None:
        origins = {o.strip().rstrip("/") for o in os.environ.get("CORS_ALLOWED_ORIGINS", "").split(",") if o.strip()}
        self.origins, self.any = origins, "*" in origins
        extra = {h.strip().lower() for h in os.environ.get("CORS_ALLOWED_HEADERS", "").split(",") if h.strip()}
        self.headers = set(CORS_HEADERS) | extra
        self.max_age = str(int(os.environ.get("CORS_MAX_AGE_SECONDS", "600")))

    def origin(self, request: Request) -> str | None:
        """The request's Origin if it is allowed, else None."""
        origin = request.headers.get("origin")
        return origin if origin and self.origins and (self.any or origin.rstrip("/") in self.origins) else None

    def headers_for(self, request: Request) -> dict[str, str]:
        """Headers every answer to ``request`` carries (not preflights)."""
        if not self.origins:
            return {}
        origin = self.origin(request)
        return {"Vary": "Origin", **({"Access-Control-Allow-Origin": origin} if origin else {})}

    def preflight(self, request: Request, methods: list[str]) -> Response:
        """The answer to OPTIONS on a path whose routes take ``methods``."""
        allow = {"Allow": ", ".join([*methods, "OPTIONS"])}
        origin = self.origin(request)
        wanted = request.headers.get("access-control-request-method", "").upper()
        if origin is None or wanted not in methods:
            return Response(status_code=204, headers={**allow, **({"Vary": "Origin"} if self.origins else {})})
        asked = [h.strip().lower() for h in request.headers.get("access-control-request-headers", "").split(",") if h.strip()]
        granted = [h for h in asked if h in self.headers or (h.startswith("grpc-metadata-") and h != "grpc-metadata-")]
        return Response(status_code=204, headers={
            **allow, "Vary": "Origin", "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(methods), "Access-Control-Max-Age": self.max_age,
            **({"Access-Control-Allow-Headers": ", ".join(granted)} if granted else {}),
        })


def _settings() -> dict:
    limit = os.environ.get("GATEWAY_MAX_BODY_BYTES") or os.environ.get("GRPC_MAX_RECEIVE_BYTES") or str(4 * 1024 * 1024)
    return {
        "limit": int(limit),
        "body_timeout": float(os.environ.get("GATEWAY_BODY_TIMEOUT_SECONDS", "30")),
        "call_timeout": float(os.environ.get("GATEWAY_CALL_TIMEOUT_SECONDS", "60")),
        "stream_timeout": float(os.environ.get("GATEWAY_STREAM_TIMEOUT_SECONDS", "3600")),
    }


STREAMING = {"stream_unary": "client-streaming", "stream_stream": "bidirectional-streaming"}


def create_app(rules: list[Rule], target: str | None = None) -> Starlette:
    target = target or os.environ.get("GRPC_TARGET", "127.0.0.1:8080")
    state: dict = {}
    router = Router(rules)
    settings, cors = _settings(), Cors()

    tls = os.environ.get("GRPC_TARGET_TLS", "").lower() in ("1", "true", "yes")
    audience = os.environ.get("GRPC_AUDIENCE", "")

    def channel() -> grpc.aio.Channel:
        if "channel" not in state:
            state["channel"] = (grpc.aio.secure_channel(target, grpc.ssl_channel_credentials()) if tls
                                else grpc.aio.insecure_channel(target))
        return state["channel"]

    def own_identity() -> list[tuple[str, str]]:
        """On Cloud Run: the gateway's ID token for a private gRPC service, sent as
        X-Serverless-Authorization so the caller's Authorization header passes through."""
        if not audience:
            return []
        token, expires = state.get("token", ("", 0.0))
        if time.time() > expires - 300:
            import google.auth.transport.requests
            from google.oauth2 import id_token

            token = id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)
            state["token"] = (token, time.time() + 3000)
        return [("x-serverless-authorization", f"Bearer {token}")]

    async def stream(rule: Rule, message, metadata) -> Response:
        """A server-streaming call as newline-delimited JSON; an error before the first message
        is an ordinary error answer."""
        call = channel().unary_stream(rule.method, request_serializer=rule.request.SerializeToString,
                                      response_deserializer=rule.response.FromString)(
            message, metadata=metadata, timeout=settings["stream_timeout"])
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            return error(*rpc_error(exc), details=rpc_details(exc))

        def line(obj: dict) -> bytes:
            return (json.dumps(obj, separators=(",", ":")) + "\n").encode()

        async def lines():
            item = first
            try:
                while item is not grpc.aio.EOF:
                    yield line({"result": json_format.MessageToDict(
                        getattr(item, rule.response_body) if rule.response_body else item)})
                    item = await call.read()
            except grpc.aio.AioRpcError as exc:
                yield line(error_body(*rpc_error(exc), details=rpc_details(exc)))
            finally:
                call.cancel()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def handle(request: Request) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings["limit"]:  # before reading, routing or credentials
            return error("RESOURCE_EXHAUSTED", f"the request body is larger than {settings['limit']} bytes", 413)
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw_path.decode("latin-1")
        matches = router.lookup(path)
        methods = sorted({rule.verb.upper() for rule, _ in matches}, key=VERBS.index)
        if not matches:
            return error("NOT_FOUND", f"no route for {request.method} {request.url.path}")
        if request.method == "OPTIONS":
            return cors.preflight(request, methods)
        match = next(((rule, v) for rule, v in matches if rule.verb.upper() == request.method), None)
        if match is None:
            return error("UNIMPLEMENTED", f"{request.method} is not supported on {request.url.path}", 405,
                         {"Allow": ", ".join([*methods, "OPTIONS"])})
        rule, variables = match
        name = rule.method.rsplit("/", 1)[-1]
        if rule.kind in STREAMING:
            return error("UNIMPLEMENTED", f"{name} is a {STREAMING[rule.kind]} method: the HTTP/JSON gateway serves "
                                          "unary and server-streaming methods only; call it over gRPC")
        metadata = metadata_from(request)
        raw = await read_body(request, settings["limit"], settings["body_timeout"]) if rule.body else b""
        message = build_request(rule, raw, request.query_params, variables)
        metadata = tracing.propagate(metadata) + own_identity()  # tracing on: this request's span
        if rule.kind == "unary_stream":
            return await stream(rule, message, metadata)
        call = channel().unary_unary(rule.method, request_serializer=rule.request.SerializeToString,
                                     response_deserializer=rule.response.FromString)
        try:
            response = await call(message, metadata=metadata, timeout=settings["call_timeout"])
        except grpc.aio.AioRpcError as exc:
            return error(*rpc_error(exc), details=rpc_details(exc))
        if rule.response_body:
            response = getattr(response, rule.response_body)
        return JSONResponse(json_format.MessageToDict(response))

    async def dispatch(request: Request) -> Response:
        try:
            response = await handle(request)
        except HttpError as exc:
            response = error(exc.status, exc.message, exc.http_code)
        except Exception:
            log.exception("gateway error on %s %s", request.method, request.url.path)
            response = error("INTERNAL", "internal error")
        if request.method != "OPTIONS":
            response.headers.update(cors.headers_for(request))
        return response

    async def traced(request: Request) -> Response:
        """dispatch() inside a span for the request (TRACING; see scaffold_runtime.tracing)."""
        if not tracing.enabled():
            return await dispatch(request)
        with tracing.http_span(request.method, request.url.path, request.headers.get) as span:
            response = await dispatch(request)
            tracing.http_status(span, response.status_code)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if "channel" in state:
            await state.pop("channel").close()

    return Starlette(routes=[Route("/{path:path}", traced, methods=[*VERBS, "OPTIONS"])], lifespan=lifespan)


def header_deadline_protocol(seconds: float):
    """uvicorn's h11 protocol, closing a connection that has not sent a whole request head
    within ``seconds`` of connecting or of its previous response (slow-header clients)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Protocol(H11Protocol):
        _head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(seconds, self._expired)

        def _expired(self) -> None:
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return Protocol


def serve(rules: list[Rule]) -> None:
    import uvicorn

    from scaffold_runtime import logs

    logs.setup()
    try:
        tracing.setup(os.environ.get("K_SERVICE", "gateway"))
    except (ValueError, RuntimeError) as exc:  # a bad setting: say which, no traceback
        log.critical("cannot start: %s", exc)
        raise SystemExit(2) from None
    port = int(os.environ.get("PORT", "8081"))
    host = os.environ.get("HOST", "0.0.0.0")  # a container serves on every interface
    log.info("gateway listening on port %d, calling %s", port, os.environ.get("GRPC_TARGET", "127.0.0.1:8080"))
    protocol = header_deadline_protocol(float(os.environ.get("GATEWAY_HEADER_TIMEOUT_SECONDS", "10")))
    uvicorn.run(create_app(rules), host=host, port=port, log_level="warning", timeout_graceful_shutdown=8,
                http=protocol, h11_max_incomplete_event_size=64 * 1024)
