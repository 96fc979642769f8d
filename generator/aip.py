"""Which RPCs are AIP standard methods (AIP-131..135), read from the proto's own annotations.

Generation (:mod:`generator.schema`, :mod:`generator.neuron`) and ``scaffold proto lint``
both ask :class:`Classifier` so they never disagree. As api-linter does, a method is a
standard candidate when its name is ``Get``/``List``/``Create``/``Update``/``Delete`` followed
by a capital; it *is* one when its request, response, resource annotations
(``google.api.resource``, ``resource_reference`` with ``type`` or ``child_type``) and HTTP
binding all agree:

- Get/Delete: the HTTP path binds exactly one variable, a string request field (``name``, or
  e.g. ``topic``) whose segments match a pattern of the resource; without a binding, the field
  ``name`` or the one string field referencing the resource type.
- List: page_size/page_token in, one repeated resource field plus next_page_token out; the
  path binds nothing (top-level collection) or one string parent field (``parent``,
  ``project``) matching the resource's parent pattern.
- Create: the resource is a field of the request; the path binds nothing or the parent field.
- Update: the resource is a field of the request; the path binds ``<that field>.name``.

A binding on other fields (``/v1/projects/{project_id}/zones/{zone}/clusters/{cluster_id}``),
a custom verb (``:cancel``) or the wrong HTTP method makes the RPC a custom method. Long-running
(AIP-151) and soft-deleting (AIP-164) standard methods are recognised and flagged as such.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from generator.schema import EMPTY, FIELD_MASK, OPERATION, Message, Method, Resource, StandardMethod

_VERB = re.compile(r"^(Get|List|Create|Update|Delete)(?=[A-Z]|$)")
# AIP-164 Undelete and AIP-231/233/234/235 batch methods: custom methods (``:undelete``,
# ``:batchGet`` …) that the store implements when their request/response shapes are the AIPs'.
_EXTRA = re.compile(r"^(Undelete|BatchGet|BatchCreate|BatchUpdate|BatchDelete)(?=[A-Z])")
_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
_HTTP_VERB = {"get": ("get",), "list": ("get",), "create": ("post",), "update": ("patch", "put"), "delete": ("delete",)}


@dataclass(frozen=True)
class Classification:
    """``standard`` when the method is a standard one; else ``why`` says what it lacks (empty
    for RPCs not named like a standard method)."""

    standard: StandardMethod | None = None
    why: str = ""


def candidate_verb(method: Method) -> str:
    """``get``/``list``/``create``/``update``/``delete`` when the RPC's name starts like one, else ""."""
    m = _VERB.match(method.name)
    return m.group(1).lower() if m else ""


def path_variables(path: str) -> tuple[tuple[str, str], ...]:
    """The ``(field path, segment template)`` pairs a google.api.http path binds.

    ``/v1/{name=shelves/*}:move`` gives ``(("name", "shelves/*"),)``; a bare ``{id}`` has template ``*``.
    """
    return tuple((m.group(1).strip(), (m.group(2) or "*").strip()) for m in _VARIABLE.finditer(path))


def custom_verb(path: str) -> str:
    """The ``:verb`` suffix of an HTTP path (``move`` in ``/v1/{name=shelves/*/books/*}:move``), or ""."""
    tail = _VARIABLE.sub("x", path).rsplit("/", 1)[-1]
    return tail.split(":", 1)[1] if ":" in tail else ""


def unbound_variables(method: Method, messages: Mapping[str, Message]) -> tuple[str, ...]:
    """HTTP path variables (in the rule and its additional_bindings) that name no request field."""
    if method.http is None or method.input_type not in messages:
        return ()
    out = []
    for rule in (method.http, *method.http.additional):
        for var, _ in path_variables(rule.path):
            if _resolve(messages, messages[method.input_type], var) is None and var not in out:
                out.append(var)
    return tuple(out)


def _resolve(messages: Mapping[str, Message], msg: Message, dotted: str):
    """The field a dotted path (``book.name``) names in ``msg``, or None."""
    field = None
    for i, part in enumerate(dotted.split(".")):
        if msg is None:
            return None
        field = msg.field(part)
        if field is None:
            return None
        msg = messages.get(field.type_name) if field.is_message and i < dotted.count(".") else None
    return field


def _matches(template: str, pattern: str) -> bool:
    """Whether an HTTP segment template (``projects/*/topics/*``) fits a resource pattern."""
    t, p = template.split("/"), pattern.split("/")
    if "**" in t:
        return True
    return len(t) == len(p) and all(a == "*" or a == b for a, b in zip(t, p, strict=True))


