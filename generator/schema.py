"""The frozen view model templates see, built from a FileDescriptorSet (never from .proto text).

``build(descriptor_set_bytes, targets)`` returns an :class:`Api`: the target proto files with
their services, methods (streaming kind, AIP standard method and its resource, HTTP rule),
resources and messages. Everything is a frozen dataclass; templates get nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

# Field types by FieldDescriptorProto.Type number.
_TYPES = {
    1: "double", 2: "float", 3: "int64", 4: "uint64", 5: "int32", 6: "fixed64", 7: "fixed32",
    8: "bool", 9: "string", 10: "group", 11: "message", 12: "bytes", 13: "uint32", 14: "enum",
    15: "sfixed32", 16: "sfixed64", 17: "sint32", 18: "sint64",
}
_BEHAVIORS = {
    1: "OPTIONAL", 2: "REQUIRED", 3: "OUTPUT_ONLY", 4: "INPUT_ONLY", 5: "IMMUTABLE",
    6: "UNORDERED_LIST", 7: "NON_EMPTY_DEFAULT", 8: "IDENTIFIER",
}
STANDARD_VERBS = ("get", "list", "create", "update", "delete")
OPERATION = "google.longrunning.Operation"
EMPTY = "google.protobuf.Empty"
FIELD_MASK = "google.protobuf.FieldMask"
TIMESTAMP = "google.protobuf.Timestamp"


@dataclass(frozen=True)
class Field:
    name: str
    number: int
    type: str
    type_name: str = ""  # full name of a message or enum type, without the leading dot
    repeated: bool = False
    map_key: str = ""  # key type when this is a map field; value is in ``map_value``
    map_value: Field | None = None
    behaviors: tuple[str, ...] = ()
    oneof: str = ""  # the real (not synthetic) oneof this field belongs to
    proto3_optional: bool = False
    resource_reference: str = ""  # the referenced type, or the child_type when ``child_reference``
    child_reference: bool = False  # the reference is a child_type (a parent of that type)
    json_name: str = ""
    line: int = 0

    @property
    def is_map(self) -> bool:
        return bool(self.map_key)

    @property
    def required(self) -> bool:
        return "REQUIRED" in self.behaviors

    @property
    def output_only(self) -> bool:
        return "OUTPUT_ONLY" in self.behaviors

    @property
    def immutable(self) -> bool:
        return "IMMUTABLE" in self.behaviors

    @property
    def is_message(self) -> bool:
        return self.type == "message"


@dataclass(frozen=True)
class Resource:
    type: str  # e.g. "xmpl.br/Book"
    patterns: tuple[str, ...]
    singular: str
    plural: str
    message: str = ""  # full name of the message carrying the annotation, if any
    name_field: str = "name"

    @property
    def pattern(self) -> str:
        return self.patterns[0] if self.patterns else ""

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.pattern.split("/")) if self.pattern else ()

    @property
    def collection_id(self) -> str:
        """The last literal collection segment: ``books`` for ``shelves/{shelf}/books/{book}``."""
        lits = [s for s in self.segments if not s.startswith("{")]
        return lits[-1] if lits else ""

    @property
    def id_variable(self) -> str:
        last = self.segments[-1] if self.segments else ""
        return last[1:-1] if last.startswith("{") else ""

    @property
    def parent_pattern(self) -> str:
        return "/".join(self.segments[:-2])

    @property
    def storable(self) -> bool:
        """Names alternate collection/{id}, so a name is also a Firestore document path."""
        segs = self.segments
        if not segs or len(segs) % 2:
            return False
        for i, s in enumerate(segs):
            is_var = s.startswith("{") and s.endswith("}")
            if is_var != bool(i % 2) or (not is_var and not re.fullmatch(r"[a-z][a-zA-Z0-9]*", s)):
                return False
        return True

    @property
    def storable_patterns(self) -> tuple[str, ...]:
        """Every pattern a Firestore store can serve (each alternates collection/{id})."""
        return tuple(p for p in self.patterns if Resource(self.type, (p,), self.singular, self.plural).storable)

    @property
    def name_shapes(self) -> tuple[str, ...]:
        """Storable patterns with their variables blanked (``shelves/*``), to compare resources."""
        return tuple(re.sub(r"\{[^}]*\}", "*", p) for p in self.storable_patterns)

    @property
    def parent_shapes(self) -> tuple[str, ...]:
        """The parent part of every name shape ("" for a top-level collection)."""
        return tuple(dict.fromkeys(p.rsplit("/", 2)[0] if p.count("/") > 1 else "" for p in self.name_shapes))

    @property
    def name_regex(self) -> str:
        parts = ["[^/]+" if s.startswith("{") else re.escape(s) for s in self.segments]
        return "^" + "/".join(parts) + "$"

    @property
    def parent_regex(self) -> str:
        parts = ["[^/]+" if s.startswith("{") else re.escape(s) for s in self.segments[:-2]]
        return "^" + "/".join(parts) + "$"


@dataclass(frozen=True)
class Message:
    name: str
    full_name: str
    file: str  # virtual proto file name
    python_module: str  # e.g. "xmpl.br.resources.books.v1.books_pb2"
    python_name: str  # "Book", or "Outer.Inner" for nested messages
    fields: tuple[Field, ...] = ()
    resource: Resource | None = None
    is_map_entry: bool = False
    oneofs: tuple[str, ...] = ()

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


@dataclass(frozen=True)
class Enum:
    name: str
    full_name: str
    python_module: str
    python_name: str
    values: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class HttpRule:
    verb: str  # get, post, put, patch, delete, or custom verb
    path: str
    body: str = ""
    response_body: str = ""
    additional: tuple[HttpRule, ...] = ()


@dataclass(frozen=True)
class StandardMethod:
    """An AIP standard method (AIP-131..135) as :mod:`generator.aip` classifies it: the verb, the
    resource, and which request/response fields carry the name, parent, resource, id and so on."""

    verb: str  # get / list / create / update / delete / undelete / batch_get / batch_create / ...
    resource: Resource
    resource_field: str = ""  # Create/Update: request field holding the resource ("book")
    id_field: str = ""  # Create: client-chosen id field ("book_id"), "" when absent
    parent_field: str = ""  # List/Create: the field holding the parent's name ("parent", "project")
    items_field: str = ""  # List: repeated field in the response ("books")
    mask_field: str = ""  # Update: "update_mask" when present
    name_field: str = "name"  # Get/Delete: request field holding the name ("name", "topic")
    allow_missing_field: str = ""  # Update/Delete: AIP-134/135 allow_missing
    etag_field: str = ""
    force_field: str = ""  # Delete: AIP-135 cascading delete
    filter_field: str = ""  # List: AIP-160 filter
    order_by_field: str = ""  # List: AIP-132 order_by
    show_deleted_field: str = ""  # List: AIP-164 show_deleted
    request_id_field: str = ""  # Create/Update/Delete: AIP-155 request_id (a repeat replays the response)
    long_running: bool = False  # returns google.longrunning.Operation (AIP-151), done at once
    soft_delete: bool = False  # Delete returns the resource (AIP-164)
    # Batch methods (AIP-231/233/234/235; verbs batch_get/batch_create/batch_update/batch_delete):
    names_field: str = ""  # BatchGet/BatchDelete: repeated string of names ("names")
    requests_field: str = ""  # BatchCreate/BatchUpdate/BatchDelete: repeated standard requests
    inner_parent_field: str = ""  # BatchCreate: each request's parent field ("" when it has none)
    response_message: str = ""  # BatchGet/Create/Update (and soft BatchDelete): the response (LRO: response_type)

    @property
    def is_batch(self) -> bool:
        return self.verb.startswith("batch_")


@dataclass(frozen=True)
class Method:
    name: str
    full_name: str
    input_type: str
    output_type: str
    client_streaming: bool = False
    server_streaming: bool = False
    http: HttpRule | None = None
    signatures: tuple[str, ...] = ()
    standard: StandardMethod | None = None
    lro_response: str = ""  # full name of google.longrunning.operation_info's response_type
    lro_metadata: str = ""  # full name of its metadata_type ("" when unset or unknown)
    comment: str = ""
    line: int = 0

    @property
    def summary(self) -> str:
        """The comment's first paragraph on one line, without lint directives; or the name."""
        return _summary(self.comment) or self.name

    @property
    def kind(self) -> str:
        """gRPC's cardinality name: unary_unary, unary_stream, stream_unary, stream_stream."""
        return ("stream" if self.client_streaming else "unary") + "_" + (
            "stream" if self.server_streaming else "unary"
        )


@dataclass(frozen=True)
class Service:
    name: str
    full_name: str
    methods: tuple[Method, ...]
    comment: str = ""
    file: str = ""

    @property
    def servicer(self) -> str:
        return f"{self.name}Servicer"

    @property
    def summary(self) -> str:
        return _summary(self.comment) or self.full_name


@dataclass(frozen=True)
class ProtoFile:
    name: str
    package: str
    services: tuple[Service, ...]
    messages: tuple[str, ...]  # full names of messages defined here (nested included)
    resources: tuple[Resource, ...]
    dependencies: tuple[str, ...]
    python_module: str
    grpc_module: str


@dataclass(frozen=True)
class Api:
    files: tuple[ProtoFile, ...]  # the target files, in the order asked for
    all_files: tuple[str, ...]  # every file in the set, dependencies first
    messages: Mapping[str, Message]
    enums: Mapping[str, Enum]
    resources: Mapping[str, Resource]  # by resource type

    @property
    def services(self) -> tuple[Service, ...]:
        return tuple(s for f in self.files for s in f.services)

    def message(self, full_name: str) -> Message:
        return self.messages[full_name]


_DIRECTIVE_IN_PARENS = re.compile(r"\s*\([^()]*scaffold-lint:[^()]*\)")
_DIRECTIVE = re.compile(r"\s*scaffold-lint:\s*disable=[a-z0-9-]+")


def _summary(comment: str) -> str:
    """A comment's first paragraph on one line, without lint directives, safe in a docstring."""
    first = comment.strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in first.splitlines())
    text = _DIRECTIVE.sub("", _DIRECTIVE_IN_PARENS.sub("", text))
    return text.replace("\\", "\\\\").replace('"""', "'''").strip()


def python_module(virtual_name: str, suffix: str = "_pb2") -> str:
    stem = virtual_name.removesuffix(".proto")
    return stem.replace("-", "_").replace("/", ".") + suffix


# ---------------------------------------------------------------------------------------------
# Building: all descriptor handling lives below; the model above is plain data.


def _options():
    """Import the extension modules so option extensions parse out of the descriptor set."""
    from google.api import annotations_pb2, client_pb2, field_behavior_pb2, resource_pb2
    from google.longrunning import operations_proto_pb2 as operations_pb2  # operations_pb2 would import grpc (~50 ms)

    return annotations_pb2, client_pb2, field_behavior_pb2, resource_pb2, operations_pb2


def _comments(fd) -> dict[tuple[int, ...], tuple[str, int]]:
    out = {}
    for loc in fd.source_code_info.location:
        out[tuple(loc.path)] = (loc.leading_comments.strip(), loc.span[0] + 1 if loc.span else 0)
    return out


def _resource(desc, message: str = "") -> Resource:
    plural = desc.plural
    singular = desc.singular
    type_name = desc.type.split("/")[-1] if desc.type else ""
    if not singular and type_name:
        singular = type_name[:1].lower() + type_name[1:]
    pattern = desc.pattern[0] if desc.pattern else ""
    if not plural and pattern:
        lits = [s for s in pattern.split("/") if not s.startswith("{")]
        plural = lits[-1] if lits else ""
    return Resource(
        type=desc.type,
        patterns=tuple(desc.pattern),
        singular=singular,
        plural=plural,
        message=message,
        name_field=desc.name_field or "name",
    )


def _http(rule) -> HttpRule | None:
    verb = rule.WhichOneof("pattern")
    if verb is None:
        return None
    path = rule.custom.path if verb == "custom" else getattr(rule, verb)
    if verb == "custom":
        verb = rule.custom.kind.lower()
    extra = tuple(r for r in (_http(b) for b in rule.additional_bindings) if r is not None)
    return HttpRule(verb, path, rule.body, rule.response_body, extra)


class _Builder:
    def __init__(self, fds) -> None:
        self.annotations, self.client, self.field_behavior, self.resource_ext, self.operations = _options()
        self.fds = fds
        self.messages: dict[str, Message] = {}
        self.enums: dict[str, Enum] = {}
        self.resources: dict[str, Resource] = {}

    # -- types ----------------------------------------------------------------------------
    def collect(self) -> None:
        for fd in self.fds.file:
            module = python_module(fd.name)
            comments = _comments(fd)
            for rd in fd.options.Extensions[self.resource_ext.resource_definition]:
                r = _resource(rd)
                self.resources.setdefault(r.type, r)
            for i, md in enumerate(fd.message_type):
                self._message(fd, md, fd.package, "", module, (4, i), comments)
            for ed in fd.enum_type:
                self._enum(ed, fd.package, "", module)

    def _enum(self, ed, scope: str, pyscope: str, module: str) -> None:
        full = f"{scope}.{ed.name}" if scope else ed.name
        self.enums[full] = Enum(
            ed.name, full, module, f"{pyscope}{ed.name}", tuple((v.name, v.number) for v in ed.value)
        )

    def _message(self, fd, md, scope: str, pyscope: str, module: str, path, comments) -> None:
        full = f"{scope}.{md.name}" if scope else md.name
        pyname = f"{pyscope}{md.name}"
        for j, nested in enumerate(md.nested_type):
            self._message(fd, nested, full, pyname + ".", module, (*path, 3, j), comments)
        for ed in md.enum_type:
            self._enum(ed, full, pyname + ".", module)
        resource = None
        if md.options.HasExtension(self.resource_ext.resource):
            resource = _resource(md.options.Extensions[self.resource_ext.resource], full)
            self.resources.setdefault(resource.type, resource)
        real_oneofs = [o.name for o in md.oneof_decl]
        fields = []
        for k, fdp in enumerate(md.field):
            fields.append(self._field(fdp, md, real_oneofs, comments.get((*path, 2, k), ("", 0))[1]))
        self.messages[full] = Message(
            name=md.name,
            full_name=full,
            file=fd.name,
            python_module=module,
            python_name=pyname,
            fields=tuple(fields),
            resource=resource,
            is_map_entry=md.options.map_entry,
            oneofs=tuple(
                n for i, n in enumerate(real_oneofs)
                if not any(f.proto3_optional and f.oneof_index == i for f in md.field)
            ),
        )

    def _field(self, fdp, md, oneofs, line: int) -> Field:
        behaviors = tuple(
            _BEHAVIORS.get(b, str(b)) for b in fdp.options.Extensions[self.field_behavior.field_behavior]
        )
        ref = fdp.options.Extensions[self.resource_ext.resource_reference]
        oneof = ""
        if fdp.HasField("oneof_index") and not fdp.proto3_optional:
            oneof = oneofs[fdp.oneof_index]
        return Field(
            name=fdp.name,
            number=fdp.number,
            type=_TYPES[fdp.type],
            type_name=fdp.type_name.lstrip("."),
            repeated=fdp.label == 3,
            behaviors=behaviors,
            oneof=oneof,
            proto3_optional=fdp.proto3_optional,
            resource_reference=ref.type or ref.child_type,
            child_reference=bool(ref.child_type and not ref.type),
            json_name=fdp.json_name,
            line=line,
        )

    def resolve_maps(self) -> None:
        """Turn repeated MapEntry fields into map fields with key and value types."""
        for full, msg in list(self.messages.items()):
            fields = []
            changed = False
            for f in msg.fields:
                entry = self.messages.get(f.type_name) if f.is_message else None
                if f.repeated and entry is not None and entry.is_map_entry:
                    key, value = entry.fields
                    f = Field(**{**f.__dict__, "repeated": False, "map_key": key.type, "map_value": value})
                    changed = True
                fields.append(f)
            if changed:
                self.messages[full] = Message(**{**msg.__dict__, "fields": tuple(fields)})

    # -- services -------------------------------------------------------------------------
    def _lro_response(self, mdp, package: str, what: str = "response_type") -> str:
        """The full name of a long-running method's response_type (or ``what``), or ""."""
        if not mdp.options.HasExtension(self.operations.operation_info):
            return ""
        name = getattr(mdp.options.Extensions[self.operations.operation_info], what)
        qualified = f"{package}.{name}" if package else name
        return qualified if qualified in self.messages else name

    def service(self, fd, i: int, sd, comments) -> Service:
        from generator import aip

        classify = aip.Classifier(self.messages, self.resources).classify
        full_service = f"{fd.package}.{sd.name}" if fd.package else sd.name
        methods = []
        for j, mdp in enumerate(sd.method):
            http = None
            if mdp.options.HasExtension(self.annotations.http):
                http = _http(mdp.options.Extensions[self.annotations.http])
            comment, line = comments.get((6, i, 2, j), ("", 0))
            m = Method(
                name=mdp.name,
                full_name=f"{full_service}.{mdp.name}",
                input_type=mdp.input_type.lstrip("."),
                output_type=mdp.output_type.lstrip("."),
                client_streaming=mdp.client_streaming,
                server_streaming=mdp.server_streaming,
                http=http,
                signatures=tuple(mdp.options.Extensions[self.client.method_signature]),
                comment=comment,
                line=line,
                lro_response=self._lro_response(mdp, fd.package),
                lro_metadata=self._lro_response(mdp, fd.package, "metadata_type"),
            )
            methods.append(replace(m, standard=classify(m).standard))
        return Service(sd.name, full_service, tuple(methods), comments.get((6, i), ("", 0))[0], fd.name)

    def file(self, fd) -> ProtoFile:
        comments = _comments(fd)
        services = tuple(self.service(fd, i, sd, comments) for i, sd in enumerate(fd.service))
        own = tuple(m.full_name for m in self.messages.values() if m.file == fd.name)
        resources = tuple(
            r for r in self.resources.values() if r.message and self.messages[r.message].file == fd.name
        )
        return ProtoFile(
            name=fd.name,
            package=fd.package,
            services=services,
            messages=own,
            resources=resources,
            dependencies=tuple(fd.dependency),
            python_module=python_module(fd.name),
            grpc_module=python_module(fd.name, "_pb2_grpc"),
        )


def parse_set(data: bytes):
    from google.protobuf import descriptor_pb2

    _options()  # register extensions before parsing
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(data)
    return fds


def build(data: bytes, targets: tuple[str, ...]) -> Api:
    """Build the view model for ``targets`` (virtual file names) from a descriptor set."""
    fds = parse_set(data)
    b = _Builder(fds)
    b.collect()
    b.resolve_maps()
    by_name = {fd.name: fd for fd in fds.file}
    missing = [t for t in targets if t not in by_name]
    if missing:
        raise KeyError(f"descriptor set lacks {missing}")
    files = tuple(b.file(by_name[t]) for t in targets)
    return Api(
        files=files,
        all_files=tuple(fd.name for fd in fds.file),
        messages=MappingProxyType(dict(b.messages)),
        enums=MappingProxyType(dict(b.enums)),
        resources=MappingProxyType(dict(b.resources)),
    )
