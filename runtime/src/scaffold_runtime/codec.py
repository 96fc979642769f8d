"""Protobuf messages <-> Firestore documents, keeping every field type.

- scalars as Firestore numbers, strings, booleans; bytes as bytes; enums as their number;
  64-bit unsigned values above Firestore's int64 range as decimal strings
- google.protobuf.Timestamp as a Firestore timestamp (microsecond precision, Firestore's own)
- wrapper types (StringValue, Int64Value, ...) as their value
- nested messages as maps, repeated fields as arrays, map fields as maps with string keys;
  a key Firestore cannot hold ("" or ``__x__``) and a key starting with ``~`` are stored as
  ``~`` + key, every other key as itself (so documents written before this rule read the same,
  except for keys that began with ``~``, which no released neuron has written: the rule
  shipped with the first release that stores maps)
- only fields that are set are stored, so oneofs and optional fields keep their presence
- a message Firestore cannot hold (maps/arrays nested deeper than 20, a map key over 1,500
  bytes) raises :class:`Unstorable` naming the field
- reading never fails on a field it cannot decode (another writer, an older schema): the field
  is left unset and a warning names the document and field (once per process)
"""

from __future__ import annotations

import datetime
import logging
import re

from google.protobuf import descriptor as _d
from google.protobuf import timestamp_pb2

_INT64_MAX = 2**63 - 1
_WRAPPERS = {
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
}
_TIMESTAMP = "google.protobuf.Timestamp"
_UNSIGNED64 = (_d.FieldDescriptor.TYPE_UINT64, _d.FieldDescriptor.TYPE_FIXED64)
MAX_DEPTH = 20  # Firestore: maps and arrays nest at most 20 deep
MAX_KEY_BYTES = 1500
_RESERVED_KEY = re.compile(r"^__.*__$", re.DOTALL)
_ESCAPE = "~"
log = logging.getLogger("scaffold_runtime.codec")
_warned: set[tuple[str, str]] = set()
_WARN_LIMIT = 1000  # distinct (document, field) warnings remembered


class Unstorable(ValueError):
    """A valid message Firestore cannot hold; the message names the field (safe to send back)."""


def encode_key(key: str) -> str:
    """A map key as a Firestore field name; :func:`decode_key` reverses it exactly."""
    return _ESCAPE + key if not key or key.startswith(_ESCAPE) or _RESERVED_KEY.match(key) else key


def decode_key(stored: str) -> str:
    return stored[1:] if stored.startswith(_ESCAPE) else stored


def _is_map(fd) -> bool:
    return fd.type == _d.FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def is_repeated(fd) -> bool:
    flag = getattr(fd, "is_repeated", None)  # protobuf >= 5.28; ``label`` is deprecated
    return flag if flag is not None else fd.label == fd.LABEL_REPEATED


def _encode_scalar(fd, value, path: str, depth: int):
    if fd.type == _d.FieldDescriptor.TYPE_MESSAGE:
        return _encode_message(value, path, depth)
    if fd.type in _UNSIGNED64 and value > _INT64_MAX:
        return str(value)
    return value  # bytes stay bytes, enums are ints already


def _encode_message(msg, path: str, depth: int):
    name = msg.DESCRIPTOR.full_name
    if name == _TIMESTAMP:
        return msg.ToDatetime(tzinfo=datetime.UTC)
    if name in _WRAPPERS:
        return _encode_scalar(msg.DESCRIPTOR.fields_by_name["value"], msg.value, path, depth)
    return _to_map(msg, path, depth)


