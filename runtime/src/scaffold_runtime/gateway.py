"""HTTP/JSON to gRPC, from the proto's google.api.http rules (grpc-gateway's model, in Python).

Each route binds path variables, query parameters and the body into the request message,
calls the method, and answers in the proto3 JSON mapping (lowerCamel names). Two modes:

- in-process (GRPC_TARGET unset; a neuron's gateway.py hands over its server.py's services):
  the gateway process hosts the neuron's servicers itself and calls each method directly, no
  gRPC hop, through the same interceptors the gRPC server applies (tracing, admission limits:
  RESOURCE_EXHAUSTED -> 429, AUTH_MODE, the call log and statistics) in a pool of
  GRPC_MAX_WORKERS threads (scaffold_runtime.inprocess). It needs what the server needs:
  Firestore settings, PAGE_TOKEN_KEY, AUTH_*, the DEP_* settings of the neurons it calls. On
  SIGTERM the admitted calls finish, then it exits.
- proxy (GRPC_TARGET set): each call goes over gRPC to that server.

Both render a failed call alike. gRPC status codes map onto HTTP status codes with a JSON error body like Google
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
- GRPC_TARGET (proxy mode; unset: in-process), GRPC_TARGET_TLS, GRPC_AUDIENCE (Cloud Run ID
  token audience of the gRPC service, proxy mode).
- GATEWAY_MAX_BODY_BYTES: largest request body; default GRPC_MAX_RECEIVE_BYTES, else 4 MiB.
  A larger Content-Length is refused with 413 before the body is read; a chunked body is cut
  off with 413 as soon as it passes the limit.
- GATEWAY_HEADER_TIMEOUT_SECONDS (10): a connection that has not sent a complete request head
  within this time (of connecting or of its previous response) is closed.
- GATEWAY_BODY_TIMEOUT_SECONDS (30): a body not received in full within this time gets 408.
- GATEWAY_CALL_TIMEOUT_SECONDS (60) and GATEWAY_STREAM_TIMEOUT_SECONDS (3600): deadlines of
  unary and server-streaming calls (``context.time_remaining()`` in-process).
- TRACING, TRACE_SAMPLE_RATIO: a span per request (scaffold_runtime.tracing), whose context
  the call carries as traceparent and x-cloud-trace-context.
- CORS_ALLOWED_ORIGINS: comma-separated origins allowed to call from a browser (``*`` for any;
  default none: no CORS headers at all). CORS_ALLOWED_HEADERS adds request headers to the
  default list (authorization, content-type, x-api-key, traceparent, tracestate,
  x-cloud-trace-context, grpc-metadata-*); CORS_MAX_AGE_SECONDS (600) is the preflight cache.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import gc
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_to_bytes

import grpc
from google.protobuf import json_format

from scaffold_runtime import tracing
from scaffold_runtime.inprocess import CallError, InProcess

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
          details: list | tuple = ()) -> Response:
    """A JSON error answer (see error_body)."""
    body = error_body(status, message, http_code, details)
    return json_response(body, body["error"]["code"], headers)


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


_UNCAUGHT = ("Exception calling application", "Calling application raised unprintable")


def rpc_error(exc) -> tuple[str, str]:
    """(status, message) of a failed call (a grpc.aio.AioRpcError, or an in-process CallError):
    the gateway's own connection failures name no address, and an exception that escaped a
    servicer is INTERNAL with no text of it (grpcio says UNKNOWN and quotes the exception)."""
    status, details = exc.code().name, exc.details() or exc.code().name.lower()
    if status == "UNKNOWN":
        return "INTERNAL", "internal error"
    if details.startswith(_UNCAUGHT):  # a code the servicer set, then an exception
        return status, status.lower()
    if status in ("UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED") and _ADDRESS.search(details):
        details = "the service is unavailable; try again later" if status == "UNAVAILABLE" else status.lower()
    return status, details


def _set_path(data: dict, path: str, value, what: str) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise HttpError("INVALID_ARGUMENT", f"{what} {path!r} needs {key!r} to be a message (a JSON object)")
    data[keys[-1]] = value


def _is_repeated(field) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 6; older ones have only label
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED


def _query_value(field, values: list[str]):
    repeated = _is_repeated(field)
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


class Request:
    """What the gateway reads of one HTTP request: its ASGI scope, headers by name."""

    __slots__ = ("_query", "headers", "method", "path", "raw_headers", "scope")

    def __init__(self, scope: dict) -> None:
        self.scope, self.method, self.path = scope, scope["method"], scope["path"]
        self.raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.headers: dict[str, str] = {}  # lower-case name -> first value, like Starlette's Headers.get
        for name, value in self.raw_headers:
            self.headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        self._query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters: name -> every value, in order (blank values kept)."""
        if self._query is None:
            self._query = {}
            for key, value in parse_qsl(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
                self._query.setdefault(key, []).append(value)
        return self._query


class Response:
    """An answer: status, headers (lower-case names), and a body or an async iterator of chunks."""

    __slots__ = ("body", "chunks", "headers", "status_code")

    def __init__(self, status_code: int, body: bytes = b"", headers: dict | None = None,
                 content_type: str | None = None, chunks=None) -> None:
        self.status_code, self.body, self.chunks = status_code, body, chunks
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        if content_type:
            self.headers["content-type"] = content_type
        if chunks is None and status_code != 204 and status_code >= 200:
            self.headers["content-length"] = str(len(body))

    def start(self) -> dict:
        """The ASGI ``http.response.start`` message."""
        return {"type": "http.response.start", "status": self.status_code,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]}


