"""``scaffold proto lint``: the AIP rules that code generation relies on.

Each finding prints as ``file:line: rule: message``. Rules are named after the AIP they
check, so a user can look them up (e.g. ``aip-122-resource-pattern``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from generator import aip, model, protoc, schema

_COLLECTION = re.compile(r"^[a-z][a-zA-Z0-9]*$")
_VARIABLE = re.compile(r"^\{[a-z][a-z0-9_]*\}$")


@dataclass(frozen=True, order=True)
class Finding:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


class _Linter:
    def __init__(self, api: schema.Api, source: protoc.Source) -> None:
        self.api = api
        self.source = source
        self.findings: list[Finding] = []
        self._lines: dict[str, int] = {}
        self.classifier = aip.Classifier(api.messages, api.resources)

    def shown(self, virtual: str) -> str:
        real = self.source.locate(virtual)
        return protoc.display_path(real) if real else virtual

    def add(self, file: str, line: int, rule: str, message: str) -> None:
        self.findings.append(Finding(self.shown(file), line, rule, message))

    def message_line(self, msg: schema.Message) -> int:
        # A message's line is that of its first field (descriptor spans for messages
        # include the option block), good enough to land the editor in the right place.
        return min((f.line for f in msg.fields if f.line), default=1)

    def resource(self, r: schema.Resource) -> None:
        msg = self.api.messages.get(r.message)
        if msg is None:
            return
        line = self.message_line(msg)
        if not r.patterns:
            self.add(msg.file, line, "aip-123-resource-pattern", f"resource {r.type} has no pattern")
            return
        if "/" not in r.type or not re.match(r"^[A-Z][A-Za-z0-9]*$", r.type.split("/")[-1]):
            self.add(msg.file, line, "aip-123-resource-type", f"resource type {r.type!r} should look like 'service.example/Book'")
        for pattern in r.patterns:
            segs = pattern.split("/")
            ok = len(segs) % 2 == 0 and all(
                (_VARIABLE if i % 2 else _COLLECTION).match(s) for i, s in enumerate(segs)
            )
            if not ok:
                self.add(
                    msg.file, line, "aip-122-resource-pattern",
                    f"pattern {pattern!r} of {r.type} should alternate lowerCamel collection ids and "
                    "{snake_case} variables, e.g. 'publishers/{publisher}/books/{book}'; "
                    "standard methods on it are generated as stubs",
                )
        if not r.singular or not r.plural:
            self.add(msg.file, line, "aip-123-resource-singular-plural", f"resource {r.type} should set singular and plural")
        name = msg.field(r.name_field)
        if name is None or name.type != "string":
            self.add(msg.file, line, "aip-122-name-field", f"{msg.name} should have a string field {r.name_field!r}")
        elif not ({"OUTPUT_ONLY", "IDENTIFIER"} & set(name.behaviors)):
            self.add(msg.file, name.line, "aip-203-name-behavior", f"{msg.name}.{name.name} should be OUTPUT_ONLY (or IDENTIFIER)")
        for f in msg.fields:
            if f.name in ("create_time", "update_time", "delete_time", "etag_time") and not f.output_only:
                self.add(msg.file, f.line, "aip-203-output-only", f"{msg.name}.{f.name} is set by the server: mark it OUTPUT_ONLY")
            if f.required and f.output_only:
                self.add(msg.file, f.line, "aip-203-conflict", f"{msg.name}.{f.name} cannot be both REQUIRED and OUTPUT_ONLY")

    def method(self, svc: schema.Service, m: schema.Method) -> None:
        req = self.api.messages.get(m.input_type)
        if m.http is None:
            self.add(svc.file, m.line, "aip-127-http-annotation", f"{m.name} has no google.api.http rule (REST gateway and docs need one)")
        for var in aip.unbound_variables(m, self.api.messages):
            self.add(
                svc.file, m.line, "aip-127-http-variable",
                f"the HTTP path of {m.name} binds {{{var}}}, which is not a field of {req.name}: "
                "the gateway cannot fill it, so generation refuses it",
            )
        verb = aip.candidate_verb(m)
        if not verb or req is None or m.client_streaming or m.server_streaming:
            return
        found = self.classifier.classify(m)
        std = found.standard
        if std is None:
            self.add(
                svc.file, m.line, f"aip-13x-standard-{verb}",
                f"{m.name} looks like a standard {verb.capitalize()} but {found.why}; "
                "it is generated as a custom-method stub",
            )
            return
        if std.verb in ("get", "delete"):
            f = req.field(std.name_field)
            if f is not None and not f.required:
                self.add(svc.file, f.line or m.line, "aip-131-request-name-required", f"{req.name}.{f.name} should be REQUIRED")
        if std.verb in ("create", "update"):
            f = req.field(std.resource_field)
            if f is not None and not f.required:
                self.add(svc.file, f.line or m.line, "aip-133-request-resource-required", f"{req.name}.{f.name} should be REQUIRED")
        if std.verb == "update" and not std.mask_field:
            self.add(svc.file, m.line, "aip-134-update-mask", f"{req.name} should have `google.protobuf.FieldMask update_mask`")
        if not std.resource.storable:
            self.add(
                svc.file, m.line, "aip-122-resource-pattern",
                f"{m.name}: pattern {std.resource.pattern!r} is not collection/{{id}} pairs; generated as a stub",
            )
        elif std.verb in ("list", "create") and std.resource.parent_pattern and not std.parent_field:
            rule = "aip-132-request-parent-required" if std.verb == "list" else "aip-133-request-parent-required"
            self.add(
                svc.file, m.line, rule,
                f"{m.name}: {std.resource.type} is nested ({std.resource.pattern!r}) but {req.name} has no "
                f"`string parent` field (or binds none in its HTTP path); {m.name} is generated as an UNIMPLEMENTED stub",
            )


def run(source: protoc.Source) -> list[Finding]:
    """Compile ``source`` and return the findings, sorted by file and line."""
    api = model.build(protoc.descriptor_set(source), source.files)
    linter = _Linter(api, source)
    targets = {f.name for f in api.files}
    for r in api.resources.values():
        if r.message and api.messages[r.message].file in targets:
            linter.resource(r)
    for svc in api.services:
        for m in svc.methods:
            before = len(linter.findings)
            linter.method(svc, m)
            disabled = set(_DISABLE.findall(m.comment))
            linter.findings[before:] = [f for f in linter.findings[before:] if f.rule not in disabled]
    return sorted(set(linter.findings))


# In a method's leading comment: `scaffold-lint: disable=aip-13x-standard-get` (several allowed).
_DISABLE = re.compile(r"scaffold-lint:\s*disable=([a-z0-9-]+)")
