"""AIP-160 ``filter`` for List methods, type-checked and compiled to one Firestore query.

    f = filtering.parse('author.country = "NO" AND (state = ACTIVE OR tags:"sci-fi")', Book.DESCRIPTOR)
    query = f.apply(collection)            # Firestore FieldFilter / And / Or
    scope = f.canonical                    # bind page tokens to the parsed filter

Supported: comparisons ``= != < <= > >=`` on strings, numbers, bools, enums (by name),
google.protobuf.Timestamp (RFC 3339), wrapper types and fields of nested messages
(``author.country``) or map values (``labels.env``); ``field:value`` on repeated scalar
fields (membership); ``AND``, ``OR``, implicit AND (``a=1 b=2``), ``NOT``/``-`` and
parentheses. Anything else, and anything Firestore cannot answer exactly, raises
FilterError (an InvalidArgument naming the part and its column) before the database is
touched: the filter never becomes a full scan or a client-side filter.

Storage assumptions (runtime/codec.py writes every document): enums are stored as their
number, Timestamps as Firestore timestamps (microseconds; finer digits of a filter value are
truncated the same way), wrappers as their value, nested messages and maps as maps, repeated
fields as arrays, uint64 values above 2**63-1 as decimal strings, and only set fields are
stored. A field without presence (a plain proto3 scalar) that holds its default value is
therefore absent from the document, and Firestore cannot select documents by a missing field:
a comparison the default value satisfies (``count < 5``, ``done = false``, ``state != ACTIVE``)
is refused rather than answered without those resources. A comparison on an unset field with
presence (message, optional, wrapper) is false, and ``NOT`` is pushed onto the comparisons
(``NOT a > 1`` means ``a <= 1``), so it is false there too.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass

import lark
from google.api import field_behavior_pb2
from google.protobuf import descriptor as _d

from scaffold_runtime.aip import InvalidArgument, behaviors
from scaffold_runtime.codec import is_repeated

MAX_LENGTH = 4096  # characters of filter text
MAX_DEPTH = 32  # nested parentheses / NOT
MAX_DISJUNCTIONS = 30  # Firestore's limit after conversion to disjunctive normal form
MAX_INEQUALITY_FIELDS = 10  # Firestore's limit of fields with range or != filters

_GRAMMAR = r"""
start: expression?
expression: sequence (_AND sequence)*
sequence: factor+
factor: term (_OR term)*
term: NOT simple -> negation
    | MINUS simple -> negation
    | simple
?simple: restriction | composite
restriction: comparable (COMPARATOR arg)?
?comparable: path -> member
    | path _LPAREN (arg (_COMMA arg)*)? _RPAREN -> function
path: value (_DOT field)*
?value: TEXT | STRING
?field: value
?arg: comparable | composite | NUMBER
composite: _LPAREN expression _RPAREN

