"""AIP-132 ``order_by`` for List methods on Firestore, with cursors for page tokens.

    o = ordering.parse("publisher, create_time desc", Book.DESCRIPTOR, filter=f, always_present=("create_time",))
    query = o.apply(f.apply(collection)).limit(n + 1)
    token_cursor = o.cursor(last_snapshot)          # str, goes inside the signed page token
    query = o.start_after(query, token_cursor)      # the next page

Every ordering ends with the inequality fields of the filter (Firestore sorts by them
anyway; naming them keeps cursors exact) and then the document name, so equal values
page in a stable order. Firestore leaves out documents that lack an order_by field, and
runtime/codec.py stores only set fields, so ordering by a field that may be unset is refused
unless the field is always stored: REQUIRED fields, fields the store always writes
(``always_present``: name, create_time, ...) or fields the filter compares (every match has
them).
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass

from google.protobuf import descriptor as _d

from scaffold_runtime.aip import InvalidArgument
from scaffold_runtime.filtering import resolve, stored_fields

MAX_LENGTH = 1024
_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_T = _d.FieldDescriptor
_UNORDERABLE = {_T.TYPE_BYTES: "bytes", _T.TYPE_UINT64: "uint64 (stored partly as strings)",
                _T.TYPE_FIXED64: "fixed64 (stored partly as strings)"}
_ORDERABLE_MESSAGES = {
    "google.protobuf.Timestamp", "google.protobuf.DoubleValue", "google.protobuf.FloatValue",
    "google.protobuf.Int64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue",
}
NAME = "__name__"


class OrderError(InvalidArgument):
    """An order_by the server refuses; the message names the part and is safe to return."""

    FIELD = "order_by"


@dataclass(frozen=True)
class Order:
    path: str  # Firestore field path, or "__name__"
    descending: bool

    @property
    def direction(self) -> str:
        return "DESCENDING" if self.descending else "ASCENDING"

    def canonical(self) -> str:
        return f"{self.path} {'desc' if self.descending else 'asc'}"


class Ordering:
    """The full order of a List query: requested fields, filter inequality fields, then name."""

    def __init__(self, orders: tuple[Order, ...]) -> None:
        self.orders = orders

    @property
    def canonical(self) -> str:
        """A stable text of the full order, for the page-token scope."""
        return ", ".join(o.canonical() for o in self.orders)

    def apply(self, query):
        """``query`` ordered by every order of this Ordering."""
        for o in self.orders:
            query = query.order_by(o.path, direction=o.direction)
        return query

    def cursor(self, snapshot) -> str:
        """The position just after ``snapshot`` (a document of the ordered query) as JSON text."""
        values = []
        for o in self.orders:
            value = snapshot.id if o.path == NAME else snapshot.get(o.path)
            values.append({"t": value.isoformat()} if isinstance(value, datetime.datetime) else value)
        return json.dumps(values, separators=(",", ":"))

    def start_after(self, query, cursor: str):
        """``query`` continuing after the document ``cursor`` (from :meth:`cursor`) describes.

        Raises InvalidArgument if the cursor does not fit this ordering."""
        try:
            raw = json.loads(cursor)
            if not isinstance(raw, list) or len(raw) != len(self.orders) or not isinstance(raw[-1], str):
                raise ValueError
            values = [datetime.datetime.fromisoformat(v["t"]) if isinstance(v, dict) else v for v in raw]
        except (ValueError, TypeError, KeyError):
            raise InvalidArgument("page_token is not valid for this order_by: pass next_page_token unchanged",
                                  field="page_token") from None
        return query.start_after(values)


def _field(descriptor, name: str, column: int):
    """The Firestore path of order_by field ``name``; OrderError if it cannot be ordered by."""
    if not _FIELD_RE.match(name):
        raise OrderError(f"order_by at column {column}: {name!r} is not a field path (fields separated by '.')")
    try:
        fd, path, repeated, _ = resolve(descriptor, name.split("."))
    except ValueError as exc:
        raise OrderError(f"order_by at column {column} ({name!r}): {exc}") from None
    if repeated or (fd.type == _T.TYPE_MESSAGE and fd.message_type.full_name not in _ORDERABLE_MESSAGES):
        kind = "repeated" if repeated else "a message"
        raise OrderError(f"order_by at column {column} ({name!r}): a {kind} field cannot be ordered by")
    if fd.type in _UNORDERABLE:
        raise OrderError(f"order_by at column {column} ({name!r}): {_UNORDERABLE[fd.type]} fields cannot be ordered by")
    return fd, path


def parse(text: str, descriptor, *, filter=None, always_present=()) -> Ordering:
    """Parse AIP-132 ``order_by`` (``"a, b.c desc"``) against message ``descriptor``.

    ``filter``: the request's parsed filtering.Filter (its compared fields are known to be
    stored; its inequality fields join the order). ``always_present``: field paths the store
    writes on every document. Returns an Ordering that always ends with the document name.
    Raises OrderError for a syntax error, an unknown, repeated, message or duplicate field,
    or a field some documents may lack (Firestore would leave those documents out).
    """
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        raise OrderError(f"order_by must be text of at most {MAX_LENGTH} characters")
    stored = stored_fields(descriptor, always_present) | (filter.present_fields() if filter else set())
    orders: list[Order] = []
    column = 1
    for item in text.split(",") if text.strip() else []:
        words = item.split()
        where = column + len(item) - len(item.lstrip())
        column += len(item) + 1
        if not words or len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
            raise OrderError(f"order_by at column {where}: expected 'field' or 'field desc', got {item.strip()!r}")
        _, path = _field(descriptor, words[0], where)
        if any(o.path == path for o in orders):
            raise OrderError(f"order_by at column {where}: {words[0]!r} is listed twice")
        if path not in stored:
            raise OrderError(
                f"order_by at column {where} ({words[0]!r}): resources where {words[0]} is unset are stored "
                f"without it and Firestore would leave them out; order by a required field, or filter on "
                f"{words[0]} too")
        orders.append(Order(path, len(words) == 2 and words[1] == "desc"))
    last = orders[-1].descending if orders else False
    for path in filter.inequality_fields() if filter else ():
        if all(o.path != path for o in orders):
            orders.append(Order(path, last))
    orders.append(Order(NAME, last))
    return Ordering(tuple(orders))


# -- composite indexes ----------------------------------------------------------------------
# Firestore answers a query that needs a composite index it lacks with FAILED_PRECONDITION
# "The query requires an index. You can create it here: https://console.firebase.google.com/
# .../indexes?create_composite=<base64 google.firestore.admin.v1.Index>". The Firestore
# emulator never requires indexes, so this only happens against the real database.
_INDEX_URL = re.compile(r"create_composite=([A-Za-z0-9_\-]+)")
_DIRECTIONS = {1: "ASCENDING", 2: "DESCENDING"}


def _wire(data: bytes):
    """``(field number, value)`` pairs of a protobuf message (varint and length-delimited only)."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, kind = key >> 3, key & 7
        if kind == 0:
            yield number, varint()
        elif kind == 2:
            size = varint()
            if i + size > len(data):
                raise ValueError("truncated")
            yield number, data[i:i + size]
            i += size
        else:
            raise ValueError(f"wire type {kind}")


