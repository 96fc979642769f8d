"""HTTP/JSON to gRPC, from the proto's google.api.http rules (grpc-gateway's model, in Python).

Each route binds path variables, query parameters and the body into the request message,
calls the gRPC server at GRPC_TARGET, and answers in the proto3 JSON mapping (lowerCamel
names). gRPC status codes map onto HTTP status codes with a JSON error body like Google
APIs return. Credentials and trace headers are forwarded as gRPC metadata, and so is any
header named ``grpc-metadata-<key>``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass

import grpc
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("gateway")

# https://cloud.google.com/apis/design/errors#handling_errors
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}
FORWARDED = ("authorization", "x-api-key", "x-cloud-trace-context", "traceparent", "tracestate")
_VAR = re.compile(r"\{([a-zA-Z0-9_.]+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class Rule:
    verb: str  # get, post, put, patch, delete
    path: str  # /v1/{name=books/*}
    body: str  # "", "*" or a field
    response_body: str
    method: str  # /pkg.Service/Method
    request: type
    response: type


def compile_path(template: str) -> tuple[re.Pattern, list[str]]:
    """``/v1/{name=shelves/*}/books:move`` -> a regex with one group per variable."""
    fields: list[str] = []
    out, pos = "", 0
    for m in _VAR.finditer(template):
        out += re.escape(template[pos:m.start()])
        segments = (m.group(2) or "*").split("/")
        parts = ["[^/]+" if s == "*" else ".+" if s == "**" else re.escape(s) for s in segments]
        out += f"(?P<v{len(fields)}>{'/'.join(parts)})"
        fields.append(m.group(1))
        pos = m.end()
    out += re.escape(template[pos:])
    return re.compile(f"^{out}$"), fields


class HttpError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def error(status: str, message: str, http_code: int | None = None, headers: dict | None = None,
          rpc_error=None) -> JSONResponse:
    """Google's JSON error body; with ``rpc_error`` (a failed call) its AIP-193 details too:
    ``"details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", ...}]``."""
    code = http_code or HTTP_STATUS.get(status, 500)
    body = {"code": code, "message": message, "status": status}
    details = _status_details(rpc_error) if rpc_error is not None else []
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=code, headers=headers)


def _status_details(rpc_error) -> list[dict]:
    """The google.rpc.Status details of a failed call as proto3 JSON ([] if none or unreadable)."""
    from google.rpc import error_details_pb2, status_pb2  # noqa: F401 - registers the detail types

    raw = next((v for k, v in (rpc_error.trailing_metadata() or ()) if k == "grpc-status-details-bin"), None)
    if not raw:
        return []
    try:
        return [json_format.MessageToDict(d) for d in status_pb2.Status.FromString(raw).details]
    except Exception:  # noqa: BLE001 - unknown detail types or a damaged trailer: the body still stands
        return []


def _set_path(data: dict, path: str, value) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


def _query_value(field, values: list[str]):
    repeated = getattr(field, "is_repeated", None)
    repeated = repeated if repeated is not None else field.label == field.LABEL_REPEATED
    return values if repeated else values[-1]


def _resolve(message_descriptor, dotted: str):
    """A query key (proto or lowerCamel names, dotted for nested fields) -> (proto path, field)."""
    desc, field, names = message_descriptor, None, []
    for part in dotted.split("."):
        if desc is None:
            return None, None
        field = desc.fields_by_name.get(part) or next((f for f in desc.fields if f.json_name == part), None)
        if field is None:
            return None, None
        names.append(field.name)
        desc = field.message_type
    return ".".join(names), field


async def build_request(rule: Rule, request: Request, variables: dict[str, str]):
    data: dict = {}
    if rule.body:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise HttpError("INVALID_ARGUMENT", "the request body is not valid JSON") from None
        if rule.body == "*":
            if not isinstance(body, dict):
                raise HttpError("INVALID_ARGUMENT", "the request body must be a JSON object")
            data = body
        else:
            _path, field = _resolve(rule.request.DESCRIPTOR, rule.body)
            if field is not None and field.message_type is not None and not isinstance(body, dict) \
                    and not field.message_type.full_name.startswith("google.protobuf."):
                raise HttpError("INVALID_ARGUMENT", f"the request body must be a JSON object ({field.message_type.name})")
            _set_path(data, rule.body, body)
    if rule.body != "*":
        for key in set(request.query_params.keys()):
            path, field = _resolve(rule.request.DESCRIPTOR, key)
            if field is None:
                raise HttpError("INVALID_ARGUMENT", f"unknown query parameter {key!r}")
            _set_path(data, path, _query_value(field, request.query_params.getlist(key)))
    for path, value in variables.items():
        _set_path(data, path, value)
    message = rule.request()
    try:
        json_format.ParseDict(data, message)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
        raise HttpError("INVALID_ARGUMENT", f"cannot read the request: {str(exc)[:200]}") from None
    return message


def metadata_from(request: Request) -> list[tuple[str, str]]:
    pairs = [(h, request.headers[h]) for h in FORWARDED if h in request.headers]
    pairs += [(k[len("grpc-metadata-"):], v) for k, v in request.headers.items() if k.startswith("grpc-metadata-")]
    return pairs


def create_app(rules: list[Rule], target: str | None = None) -> Starlette:
    target = target or os.environ.get("GRPC_TARGET", "127.0.0.1:8080")
    state: dict = {}
    compiled = [(rule, *compile_path(rule.path)) for rule in rules]

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

    async def dispatch(request: Request) -> Response:
        path, verb = request.url.path, request.method.lower()
        allowed: set[str] = set()
        for rule, regex, fields in compiled:
            m = regex.match(path)
            if m is None:
                continue
            allowed.add(rule.verb.upper())
            if rule.verb != verb:
                continue
            try:
                message = await build_request(rule, request, {f: m.group(f"v{i}") for i, f in enumerate(fields)})
            except HttpError as exc:
                return error(exc.status, exc.message)
            call = channel().unary_unary(rule.method, request_serializer=rule.request.SerializeToString,
                                         response_deserializer=rule.response.FromString)
            try:
                response = await call(message, metadata=metadata_from(request) + own_identity(), timeout=60)
            except grpc.aio.AioRpcError as exc:
                return error(exc.code().name, exc.details() or exc.code().name.lower(), rpc_error=exc)
            if rule.response_body:
                response = getattr(response, rule.response_body)
            return JSONResponse(json_format.MessageToDict(response))
        if allowed:
            return error("UNIMPLEMENTED", f"{request.method} is not supported on {path}", 405,
                         {"Allow": ", ".join(sorted(allowed))})
        return error("NOT_FOUND", f"no route for {request.method} {path}")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if "channel" in state:
            await state.pop("channel").close()

    verbs = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", dispatch, methods=verbs)], lifespan=lifespan)


def serve(rules: list[Rule]) -> None:
    import uvicorn

    from scaffold_runtime import logs

    logs.setup()
    port = int(os.environ.get("PORT", "8081"))
    host = os.environ.get("HOST", "0.0.0.0")  # a container serves on every interface
    log.info("gateway listening on port %d, calling %s", port, os.environ.get("GRPC_TARGET", "127.0.0.1:8080"))
    uvicorn.run(create_app(rules), host=host, port=port, log_level="warning", timeout_graceful_shutdown=8)