_AND: "AND"
_OR: "OR"
NOT: "NOT"
MINUS: "-"
COMPARATOR: "<=" | "<" | ">=" | ">" | "!=" | "=" | ":"
NUMBER: /-\d+(\.\d+)?([eE][+-]?\d+)?/
STRING: /"(?:[^"\\]|\\.)*"/s | /'(?:[^'\\]|\\.)*'/s
TEXT: /[^\s.,:()=<>!"'\\-][^\s.,:()=<>!"'\\]*/
_DOT: "."
_COMMA: ","
_LPAREN: "("
_RPAREN: ")"
%ignore /\s+/
"""
_PARSER = lark.Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

_INVERSE = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_OPS = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", ":": "array_contains"}
_RANGE = {"<", "<=", ">", ">="}
_INEQUALITY = _RANGE | {"!="}
_T = _d.FieldDescriptor
_I32, _I64 = (-(2**31), 2**31 - 1), (-(2**63), 2**63 - 1)
_INT_RANGES = {
    _T.TYPE_INT32: _I32, _T.TYPE_SINT32: _I32, _T.TYPE_SFIXED32: _I32,
    _T.TYPE_INT64: _I64, _T.TYPE_SINT64: _I64, _T.TYPE_SFIXED64: _I64,
    _T.TYPE_UINT32: (0, 2**32 - 1), _T.TYPE_FIXED32: (0, 2**32 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1), _T.TYPE_FIXED64: (0, 2**64 - 1),
}
_UNSIGNED64 = (_T.TYPE_UINT64, _T.TYPE_FIXED64)
_WRAPPERS = {
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
}
_TIMESTAMP = "google.protobuf.Timestamp"
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")


class FilterError(InvalidArgument):
    """A filter the server refuses; the message names the part and its column and is safe to return."""

    FIELD = "filter"


def _error(what: str, node=None, text: str = "") -> FilterError:
    where = ""
    if node is not None and getattr(node, "meta", None) is not None and not node.meta.empty:
        where = f" at column {node.meta.column}"
        if text:
            where += f" ({text[node.meta.start_pos:node.meta.end_pos]!r})"
    elif isinstance(node, lark.Token):
        where = f" at column {node.column} ({str(node)!r})"
    return FilterError(f"filter{where}: {what}")


# -- the checked tree -----------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """One type-checked comparison: Firestore field path, operator and stored representation."""

    path: str  # Firestore field path, e.g. "author.country" or "labels.`env-name`"
    op: str  # a Firestore operator: == != < <= > >= array_contains
    value: object  # the value as runtime/codec.py stores it
    text: str  # the part of the filter it came from (for messages)
    column: int
    default: object = None  # the value a document without the field has (None: no match)
    negated: bool = False  # came from under a NOT (op is already inverted)
    kind: str = ""

    def canonical(self) -> str:
        return f"{self.path} {self.op} {_canonical_value(self.value)}"


@dataclass(frozen=True)
class Junction:
    op: str  # "and" | "or"
    children: tuple

    def canonical(self) -> str:
        return f"{self.op}({', '.join(c.canonical() for c in self.children)})"


def _canonical_value(value) -> str:
    if isinstance(value, datetime.datetime):
        return "ts:" + value.isoformat()
    return json.dumps(value)


# -- parsing and checking -------------------------------------------------------------------
@dataclass(frozen=True)
class _Literal:
    text: str
    quoted: bool
    node: object


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", r"\1", body, flags=re.DOTALL)


class _Checker:
    def __init__(self, descriptor, text: str, stored: set[str]) -> None:
        self.descriptor = descriptor
        self.text = text
        self.stored = stored  # field paths every document has

    def error(self, what: str, node=None) -> FilterError:
        return _error(what, node, self.text)

    def walk(self, node, negate: bool, depth: int):
        """The checked tree of ``node`` with NOT pushed onto the comparisons."""
        if depth > MAX_DEPTH:
            raise self.error(f"nested more than {MAX_DEPTH} levels deep", node)
        kind = node.data
        if kind in ("expression", "sequence", "factor"):
            parts = [self.walk(c, negate, depth + 1) for c in node.children]
            if len(parts) == 1:
                return parts[0]
            conj = kind != "factor"
            if negate:
                conj = not conj  # De Morgan
            return Junction("and" if conj else "or", tuple(parts))
        if kind == "term":
            return self.walk(node.children[0], negate, depth + 1)
        if kind == "negation":
            return self.walk(node.children[1], not negate, depth + 1)
        if kind == "composite":
            return self.walk(node.children[0], negate, depth + 1)
        if kind == "function":
            raise self.error("functions are not supported", node)
        if kind == "restriction":
            return self.restriction(node, negate)
        raise self.error("unexpected expression", node)

    def restriction(self, node, negate: bool) -> Comparison:
        left = node.children[0]
        if left.data != "member":
            raise self.error("functions are not supported", left)
        if len(node.children) == 1:
            raise self.error("a bare value is not a comparison: write field = value", node)
        _, comparator, arg = node.children
        names = []
        for part in left.children[0].children:
            if part.type == "STRING":
                raise self.error("a field name cannot be a quoted string", part)
            names.append(str(part))
        literal = self.literal(arg)
        fd, fs_path, repeated, in_map = self.resolve(names, left)
        op = _OPS[str(comparator)]
        if op == "array_contains":
            if not repeated:
                raise self.error(f"':' needs a repeated field; {'.'.join(names)} is not repeated (use '=')", node)
            if negate:
                raise self.error("NOT cannot apply to ':' (Firestore has no 'does not contain')", node)
        elif repeated:
            raise self.error(f"{'.'.join(names)} is repeated: use {'.'.join(names)}:value to test membership", node)
        if negate:
            op = _INVERSE[op]
        kind, value, default = self.convert(fd, literal, op, node, in_map)
        piece = self.text[node.meta.start_pos:node.meta.end_pos]
        if fs_path in self.stored:
            default = None  # never absent
        return Comparison(fs_path, op, value, piece, node.meta.column, default, negate, kind)

    def literal(self, arg) -> _Literal:
        if isinstance(arg, lark.Token):  # NUMBER
            return _Literal(str(arg), False, arg)
        if arg.data == "composite":
            raise self.error("a value cannot be a parenthesised expression", arg)
        if arg.data == "function":
            raise self.error("functions are not supported", arg)
        parts = arg.children[0].children
        if len(parts) == 1 and parts[0].type == "STRING":
            return _Literal(_unquote(str(parts[0])), True, arg)
        if any(p.type == "STRING" for p in parts):
            raise self.error("a value is either one quoted string or unquoted text", arg)
        return _Literal(".".join(str(p) for p in parts), False, arg)  # 1.5 lexes as 1 . 5

    def resolve(self, names: list[str], node):
        try:
            return resolve(self.descriptor, names)
        except ValueError as exc:
            raise self.error(str(exc), node) from None

    def convert(self, fd, literal: _Literal, op: str, node, in_map: bool = False):
        """``(type name, stored value, the value an absent field reads as, or None)``.

        A map value or a field with presence that is absent is unset (no comparison holds);
        any other absent field holds its default value."""
        name = fd.name
        presence = fd.has_presence or is_repeated(fd) or in_map
        if fd.type == _T.TYPE_MESSAGE:
            full = fd.message_type.full_name
            if full == _TIMESTAMP:
                return "timestamp", self.timestamp(literal, node), None
            if full in _WRAPPERS:
                kind, value, _ = self.convert(fd.message_type.fields_by_name["value"], literal, op, node)
                return kind, value, None
            raise self.error(f"{name} is a message: compare one of its fields, e.g. {name}.field = value", node)
        kind, value = self.scalar(fd, literal, op, node)
        return kind, value, None if presence else fd.default_value

    def scalar(self, fd, literal: _Literal, op: str, node):
        name = fd.name
        ordered = op in _RANGE
        if fd.type == _T.TYPE_STRING:
            if "*" in _unescaped(literal):
                raise self.error("wildcards ('*') are not supported; escape a literal star as \\*", literal.node)
            return "string", literal.text
        if fd.type == _T.TYPE_BOOL:
            if literal.quoted or literal.text not in ("true", "false"):
                raise self.error(f"{name} is a bool: compare it with true or false", literal.node)
            if ordered:
                raise self.error(f"{name} is a bool: use = or !=", node)
            return "bool", literal.text == "true"
        if fd.type == _T.TYPE_ENUM:
            value = fd.enum_type.values_by_name.get(literal.text)
            if value is None:
                names = ", ".join(v.name for v in fd.enum_type.values[:8])
                raise self.error(f"{name} is an enum {fd.enum_type.name}: use one of its names ({names})", literal.node)
            if ordered:
                raise self.error(f"{name} is an enum: use = or !=", node)
            return "enum", value.number
        if fd.type in _INT_RANGES:
            if literal.quoted or not _INT_RE.match(literal.text):
                raise self.error(f"{name} is an integer: {literal.text!r} is not one", literal.node)
            value = int(literal.text)
            low, high = _INT_RANGES[fd.type]
            if not low <= value <= high:
                raise self.error(f"{name} is out of range [{low}, {high}]", literal.node)
            if fd.type in _UNSIGNED64:
                if ordered:
                    raise self.error(f"{name} is a 64-bit unsigned field, stored partly as strings: use = or !=", node)
                return "integer", str(value) if value > 2**63 - 1 else value
            return "integer", value
        if fd.cpp_type in (_T.CPPTYPE_FLOAT, _T.CPPTYPE_DOUBLE):
            if literal.quoted or not _NUMBER_RE.match(literal.text) or not math.isfinite(float(literal.text)):
                raise self.error(f"{name} is a number: {literal.text!r} is not a finite number", literal.node)
            return "number", float(literal.text)
        kind = "bytes" if fd.type == _T.TYPE_BYTES else fd.type
        raise self.error(f"{name} has a type ({kind}) filters do not support", node)

    def timestamp(self, literal: _Literal, node) -> datetime.datetime:
        m = _RFC3339.match(literal.text)
        try:
            if not m:
                raise ValueError
            fraction = (m.group(3) or ".0")[1:7].ljust(6, "0")
            zone = m.group(4).upper().replace("Z", "+00:00")
            value = datetime.datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}.{fraction}{zone}")
            return value.astimezone(datetime.UTC)
        except ValueError:
            raise self.error(f"{literal.text!r} is not an RFC 3339 time such as \"2024-05-01T12:00:00Z\"",
                             literal.node) from None


def resolve(descriptor, names: list[str]):
    """``(field descriptor, Firestore field path, is repeated, is a map value)`` of a member path.

    Goes through nested messages and map keys (``labels.env``); Timestamps and wrappers are
    leaves. Raises ValueError (a message naming the path) for an unknown or unreachable field.
    """
    from google.cloud.firestore_v1.field_path import FieldPath

    desc, fd, in_map = descriptor, None, False
    segments: list[str] = []
    i = 0
    while i < len(names):
        name = names[i]
        if desc is None:
            raise ValueError(f"{'.'.join(names[:i])} has no fields")
        fd = desc.fields_by_name.get(name)
        if fd is None:
            raise ValueError(f"{descriptor.name} has no field {'.'.join(names[:i + 1])}")
        segments.append(name)
        i += 1
        message = fd.message_type if fd.type == _T.TYPE_MESSAGE else None
        in_map = False
        if message is not None and message.GetOptions().map_entry:
            if i == len(names):
                raise ValueError(f"{'.'.join(names)} is a map: use one entry, e.g. {name}.key")
            segments.append(names[i])
            i += 1
            fd, in_map = message.fields_by_name["value"], True
            message = fd.message_type if fd.type == _T.TYPE_MESSAGE else None
        elif is_repeated(fd) and i < len(names):
            raise ValueError(f"{'.'.join(names[:i])} is repeated: fields of its elements cannot be used")
        special = message is not None and (message.full_name in _WRAPPERS or message.full_name == _TIMESTAMP)
        desc = message if message is not None and not special else None
        if special and i < len(names):
            raise ValueError(f"{'.'.join(names[:i])} is a {message.full_name}: use it as a whole")
    return fd, FieldPath(*segments).to_api_repr(), is_repeated(fd) and not _is_map(fd), in_map


def _is_map(fd) -> bool:
    return fd.type == _T.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _unescaped(literal: _Literal) -> str:
    """The literal with escaped characters removed (to find wildcards the caller meant)."""
    if not literal.quoted:
        return literal.text
    raw = str(literal.node.children[0].children[0])[1:-1]
    return re.sub(r"\\.", "", raw, flags=re.DOTALL)


def _holds(default, op: str, value) -> bool:
    """Whether ``default op value`` (a document without the field) would match."""
    if type(default) is not type(value) and not (isinstance(default, int | float) and isinstance(value, int | float)):
        return op == "!="
    return {"==": default == value, "!=": default != value, "<": default < value, "<=": default <= value,
            ">": default > value, ">=": default >= value}.get(op, False)


# -- Firestore limits -----------------------------------------------------------------------
def _conjunctions(node) -> list[list[Comparison]]:
    """The filter in disjunctive normal form (capped just above Firestore's limit)."""
    if isinstance(node, Comparison):
        return [[node]]
    groups = [_conjunctions(c) for c in node.children]
    if node.op == "or":
        return [conj for g in groups for conj in g][: MAX_DISJUNCTIONS + 1]
    result: list[list[Comparison]] = [[]]
    for g in groups:
        result = [a + b for a in result for b in g][: MAX_DISJUNCTIONS + 1]
    return result


def _check_defaults(conj: list[Comparison]) -> None:
    """Refuse an AND group that a resource holding a field's unset default would match: such
    a field is not stored, and Firestore never matches a document without the field."""
    for c in conj:
        if c.default is None or not _holds(c.default, c.op, c.value):
            continue
        if all(_holds(c.default, o.op, o.value) for o in conj if o.path == c.path):
            meaning = f" (under NOT: {c.path} {c.op} {_canonical_value(c.value)})" if c.negated else ""
            raise FilterError(
                f"filter at column {c.column} ({c.text!r}): this{meaning} also matches every resource whose "
                f"{c.path} is unset ({c.kind} default {_canonical_value(c.default)}), and those are stored "
                "without the field, so Firestore cannot find them; compare against a value the default does not "
                f"satisfy, or add a comparison on {c.path} that excludes it")


def stored_fields(descriptor, always_present=()) -> set[str]:
    """Field paths every document has: REQUIRED top-level fields and ``always_present``."""
    return set(always_present) | {fd.name for fd in descriptor.fields if field_behavior_pb2.REQUIRED in behaviors(fd)}


def _check_limits(root, stored: set[str]) -> None:
    dnf = _conjunctions(root)
    if len(dnf) > MAX_DISJUNCTIONS:
        raise FilterError(f"filter: more than {MAX_DISJUNCTIONS} alternatives once expanded (Firestore's limit); "
                          "simplify the OR groups")
    leaves = [c for conj in dnf for c in conj]
    not_equal = {(c.column, c.text) for c in leaves if c.op == "!="}
    if len(not_equal) > 1:
        parts = ", ".join(f"{t!r} at column {col}" for col, t in sorted(not_equal))
        raise FilterError(f"filter: Firestore allows one '!=' per query; found {parts}")
    for conj in dnf:
        contains = [c for c in conj if c.op == "array_contains"]
        if len(contains) > 1:
            raise FilterError(f"filter at column {contains[1].column} ({contains[1].text!r}): Firestore allows one "
                              "':' membership test per AND group")
    for conj in dnf:
        _check_defaults(conj)
    fields = {c.path for c in leaves if c.op in _INEQUALITY}
    if len(fields) > MAX_INEQUALITY_FIELDS:
        raise FilterError(f"filter: range or != comparisons on more than {MAX_INEQUALITY_FIELDS} fields")
    # Firestore drops every document without a field that has a range or != comparison,
    # even where that comparison sits in an OR branch the document does not need.
    present = Filter(root).present_fields() | stored
    for c in leaves:
        if c.op in _INEQUALITY and c.path not in present:
            raise FilterError(
                f"filter at column {c.column} ({c.text!r}): Firestore would also drop every resource without "
                f"{c.path} from the other OR branches; compare {c.path} with = there, or split the request")


# -- the public API -------------------------------------------------------------------------
class Filter:
    """A parsed, type-checked filter. ``bool(f)`` is False for an empty filter."""

    def __init__(self, root) -> None:
        self.root = root

    def __bool__(self) -> bool:
        return self.root is not None

    @property
    def canonical(self) -> str:
        """A stable text of the parsed filter ("" when empty): same meaning, same text."""
        return self.root.canonical() if self.root is not None else ""

    def comparisons(self) -> list[Comparison]:
        out, todo = [], [self.root] if self.root is not None else []
        while todo:
            node = todo.pop()
            if isinstance(node, Comparison):
                out.append(node)
            else:
                todo.extend(node.children)
        return out

    def inequality_fields(self) -> list[str]:
        """Firestore field paths with range or != comparisons, sorted (they need an index order)."""
        return sorted({c.path for c in self.comparisons() if c.op in _INEQUALITY})

    def present_fields(self) -> set[str]:
        """Field paths every matching document has (each comparison needs its field stored)."""
        def present(node) -> set[str]:
            if isinstance(node, Comparison):
                return {node.path}
            sets = [present(c) for c in node.children]
            return set.union(*sets) if node.op == "and" else set.intersection(*sets)

        return present(self.root) if self.root is not None else set()

    def firestore_filter(self):
        """The Firestore FieldFilter / And / Or for this filter, or None when empty."""
        from google.cloud.firestore_v1.base_query import And, FieldFilter, Or

        def build(node):
            if isinstance(node, Comparison):
                return FieldFilter(node.path, node.op, node.value)
            return (And if node.op == "and" else Or)([build(c) for c in node.children])

        return build(self.root) if self.root is not None else None

    def apply(self, query):
        """``query`` narrowed by this filter (unchanged when the filter is empty)."""
        built = self.firestore_filter()
        return query.where(filter=built) if built is not None else query


def parse(text: str, descriptor, *, always_present=()) -> Filter:
    """Parse and type-check AIP-160 ``text`` against message ``descriptor``.

    ``always_present``: field paths the store writes on every document (name, create_time,
    ...). Returns a Filter (empty for blank text). Raises FilterError for a syntax error, an
    unknown field, a value of the wrong type, an operator the field's type does not take,
    or a filter Firestore cannot answer exactly (the message names the part and column).
    """
    if not isinstance(text, str):
        raise FilterError("filter must be a string")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter is longer than {MAX_LENGTH} characters")
    try:
        tree = _PARSER.parse(text)
    except lark.exceptions.UnexpectedCharacters as exc:
        raise FilterError(f"filter at column {exc.column}: unexpected character {text[exc.pos_in_stream]!r}") from None
    except lark.exceptions.UnexpectedToken as exc:
        if exc.token.type == "$END":
            raise FilterError("filter: ends too early (an operator or value is missing)") from None
        raise FilterError(f"filter at column {exc.column}: unexpected {str(exc.token)!r}") from None
    except lark.exceptions.LarkError:
        raise FilterError("filter: cannot be parsed") from None
    if not tree.children:
        return Filter(None)
    stored = stored_fields(descriptor, always_present)
    root = _Checker(descriptor, text, stored).walk(tree.children[0], False, 0)
    _check_limits(root, stored)
    return Filter(root)