_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def json_response(content, status_code: int = 200, headers: dict | None = None) -> Response:
    """``content`` as compact UTF-8 JSON (what Starlette's JSONResponse sent)."""
    return Response(status_code, _JSON.encode(content).encode("utf-8"), headers, "application/json")


async def read_body(receive, limit: int, timeout: float) -> bytes:
    """The whole body from ASGI ``receive``. Raises HttpError 413 past ``limit`` bytes, 408 after
    ``timeout`` seconds, and ClientGone if the client disconnects first."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise HttpError("RESOURCE_EXHAUSTED", f"the request body is larger than {limit} bytes", 413)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise HttpError("DEADLINE_EXCEEDED", f"the request body did not arrive within {timeout:g} s", 408) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class ClientGone(Exception):
    """The client closed the connection before its request was read."""


def build_request(rule: Rule, raw: bytes, query: dict[str, list[str]], variables: dict[str, str]):
    """The request message from the body, query parameters (name -> values) and path variables.
    Raises HttpError."""
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
        for key in sorted(query):
            path, field_ = _resolve(rule.request.DESCRIPTOR, key)
            if field_ is None:
                raise HttpError("INVALID_ARGUMENT", f"unknown query parameter {key!r}")
            _set_path(data, path, _query_value(field_, query[key]), "query parameter")
    for path, value in variables.items():
        _set_path(data, path, value, "path variable")
    message = rule.request()
    try:
        json_format.ParseDict(data, message)
    except RecursionError:
        raise HttpError("INVALID_ARGUMENT", "cannot read the request: it nests too deeply") from None
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise HttpError("INVALID_ARGUMENT", parse_problem(str(exc), rule.request.DESCRIPTOR)) from None
    return message


_UNKNOWN_FIELD = re.compile(r'has no field named "(.{0,80}?)" at "(\w+)"')
_FAILED_FIELD = re.compile(r"Failed to parse (\w+) field")
_WELL_KNOWN = {
    "google.protobuf.Timestamp": 'an RFC 3339 time such as "2024-05-01T12:00:00Z"',
    "google.protobuf.Duration": 'a duration such as "3.5s"',
    "google.protobuf.FieldMask": 'a comma-separated string of field names such as "displayName,author"',
    "google.protobuf.Struct": "a JSON object",
    "google.protobuf.ListValue": "a JSON array",
}
_T = json_format.descriptor.FieldDescriptor
_SCALARS = {_T.TYPE_STRING: "a string", _T.TYPE_BYTES: "a base64 string", _T.TYPE_BOOL: "true or false",
            _T.TYPE_DOUBLE: "a number", _T.TYPE_FLOAT: "a number"}


def _expected(fd, element: bool = False) -> str:
    """What JSON field ``fd`` takes, in words (``element``: one item of a repeated field)."""
    if not element and fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        return "a JSON object (a map)"
    if not element and _is_repeated(fd):
        return f"a JSON array, each item {_expected(fd, element=True)}"
    if fd.enum_type is not None:
        names = [v.name for v in fd.enum_type.values]
        return "one of " + ", ".join(names[:8]) + (", …" if len(names) > 8 else "")
    if fd.message_type is not None:
        full = fd.message_type.full_name
        if full in _WELL_KNOWN:
            return _WELL_KNOWN[full]
        if full.startswith("google.protobuf.") and full.endswith("Value") and "value" in fd.message_type.fields_by_name:
            return _expected(fd.message_type.fields_by_name["value"])  # wrappers: the wrapped scalar
        return f"a JSON object ({fd.message_type.name})"
    if fd.type in _SCALARS:
        return _SCALARS[fd.type]
    unsigned = fd.type in (_T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_FIXED32, _T.TYPE_FIXED64)
    bits = 64 if fd.type in (_T.TYPE_INT64, _T.TYPE_UINT64, _T.TYPE_SINT64, _T.TYPE_FIXED64, _T.TYPE_SFIXED64) else 32
    return f"an integer ({'unsigned, ' if unsigned else ''}{bits}-bit)"


def _find_field(descriptor, name: str, depth: int = 4):
    """A field called ``name`` (proto or JSON name) in ``descriptor`` or its nested messages,
    breadth first, at most ``depth`` levels down; None if there is none."""
    level, seen = [descriptor], set()
    for _ in range(depth):
        following = []
        for desc in level:
            if desc.full_name in seen:
                continue
            seen.add(desc.full_name)
            for f in desc.fields:
                if name in (f.name, f.json_name):
                    return f
                if f.message_type is not None:
                    following.append(f.message_type)
        level = following
    return None


def parse_problem(text: str, descriptor) -> str:
    """A message for a request JSON that does not fit ``descriptor``, from protobuf's ParseError
    ``text``: the field and what it takes, never Python's own wording or the list of fields."""
    m = _UNKNOWN_FIELD.search(text)
    if m:
        return f"cannot read the request: {m.group(2)} has no field {json.dumps(m.group(1))}"
    names = _FAILED_FIELD.findall(text)
    path = ".".join(names)
    _proto_path, fd = _resolve(descriptor, path) if path else (None, None)
    if fd is None and names:  # protobuf names only the innermost field of some nested values
        fd = _find_field(descriptor, names[-1])
        path = names[-1]
    if fd is None:
        return f"cannot read the request: it does not fit {descriptor.name} (check field names and value types)"
    if "out of range" in text.lower():
        return f"cannot read the request: {path} is out of range: it takes {_expected(fd)}"
    return f"cannot read the request: {path} takes {_expected(fd)}"


