"""OpenAPI 3 document for a neuron's HTTP/JSON gateway, built from the view model.

Paths come from the google.api.http rules (each ``*`` of a variable's pattern becomes a path
parameter named after the collection it follows: ``{name=shelves/*/books/*}`` ->
``shelves/{shelf}/books/{book}``), schemas from the messages in proto3 JSON form: REQUIRED
fields are ``required``, OUTPUT_ONLY ones ``readOnly``, enums by name, 64-bit integers as
strings, well-known types as the JSON mapping writes them. Server-streaming methods answer
``application/x-ndjson``; client- and bidi-streaming ones, which the gateway does not serve,
are listed under ``x-grpc-only`` instead of ``paths``.
"""

from __future__ import annotations

import json
import re

from generator import schema
from generator.names import singular as singularize

_VAR = re.compile(r"\{([a-zA-Z0-9_.]+)(?:=([^}]*))?\}")
_SCALARS = {
    "double": {"type": "number", "format": "double"}, "float": {"type": "number", "format": "float"},
    "int32": {"type": "integer", "format": "int32"}, "sint32": {"type": "integer", "format": "int32"},
    "sfixed32": {"type": "integer", "format": "int32"}, "uint32": {"type": "integer", "format": "int64", "minimum": 0},
    "fixed32": {"type": "integer", "format": "int64", "minimum": 0},
    "int64": {"type": "string", "format": "int64"}, "sint64": {"type": "string", "format": "int64"},
    "sfixed64": {"type": "string", "format": "int64"}, "uint64": {"type": "string", "format": "uint64"},
    "fixed64": {"type": "string", "format": "uint64"}, "bool": {"type": "boolean"}, "string": {"type": "string"},
    "bytes": {"type": "string", "format": "byte"},
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {"type": "object", "additionalProperties": True},
    "google.protobuf.StringValue": {"type": "string"}, "google.protobuf.BytesValue": {"type": "string", "format": "byte"},
    "google.protobuf.BoolValue": {"type": "boolean"}, "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"}, "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": {"type": "integer", "format": "int64"},
    "google.protobuf.Int64Value": {"type": "string", "format": "int64"},
    "google.protobuf.UInt64Value": {"type": "string", "format": "uint64"},
}
ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "integer"}, "message": {"type": "string"}, "status": {"type": "string"}}}},
}

GRPC_ONLY = {"stream_unary": "client-streaming", "stream_stream": "bidirectional-streaming"}


def ok_response(schema_: dict, streaming: bool) -> dict:
    """The 200 response: the message as JSON, or for a server-streaming method one
    ``{"result": …}`` object per line (and an ``{"error": …}`` line if the stream fails)."""
    if not streaming:
        return {"description": "OK", "content": {"application/json": {"schema": schema_}}}
    line = {"type": "object", "properties": {"result": schema_, "error": ERROR["properties"]["error"]}}
    return {"description": "A stream of JSON objects, one a line.", "content": {"application/x-ndjson": {"schema": line}}}


def openapi_path(template: str) -> tuple[str, list[tuple[str, str]]]:
    """The OpenAPI path and [(parameter, field it fills)] for an http rule path."""
    params: list[tuple[str, str]] = []
    out, pos = "", 0
    for m in _VAR.finditer(template):
        out += template[pos:m.start()]
        field, pattern = m.group(1), m.group(2) or "*"
        segments = pattern.split("/")
        rendered = []
        for i, seg in enumerate(segments):
            if seg in ("*", "**"):
                base = singularize(segments[i - 1]) if i > 0 else field.split(".")[-1]
                name = base if base not in (p for p, _ in params) else f"{base}_{len(params)}"
                params.append((re.sub(r"[^a-zA-Z0-9_]", "_", name), field))
                rendered.append("{" + params[-1][0] + "}")
            else:
                rendered.append(seg)
        out += "/".join(rendered)
        pos = m.end()
    return out + template[pos:], params