def missing_index(exc) -> str | None:
    """A message naming the composite index a FailedPrecondition ``exc`` asks for, else None.

    E.g. "the query needs a composite index on collection books: publisher ASCENDING,
    create_time DESCENDING, __name__ DESCENDING; declare it in indexes.toml and deploy".
    The store aborts with FAILED_PRECONDITION and this message (no project ids, no URL)."""
    text = str(getattr(exc, "message", "") or exc)
    if "requires an index" not in text:
        return None
    match = _INDEX_URL.search(text)
    collection, fields = "", []
    if match:
        try:
            raw = match.group(1)
            import base64

            index = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
            for number, value in _wire(index):
                if number == 1 and isinstance(value, bytes):  # name: .../collectionGroups/C/indexes/_
                    parts = value.decode().split("/")
                    collection = parts[parts.index("collectionGroups") + 1] if "collectionGroups" in parts else ""
                elif number == 3 and isinstance(value, bytes):  # IndexField
                    path, order = "", ""
                    for n, v in _wire(value):
                        if n == 1 and isinstance(v, bytes):
                            path = v.decode()
                        elif n == 2 and isinstance(v, int):
                            order = _DIRECTIONS.get(v, "")
                        elif n == 3:
                            order = "CONTAINS"
                    fields.append(f"{path} {order}".strip())
        except (ValueError, IndexError, UnicodeDecodeError):
            collection, fields = "", []
    if not fields:
        return "the query needs a composite index that is not deployed; declare it in indexes.toml and deploy"
    where = f" on collection {collection}" if collection else ""
    return f"the query needs a composite index{where}: {', '.join(fields)}; declare it in indexes.toml and deploy"