def metadata_from(request: Request) -> list[tuple[str, str | bytes]]:
    """gRPC metadata from the request's headers (see the module docstring). Raises HttpError
    for a header that cannot be metadata: an empty or invalid key, a value that is not printable
    ASCII, a ``-bin`` value that is not base64."""
    pairs: list[tuple[str, str | bytes]] = []
    once: set[str] = set()
    raw = request.raw_headers
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


class Channel:
    """The proxy upstream: each call goes over a grpc.aio channel to ``target`` (TLS with
    GRPC_TARGET_TLS; on Cloud Run, the gateway's own ID token for GRPC_AUDIENCE). Calls raise
    grpc.aio.AioRpcError."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.tls = os.environ.get("GRPC_TARGET_TLS", "").lower() in ("1", "true", "yes")
        self.audience = os.environ.get("GRPC_AUDIENCE", "")
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict = {}
        self._token = ("", 0.0)

    def _callable(self, rule: Rule):
        """The rule's unary-unary or unary-stream callable, made once per channel."""
        if self._channel is None:
            self._channel = (grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials()) if self.tls
                             else grpc.aio.insecure_channel(self.target))
            self._calls = {}
        key = id(rule)  # rules live as long as the app (the router holds them)
        call = self._calls.get(key)
        if call is None:
            make = self._channel.unary_stream if rule.kind == "unary_stream" else self._channel.unary_unary
            call = self._calls[key] = make(rule.method, request_serializer=rule.request.SerializeToString,
                                           response_deserializer=rule.response.FromString)
        return call

    def _identity(self) -> list[tuple[str, str]]:
        """On Cloud Run: the gateway's ID token for a private gRPC service, sent as
        X-Serverless-Authorization so the caller's Authorization header passes through."""
        if not self.audience:
            return []
        token, expires = self._token
        if time.time() > expires - 300:
            import google.auth.transport.requests
            from google.oauth2 import id_token

            token = id_token.fetch_id_token(google.auth.transport.requests.Request(), self.audience)
            self._token = (token, time.time() + 3000)
        return [("x-serverless-authorization", f"Bearer {token}")]

    async def unary(self, rule: Rule, message, metadata: list, timeout: float, peer: str = "", receive=None):
        """The response; raises grpc.aio.AioRpcError."""
        return await self._callable(rule)(message, metadata=metadata + self._identity(), timeout=timeout)

    def stream(self, rule: Rule, message, metadata: list, timeout: float, peer: str = ""):
        """A grpc.aio unary-stream call (``read()``, ``cancel()``)."""
        return self._callable(rule)(message, metadata=metadata + self._identity(), timeout=timeout)

    def start(self) -> None:
        return None

    async def aclose(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()


def mode() -> str:
    """"proxy" when GRPC_TARGET is set, else "in-process"."""
    return "proxy" if os.environ.get("GRPC_TARGET") else "in-process"


def create_app(rules: list[Rule], target: str | None = None, wiring=None, drain_grace: float | None = None):
    """The gateway as a plain ASGI app (HTTP and lifespan).

    Upstream: with ``target`` or GRPC_TARGET set, a gRPC channel to it (proxy mode); else, when
    ``wiring`` is given (a :class:`scaffold_runtime.server.Wiring`, or a callable making one),
    the neuron's servicers in this process (scaffold_runtime.inprocess); else 127.0.0.1:8080.
    Its lifespan's startup warms Firestore (in-process, up to FIRESTORE_WARMUP_SECONDS); its
    shutdown closes the channel, or refuses new calls and lets admitted ones finish within
    ``drain_grace`` (SHUTDOWN_GRACE_SECONDS, 8) s. Without a lifespan, ``await app.aclose()``
    does. ``app.upstream`` is the upstream. Raises what making the wiring raises."""
    target = target or os.environ.get("GRPC_TARGET")
    if target or wiring is None:
        upstream = Channel(target or "127.0.0.1:8080")
    else:
        upstream = InProcess(wiring() if callable(wiring) else wiring)
    grace = float(os.environ.get("SHUTDOWN_GRACE_SECONDS", "8")) if drain_grace is None else drain_grace
    router = Router(rules)
    settings, cors = _settings(), Cors()
    limit, body_timeout, call_timeout = settings["limit"], settings["body_timeout"], settings["call_timeout"]
    too_large = f"the request body is larger than {limit} bytes"
    failed = (grpc.aio.AioRpcError, CallError)

    async def stream(rule: Rule, message, metadata, peer: str) -> Response:
        """A server-streaming call as newline-delimited JSON; an error before the first message
        is an ordinary error answer."""
        try:
            call = upstream.stream(rule, message, metadata, settings["stream_timeout"], peer)
            first = await call.read()
        except failed as exc:
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
            except failed as exc:
                yield line(error_body(*rpc_error(exc), details=rpc_details(exc)))
            finally:
                call.cancel()

        return Response(200, headers={"content-type": "application/x-ndjson"}, chunks=lines())

    async def handle(request: Request, receive) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:  # before reading, routing or credentials
            return error("RESOURCE_EXHAUSTED", too_large, 413)
        raw_path = request.scope.get("raw_path")
        matches = router.lookup(raw_path.decode("latin-1") if raw_path else request.path)
        if not matches:
            return error("NOT_FOUND", f"no route for {request.method} {request.path}")
        method = request.method
        match = next(((rule, v) for rule, v in matches if rule.verb.upper() == method), None)
        if match is None or method == "OPTIONS":
            methods = sorted({rule.verb.upper() for rule, _ in matches}, key=VERBS.index)
            if method == "OPTIONS":
                return cors.preflight(request, methods)
            return error("UNIMPLEMENTED", f"{method} is not supported on {request.path}", 405,
                         {"Allow": ", ".join([*methods, "OPTIONS"])})
        rule, variables = match
        if rule.kind in STREAMING:
            name = rule.method.rsplit("/", 1)[-1]
            return error("UNIMPLEMENTED", f"{name} is a {STREAMING[rule.kind]} method: the HTTP/JSON gateway serves "
                                          "unary and server-streaming methods only; call it over gRPC")
        metadata = metadata_from(request)
        raw = await read_body(receive, limit, body_timeout) if rule.body else b""
        message = build_request(rule, raw, request.query if rule.body != "*" else {}, variables)
        metadata = tracing.propagate(metadata)  # tracing on: this request's span
        client = request.scope.get("client")
        peer = (f"ipv6:[{client[0]}]:{client[1]}" if ":" in client[0] else f"ipv4:{client[0]}:{client[1]}") if client else ""
        if rule.kind == "unary_stream":
            return await stream(rule, message, metadata, peer)
        try:
            response = await upstream.unary(rule, message, metadata, call_timeout, peer, receive)
        except failed as exc:
            return error(*rpc_error(exc), details=rpc_details(exc))
        if rule.response_body:
            response = getattr(response, rule.response_body)
        return json_response(json_format.MessageToDict(response))

    async def dispatch(request: Request, receive) -> Response | None:
        """The answer to ``request``; None when the client left before sending its body."""
        try:
            response = await handle(request, receive)
        except HttpError as exc:
            response = error(exc.status, exc.message, exc.http_code)
        except ClientGone:
            return None
        except Exception:
            log.exception("gateway error on %s %s", request.method, request.path)
            response = error("INTERNAL", "internal error")
        if request.method != "OPTIONS" and cors.origins:
            response.headers.update((k.lower(), v) for k, v in cors.headers_for(request).items())
        return response

    async def traced(request: Request, receive) -> Response | None:
        """dispatch() inside a span for the request (TRACING; see scaffold_runtime.tracing)."""
        if not tracing.enabled():
            return await dispatch(request, receive)
        with tracing.http_span(request.method, request.path, request.headers.get) as span:
            response = await dispatch(request, receive)
            tracing.http_status(span, response.status_code if response is not None else 499)
        return response

    async def send_chunks(response: Response, receive, send) -> None:
        """A streamed body, chunk by chunk; stops the stream when the client disconnects."""
        task, gone = asyncio.current_task(), asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            task.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send(response.start())
            async for chunk in response.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not gone.is_set() or task.cancelling() > 1:
                raise
            task.uncancel()  # the client left: nothing more to send
        finally:
            watcher.cancel()
            await response.chunks.aclose()

    async def aclose() -> None:
        """Close the gRPC channel, or drain the in-process calls (the lifespan's shutdown does;
        for callers without a lifespan)."""
        if isinstance(upstream, Channel):
            await upstream.aclose()
        else:
            await asyncio.to_thread(upstream.drain, grace)

    async def startup() -> None:
        """In-process: Firestore warmed up (waiting at most FIRESTORE_WARMUP_SECONDS) and timers started."""
        warming = upstream.start()
        if warming is not None:
            await asyncio.to_thread(warming.join, float(os.environ.get("FIRESTORE_WARMUP_SECONDS", "3") or 0))

    async def lifespan(receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":  # websockets: not served
            return
        response = await traced(Request(scope), receive)
        if response is None:
            return
        if response.chunks is not None:
            return await send_chunks(response, receive, send)
        await send(response.start())
        await send({"type": "http.response.body", "body": response.body})

    app.aclose, app.upstream = aclose, upstream
    return app


class _HeadDeadline:
    """Mixed into a uvicorn HTTP protocol: closes a connection that has not sent a whole request
    head within ``seconds`` of connecting or of its previous response (slow-header clients), or
    that sent more than ``max_head`` bytes without completing one. The protocol says whether it
    is waiting for a request head in ``_awaiting_head()``."""

    seconds: float = 10.0
    max_head: int = 64 * 1024
    _head_timer = None
    _head_bytes = 0

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

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._awaiting_head():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._close()

    def _awaiting_head(self) -> bool:
        raise NotImplementedError

    def _arm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.seconds, self._expired)

    def _expired(self) -> None:
        if self._awaiting_head():
            self._close()

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def header_deadline_protocol(seconds: float, max_head: int = 64 * 1024) -> type:
    """uvicorn's HTTP protocol class (httptools' parser when installed, else h11's) with
    _HeadDeadline: a connection that has not sent a whole request head within ``seconds`` of
    connecting or of its previous response is closed, and so is one that sends more than
    ``max_head`` bytes of head."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        class Protocol(_HeadDeadline, HttpToolsProtocol):
            def _awaiting_head(self) -> bool:
                return self.cycle is None or self.cycle.response_complete
    except ImportError:  # no httptools: the pure-Python h11 parser
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class Protocol(_HeadDeadline, H11Protocol):  # type: ignore[no-redef]
            def _awaiting_head(self) -> bool:
                return self.conn.their_state is h11.IDLE

    Protocol.seconds, Protocol.max_head = seconds, max_head
    return Protocol


def serve(rules: list[Rule], wiring=None) -> None:
    """Run the gateway with uvicorn on $HOST:$PORT until SIGTERM/SIGINT; exits 2 with one log
    line on a bad setting. GRPC_TARGET set: proxy to it. Unset, with ``wiring`` (a callable
    making the neuron's :class:`scaffold_runtime.server.Wiring`, e.g. its server.py's
    ``wiring``): in-process, the servicers served here; a stop request (deps.request_shutdown,
    SERVER_MAX_LIFETIME) stops the gateway as SIGTERM does, admitted calls finishing first."""
    import signal
    import threading

    import uvicorn

    from scaffold_runtime import logs
    from scaffold_runtime.server import StartupError, check_page_token_key

    logs.setup()
    in_process = wiring is not None and mode() == "in-process"
    stop_requested = threading.Event()
    try:
        tracing.setup(os.environ.get("K_SERVICE", "gateway"))
        if in_process:
            made = wiring(stop_requested=stop_requested)
            if made.page_token_key:
                check_page_token_key()
            app = create_app(rules, wiring=made)
        else:
            app = create_app(rules)
    except (StartupError, ValueError, RuntimeError) as exc:  # a bad setting: say which, no traceback
        log.critical("cannot start: %s", exc)
        raise SystemExit(2) from None
    port = int(os.environ.get("PORT", "8081"))
    host = os.environ.get("HOST", "0.0.0.0")  # a container serves on every interface
    upstream = "its services in-process" if in_process else os.environ.get("GRPC_TARGET", "127.0.0.1:8080")
    log.info("gateway listening on port %d, calling %s", port, upstream)
    if in_process:
        def stop_when_requested() -> None:  # a servicer's request_shutdown stops us as SIGTERM does
            stop_requested.wait()
            if not app.upstream.draining:  # else: the lifespan's shutdown (after a signal) is draining
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=stop_when_requested, name="stop-watch", daemon=True).start()
    protocol = header_deadline_protocol(float(os.environ.get("GATEWAY_HEADER_TIMEOUT_SECONDS", "10")))
    gc.freeze()  # start-up objects out of the cyclic collector's scans, as the gRPC server does
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=8,
                http=protocol, loop="auto", h11_max_incomplete_event_size=64 * 1024,
                access_log=False, proxy_headers=False, server_header=False)  # nothing reads them: less work per call