def _nest(path: str, depth: int) -> int:
    """``depth`` (of a map or array about to be written at ``path``); Unstorable past MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise Unstorable(f"{path[:200]} is nested too deeply to store (the database holds {MAX_DEPTH} levels)")
    return depth


def _to_map(msg, prefix: str, depth: int) -> dict:
    _nest(prefix, depth)
    out = {}
    for fd, value in msg.ListFields():
        path = f"{prefix}.{fd.name}" if prefix else fd.name
        if _is_map(fd):
            value_fd = fd.message_type.fields_by_name["value"]
            inner = _nest(path, depth + 1)
            entries = {}
            for k, v in value.items():
                key = encode_key(str(k).lower() if isinstance(k, bool) else str(k))
                if len(key.encode()) > MAX_KEY_BYTES:
                    raise Unstorable(f"{path} has a key longer than {MAX_KEY_BYTES - 1} bytes")
                entries[key] = _encode_scalar(value_fd, v, f"{path}[{key[:40]!r}]", inner + 1)
            out[fd.name] = entries
        elif is_repeated(fd):
            inner = _nest(path, depth + 1)
            out[fd.name] = [_encode_scalar(fd, v, f"{path}[{i}]", inner + 1) for i, v in enumerate(value)]
        else:
            out[fd.name] = _encode_scalar(fd, value, path, depth + 1)
    return out


def to_document(msg) -> dict:
    """The set fields of ``msg`` as a Firestore-storable dict; raises :class:`Unstorable`."""
    return _to_map(msg, "", 0)


def _decode_key(fd, key: str):
    key = decode_key(key)
    if fd.type == _d.FieldDescriptor.TYPE_STRING:
        return key
    if fd.type == _d.FieldDescriptor.TYPE_BOOL:
        if key not in ("true", "false"):
            raise ValueError(f"bool map key {key!r}")
        return key == "true"
    return int(key)


def _warn(document: str, field: str, exc: Exception) -> None:
    """Log once per (document, field) that a stored field could not be read."""
    if (document, field) in _warned:
        return
    if len(_warned) < _WARN_LIMIT:
        _warned.add((document, field))
    log.warning("skipped unreadable field %s of document %s: %s", field, document, type(exc).__name__,
                extra={"fields": {"document": document, "field": field, "error": str(exc)[:200]}})


def _decode_field(target, fd, value) -> None:
    key = fd.name
    if _is_map(fd):
        key_fd = fd.message_type.fields_by_name["key"]
        value_fd = fd.message_type.fields_by_name["value"]
        container = getattr(target, key)
        for k, v in value.items():
            if value_fd.type == _d.FieldDescriptor.TYPE_MESSAGE:
                _decode_into(container[_decode_key(key_fd, k)], v)
            else:
                container[_decode_key(key_fd, k)] = _decode_scalar(value_fd, v)
    elif is_repeated(fd):
        container = getattr(target, key)
        for v in value:
            if fd.type == _d.FieldDescriptor.TYPE_MESSAGE:
                _decode_into(container.add(), v)
            else:
                container.append(_decode_scalar(fd, v))
    elif fd.type == _d.FieldDescriptor.TYPE_MESSAGE:
        sub = getattr(target, key)
        sub.SetInParent()
        _decode_into(sub, value)
    else:
        setattr(target, key, _decode_scalar(fd, value))


class _Unreadable(Exception):
    """A field deep inside could not be decoded; carries its dotted path."""

    def __init__(self, path: str, cause: Exception) -> None:
        super().__init__(path)
        self.path, self.cause = path, cause


def _decode_into(target, data) -> None:
    """Fill message ``target`` from a document value ``data``; raises _Unreadable naming the
    first field that does not fit (the caller drops that top-level field)."""
    name = target.DESCRIPTOR.full_name
    if name == _TIMESTAMP:
        if isinstance(data, datetime.datetime):
            target.CopyFrom(_timestamp(data))
        return
    if name in _WRAPPERS:
        try:
            target.value = _decode_scalar(target.DESCRIPTOR.fields_by_name["value"], data)
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise _Unreadable("value", exc) from None
        return
    if not isinstance(data, dict):
        raise _Unreadable("", TypeError(f"expected a map, found {type(data).__name__}"))
    fields = target.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        fd = fields.get(key)
        if fd is None or value is None:
            continue  # a field removed from the proto since the document was written
        try:
            _decode_field(target, fd, value)
        except _Unreadable as exc:
            raise _Unreadable(f"{key}.{exc.path}".rstrip("."), exc.cause) from None
        except (TypeError, ValueError, AttributeError, OverflowError, KeyError) as exc:
            raise _Unreadable(key, exc) from None


def _timestamp(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    ts.FromDatetime(value)
    nanos = getattr(value, "nanosecond", None)  # Firestore's DatetimeWithNanoseconds
    if nanos:
        ts.nanos = nanos
    return ts


def _decode_scalar(fd, value):
    if fd.type in _UNSIGNED64 and isinstance(value, str):
        return int(value)
    if fd.cpp_type in (_d.FieldDescriptor.CPPTYPE_FLOAT, _d.FieldDescriptor.CPPTYPE_DOUBLE):
        return float(value)
    return value


def from_document(cls, data: dict, document: str = ""):
    """A ``cls`` message from a document written by :func:`to_document`.

    A top-level field that cannot be decoded (wrong type, written by someone else or by an older
    schema) is left unset and logged once (naming ``document`` and the field); never raises."""
    msg = cls()
    fields = cls.DESCRIPTOR.fields_by_name
    for key, value in (data or {}).items():
        fd = fields.get(key)
        if fd is None or value is None:
            continue
        try:
            _decode_field(msg, fd, value)
        except _Unreadable as exc:
            msg.ClearField(key)
            _warn(document, f"{key}.{exc.path}".rstrip("."), exc.cause)
        except (TypeError, ValueError, AttributeError, OverflowError, KeyError) as exc:
            msg.ClearField(key)
            _warn(document, key, exc)
    return msg