class _Builder:
    def __init__(self, api: schema.Api) -> None:
        self.api = api
        self.schemas: dict[str, dict] = {}

    def ref(self, full: str) -> dict:
        if full in _WELL_KNOWN:
            return dict(_WELL_KNOWN[full])
        if full in self.api.enums:
            return {"type": "string", "enum": [n for n, _ in self.api.enums[full].values]}
        if full not in self.schemas:
            self.schemas[full] = {}  # placeholder against recursion
            self.schemas[full] = self.message(self.api.message(full))
        return {"$ref": f"#/components/schemas/{full}"}

    def field(self, f: schema.Field) -> dict:
        if f.is_map:
            value = self.field(f.map_value)
            return {"type": "object", "additionalProperties": value}
        base = self.ref(f.type_name) if f.type_name else dict(_SCALARS.get(f.type, {"type": "string"}))
        out = {"type": "array", "items": base} if f.repeated else base
        if f.output_only:
            out = {"allOf": [out], "readOnly": True} if "$ref" in out else {**out, "readOnly": True}
        return out

    def message(self, m: schema.Message) -> dict:
        props = {(f.json_name or f.name): self.field(f) for f in m.fields}
        required = [f.json_name or f.name for f in m.fields if f.required and not f.output_only]
        out: dict = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        return out

    def scalar_query_fields(self, msg: schema.Message, bound: set[str], prefix: str = "") -> list[tuple[str, dict]]:
        out = []
        for f in msg.fields:
            path = prefix + f.name
            if path in bound or f.is_map or (f.is_message and f.type_name not in _WELL_KNOWN):
                continue
            schema_ = self.field(f)
            if "$ref" in schema_ or schema_.get("type") == "object":
                continue
            out.append(((f.json_name or f.name) if not prefix else path, schema_))
        return out


def build(api: schema.Api, neuron) -> dict:
    b = _Builder(api)
    paths: dict[str, dict] = {}
    grpc_only: list[dict] = []
    bindings: dict[str, int] = {}
    for route in neuron.routes:
        m = route.method.method
        if m.kind in GRPC_ONLY:  # the gateway answers 501: listed, not offered as an operation
            grpc_only.append({"method": route.grpc_path, "kind": GRPC_ONLY[m.kind],
                              "http": f"{route.rule.verb.upper()} {route.rule.path}"})
            continue
        req = api.message(m.input_type)
        path, params = openapi_path(route.rule.path)
        bound = {field for _, field in params}
        bindings[route.grpc_path] = bindings.get(route.grpc_path, -1) + 1  # 0 for the rule, n for its n-th additional
        op: dict = {
            "operationId": f"{route.grpc_path.split('/')[1].split('.')[-1]}_{m.name}"
                           + (f"_{bindings[route.grpc_path]}" if bindings[route.grpc_path] else ""),
            "summary": m.summary,
            "tags": [route.grpc_path.split("/")[1].split(".")[-1]],
            "parameters": [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p, _ in params],
            "responses": {
                "200": ok_response(b.ref(m.output_type if not route.rule.response_body else
                                         (api.message(m.output_type).field(route.rule.response_body).type_name
                                          or m.output_type)), m.kind == "unary_stream"),
                "default": {"description": "An error, as Google APIs return it.",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        }
        if route.rule.body == "*":
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": b.ref(m.input_type)}}}
        elif route.rule.body:
            body_field = req.field(route.rule.body)
            body_schema = b.field(body_field) if body_field else {"type": "object"}
            body_schema = {k: v for k, v in body_schema.items() if k != "readOnly"}
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
        if route.rule.body != "*":
            op["parameters"] += [{"name": n, "in": "query", "required": False, "schema": s}
                                 for n, s in b.scalar_query_fields(req, bound | {route.rule.body})]
        paths.setdefault(path, {})[route.rule.verb] = op
    schemas = dict(sorted(b.schemas.items()))
    schemas["Error"] = ERROR
    package = api.files[0].package or api.files[0].name
    version = package.rsplit(".", 1)[-1]
    return {
        "openapi": "3.0.3",
        "info": {"title": package, "version": version if re.fullmatch(r"v\d+\w*", version) else "1.0.0",
                 "description": f"HTTP/JSON gateway of {', '.join(s.full_name for s in api.services)} "
                                "(gateway.py), from the google.api.http rules."},
        "paths": paths,
        "components": {"schemas": schemas},
        **({"x-grpc-only": grpc_only} if grpc_only else {}),
    }


def render(api: schema.Api, neuron) -> str:
    return json.dumps(build(api, neuron), indent=2, sort_keys=False) + "\n"
