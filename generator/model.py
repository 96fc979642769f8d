"""Build the view model (:mod:`generator.schema`) from a FileDescriptorSet.

The pipeline's second step: protoc's descriptor set (never .proto text) -> frozen
:class:`generator.schema.Api`, with each method classified by :mod:`generator.aip` (the one
place lint and generation agree on what a standard method is). ``build`` is the entry point.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from generator import aip
from generator.schema import (
    _BEHAVIORS,
    _TYPES,
    Api,
    Enum,
    Field,
    HttpRule,
    Message,
    Method,
    ProtoFile,
    Resource,
    Service,
    python_module,
)


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