def _parent_pattern(pattern: str) -> str:
    return "/".join(pattern.split("/")[:-2])


class Classifier:
    """Classifies the methods of one descriptor set (its messages and resources)."""

    def __init__(self, messages: Mapping[str, Message], resources: Mapping[str, Resource]) -> None:
        self.messages = messages
        self.resources = resources

    def classify(self, method: Method) -> Classification:
        """The method's :class:`Classification`; never raises for odd protos."""
        extra = _EXTRA.match(method.name)
        if extra and method.input_type in self.messages:
            if method.client_streaming or method.server_streaming:
                return Classification(why="it streams")
            return getattr(self, "_" + _snake(extra.group(1)))(method, self.messages[method.input_type])
        verb = candidate_verb(method)
        req = self.messages.get(method.input_type)
        if not verb or req is None or method.output_type not in self.messages:
            return Classification()
        if method.client_streaming or method.server_streaming:
            return Classification(why="it streams")
        if method.http is not None:
            if custom_verb(method.http.path):
                return Classification(why=f"its HTTP path ends in a custom verb (:{custom_verb(method.http.path)})")
            if method.http.verb not in _HTTP_VERB[verb]:
                want = " or ".join(v.upper() for v in _HTTP_VERB[verb])
                return Classification(why=f"it is bound to HTTP {method.http.verb.upper()}, not {want}")
        return getattr(self, f"_{verb}")(method, req)

    # -- helpers ----------------------------------------------------------------------------
    def _variables(self, method: Method) -> tuple[tuple[str, str], ...] | None:
        return path_variables(method.http.path) if method.http is not None else None

    def _resource_out(self, method: Method) -> tuple[Message | None, bool]:
        """The message the method returns (an LRO's response_type), and whether it is long-running."""
        if method.output_type == OPERATION:
            return self.messages.get(method.lro_response), True
        return self.messages.get(method.output_type), False

    def _string_field(self, req: Message, name: str):
        f = req.field(name)
        return f if f is not None and f.type == "string" and not f.repeated else None

    def _name_field(self, method: Method, req: Message, resource: Resource | None) -> tuple[str, str]:
        """(request field holding the resource name, why not) for Get and Delete."""
        variables = self._variables(method)
        if variables is not None:
            if len(variables) != 1:
                bound = ", ".join(v for v, _ in variables) or "nothing"
                return "", f"its HTTP path binds {bound}, not one resource name"
            var, template = variables[0]
            if self._string_field(req, var) is None:
                return "", f"its HTTP path variable {{{var}}} is not a string field of {req.name}"
            if resource is not None and not any(_matches(template, p) for p in resource.patterns):
                return "", f"its HTTP path binds {{{var}={template}}}, which is not a {resource.type} name"
            return var, ""
        if self._string_field(req, "name") is not None:
            return "name", ""
        refs = [f.name for f in req.fields if f.type == "string" and not f.child_reference and resource is not None
                and f.resource_reference == resource.type]
        return (refs[0], "") if len(refs) == 1 else ("", f"{req.name} has no string `name` field")

    def _parent_field(self, method: Method, req: Message, resource: Resource) -> tuple[str, str]:
        """(request field holding the parent name or "", why not) for List and Create."""
        variables = self._variables(method)
        if variables is not None:
            if len(variables) > 1:
                return "", f"its HTTP path binds {', '.join(v for v, _ in variables)}, not one parent name"
            if not variables:
                return "", ""
            var, template = variables[0]
            if self._string_field(req, var) is None:
                return "", f"its HTTP path variable {{{var}}} is not a string field of {req.name}"
            if not any(_matches(template, _parent_pattern(p)) for p in resource.patterns):
                return "", f"its HTTP path binds {{{var}={template}}}, which is not a parent of {resource.type}"
            return var, ""
        if self._string_field(req, "parent") is not None:
            return "parent", ""
        refs = [f.name for f in req.fields if f.type == "string" and f.child_reference and f.resource_reference == resource.type]
        return (refs[0], "") if len(refs) == 1 else ("", "")

    def _holder(self, req: Message, resource_msg: Message) -> str:
        holders = [f.name for f in req.fields if f.is_message and f.type_name == resource_msg.full_name and not f.repeated]
        return holders[0] if len(holders) == 1 else ""

    # -- the five verbs ---------------------------------------------------------------------
    def _get(self, method: Method, req: Message) -> Classification:
        resp = self.messages[method.output_type]
        if resp.resource is None:
            return Classification(why=f"it should return a resource message ({resp.name} has no google.api.resource)")
        field, why = self._name_field(method, req, resp.resource)
        if not field:
            return Classification(why=why)
        return Classification(StandardMethod("get", resp.resource, name_field=field))

    def _list(self, method: Method, req: Message) -> Classification:
        resp = self.messages[method.output_type]
        items = [f for f in resp.fields if f.repeated and f.is_message and not f.is_map
                 and getattr(self.messages.get(f.type_name), "resource", None) is not None]
        if not (len(items) == 1 and resp.field("next_page_token") and req.field("page_size") and req.field("page_token")):
            return Classification(
                why="it should take page_size and page_token, and return one repeated resource field plus next_page_token")
        resource = self.messages[items[0].type_name].resource
        parent, why = self._parent_field(method, req, resource)
        if why:
            return Classification(why=why)

        def opt(name: str, kind: str) -> str:
            f = req.field(name)
            return name if f is not None and f.type == kind and not f.repeated else ""

        return Classification(StandardMethod(
            "list", resource, items_field=items[0].name, parent_field=parent, filter_field=opt("filter", "string"),
            order_by_field=opt("order_by", "string"), show_deleted_field=opt("show_deleted", "bool")))

    def _create_or_update(self, method: Method, req: Message, verb: str) -> Classification:
        resource_msg, lro = self._resource_out(method)
        if resource_msg is None or resource_msg.resource is None:
            return Classification(why="it should return the resource (a message with google.api.resource), "
                                  "or an Operation whose response_type is the resource")
        holder = self._holder(req, resource_msg)
        if not holder:
            return Classification(why=f"it should take the {resource_msg.name} as one field of the request")
        r = resource_msg.resource
        if verb == "create":
            parent, why = self._parent_field(method, req, r)
            if why:
                return Classification(why=why)
            id_field = f"{_snake(r.singular)}_id" if r.singular else ""
            return Classification(StandardMethod(
                "create", r, resource_field=holder, id_field=id_field if self._string_field(req, id_field) else "",
                parent_field=parent, long_running=lro, request_id_field=_request_id(req)))
        variables = self._variables(method)
        want = f"{holder}.{r.name_field}"
        if variables is not None and [v for v, _ in variables] != [want]:
            bound = ", ".join(v for v, _ in variables) or "nothing"
            return Classification(why=f"its HTTP path binds {bound}, not {{{want}}}")
        mask = req.field("update_mask")
        allow = req.field("allow_missing")
        return Classification(StandardMethod(
            "update", r, resource_field=holder,
            mask_field="update_mask" if mask is not None and mask.type_name == FIELD_MASK else "",
            allow_missing_field="allow_missing" if allow is not None and allow.type == "bool" else "",
            long_running=lro, request_id_field=_request_id(req)))

    def _create(self, method: Method, req: Message) -> Classification:
        return self._create_or_update(method, req, "create")

    def _update(self, method: Method, req: Message) -> Classification:
        return self._create_or_update(method, req, "update")

    def _delete(self, method: Method, req: Message) -> Classification:
        noun = method.name[6:]
        resource = self._deleted_resource(method, req, noun)
        if resource is None:
            return Classification(why="it should take a `name` referencing a known resource")
        field, why = self._name_field(method, req, resource)
        if not field:
            return Classification(why=why)
        out, lro = self._resource_out(method)
        out_name = out.full_name if out is not None else method.lro_response
        soft = out_name == resource.message and bool(resource.message)
        if out_name != EMPTY and not soft:
            return Classification(why=f"it should return google.protobuf.Empty, the {noun} (soft delete) or an Operation")

        def opt(name: str, kind: str) -> str:
            f = req.field(name)
            return name if f is not None and f.type == kind else ""

        return Classification(StandardMethod(
            "delete", resource, name_field=field, allow_missing_field=opt("allow_missing", "bool"),
            etag_field=opt("etag", "string"), force_field=opt("force", "bool"), long_running=lro, soft_delete=soft,
            request_id_field=_request_id(req)))

    def _deleted_resource(self, method: Method, req: Message, noun: str) -> Resource | None:
        """The resource a Delete removes: from the bound field's resource_reference, else by name."""
        variables = self._variables(method)
        names = [variables[0][0]] if variables else ["name"]
        names += [f.name for f in req.fields if f.type == "string" and f.resource_reference and not f.child_reference]
        for n in names:
            f = req.field(n)
            if f is not None and not f.child_reference and f.resource_reference in self.resources:
                return self.resources[f.resource_reference]
        return next((r for r in self.resources.values() if r.message and r.message.rsplit(".", 1)[-1] == noun), None)


    # -- AIP-164 Undelete, AIP-231/233/234/235 batch methods ---------------------------------
    def _undelete(self, method: Method, req: Message) -> Classification:
        out, lro = self._resource_out(method)
        if out is None or out.resource is None:
            return Classification(why="it should return the resource (or an Operation resolving to it)")
        field, why = self._name_field(method, req, out.resource)
        if not field:
            return Classification(why=why)
        return Classification(StandardMethod("undelete", out.resource, name_field=field, long_running=lro))

    def _batch_response(self, method: Method) -> tuple[Message | None, str, bool]:
        """(response message, its one repeated resource field, long-running)."""
        out_name = method.lro_response if method.output_type == OPERATION else method.output_type
        out = self.messages.get(out_name)
        if out is None:
            return None, "", method.output_type == OPERATION
        items = [f.name for f in out.fields if f.repeated and f.is_message and not f.is_map
                 and getattr(self.messages.get(f.type_name), "resource", None) is not None]
        return out, (items[0] if len(items) == 1 else ""), method.output_type == OPERATION

    def _names(self, req: Message) -> str:
        f = req.field("names")
        return "names" if f is not None and f.type == "string" and f.repeated else ""

    def _batch_parent(self, req: Message) -> str:
        return "parent" if self._string_field(req, "parent") is not None else ""

    def _requests(self, req: Message) -> Message | None:
        f = req.field("requests")
        return self.messages.get(f.type_name) if f is not None and f.repeated and f.is_message else None

    def _batch_get(self, method: Method, req: Message) -> Classification:
        out, items, lro = self._batch_response(method)
        if out is None or not items or not self._names(req) or lro:
            return Classification(why="it should take repeated string `names` and return one repeated resource field")
        resource = self.messages[out.field(items).type_name].resource
        return Classification(StandardMethod("batch_get", resource, names_field="names", items_field=items,
                                             parent_field=self._batch_parent(req), response_message=out.full_name))

    def _batch_write(self, method: Method, req: Message, verb: str) -> Classification:
        out, items, lro = self._batch_response(method)
        inner = self._requests(req)
        if out is None or not items or inner is None:
            return Classification(why="it should take repeated `requests` of the standard request and return "
                                  "one repeated resource field")
        resource_msg = self.messages[out.field(items).type_name]
        r = resource_msg.resource
        holder = self._holder(inner, resource_msg)
        if not holder:
            return Classification(why=f"each request should hold the {resource_msg.name} in one field")
        common = {"requests_field": "requests", "items_field": items, "resource_field": holder,
                  "parent_field": self._batch_parent(req), "response_message": out.full_name, "long_running": lro}
        if verb == "batch_create":
            id_field = f"{_snake(r.singular)}_id" if r.singular else ""
            return Classification(StandardMethod(
                verb, r, id_field=id_field if self._string_field(inner, id_field) else "",
                inner_parent_field=self._batch_parent(inner), **common))
        mask = inner.field("update_mask")
        return Classification(StandardMethod(
            verb, r, mask_field="update_mask" if mask is not None and mask.type_name == FIELD_MASK else "", **common))

    def _batch_create(self, method: Method, req: Message) -> Classification:
        return self._batch_write(method, req, "batch_create")

    def _batch_update(self, method: Method, req: Message) -> Classification:
        return self._batch_write(method, req, "batch_update")

    def _batch_delete(self, method: Method, req: Message) -> Classification:
        out_name = method.lro_response if method.output_type == OPERATION else method.output_type
        lro = method.output_type == OPERATION
        inner = self._requests(req)
        names = self._names(req)
        if not names and (inner is None or self._string_field(inner, "name") is None):
            return Classification(why="it should take repeated string `names` or `requests` with a `name`")
        field = req.field("names") if names else inner.field("name")
        resource = self.resources.get(field.resource_reference) if not field.child_reference else None
        if resource is None:
            plural = _snake(method.name.removeprefix("BatchDelete"))
            resource = next((r for r in self.resources.values() if r.message and _snake(r.plural) == plural), None)
        if resource is None or not resource.message:
            return Classification(why="its names should reference a known resource type")
        if out_name != EMPTY:
            return Classification(why="it should return google.protobuf.Empty (or an Operation resolving to it)")
        return Classification(StandardMethod(
            "batch_delete", resource, names_field=names, requests_field="" if names else "requests",
            name_field="name", parent_field=self._batch_parent(req), long_running=lro))

def _request_id(req: Message) -> str:
    """``request_id`` when the request has that string field (AIP-155), else ""."""
    f = req.field("request_id")
    return "request_id" if f is not None and f.type == "string" and not f.repeated else ""


def _snake(name: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    return re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s).lower()
