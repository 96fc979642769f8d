"""Protobuf messages <-> Firestore documents, keeping every field type.

- scalars as Firestore numbers, strings, booleans; bytes as bytes; enums as their number;
  64-bit unsigned values above Firestore's int64 range as decimal strings
- google.protobuf.Timestamp as a Firestore timestamp (microsecond precision, Firestore's own)
- wrapper types (StringValue, Int64Value, ...) as their value
- nested messages as maps, repeated fields as arrays, map fields as maps with string keys
- only fields that are set are stored, so oneofs and optional fields keep their presence
"""

from __future__ import annotations

import datetime

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


def _is_map(fd) -> bool:
    return fd.type == _d.FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def is_repeated(fd) -> bool:
    flag = getattr(fd, "is_repeated", None)  # protobuf >= 5.28; ``label`` is deprecated
    return flag if flag is not None else fd.label == fd.LABEL_REPEATED


def _encode_scalar(fd, value):
    if fd.type == _d.FieldDescriptor.TYPE_MESSAGE:
        return _encode_message(value)
    if fd.type in _UNSIGNED64 and value > _INT64_MAX:
        return str(value)
    return value  # bytes stay bytes, enums are ints already


def _encode_message(msg):
    name = msg.DESCRIPTOR.full_name
    if name == _TIMESTAMP:
        return msg.ToDatetime(tzinfo=datetime.UTC)
    if name in _WRAPPERS:
        return _encode_scalar(msg.DESCRIPTOR.fields_by_name["value"], msg.value)
    return to_document(msg)


def to_document(msg) -> dict:
    """The set fields of ``msg`` as a Firestore-storable dict."""
    out = {}
    for fd, value in msg.ListFields():
        if _is_map(fd):
            value_fd = fd.message_type.fields_by_name["value"]
            out[fd.name] = {str(k).lower() if isinstance(k, bool) else str(k): _encode_scalar(value_fd, v)
                            for k, v in value.items()}
        elif is_repeated(fd):
            out[fd.name] = [_encode_scalar(fd, v) for v in value]
        else:
            out[fd.name] = _encode_scalar(fd, value)
    return out


def _decode_key(fd, key: str):
    if fd.type == _d.FieldDescriptor.TYPE_STRING:
        return key
    if fd.type == _d.FieldDescriptor.TYPE_BOOL:
        return key == "true"
    return int(key)


def _decode_into(target, data) -> None:
    """Fill message ``target`` from a document value ``data``."""
    name = target.DESCRIPTOR.full_name
    if name == _TIMESTAMP:
        if isinstance(data, datetime.datetime):
            target.CopyFrom(_timestamp(data))
        return
    if name in _WRAPPERS:
        target.value = _decode_scalar(target.DESCRIPTOR.fields_by_name["value"], data)
        return
    fields = target.DESCRIPTOR.fields_by_name
    for key, value in (data or {}).items():
        fd = fields.get(key)
        if fd is None or value is None:
            continue  # a field removed from the proto since the document was written
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


def from_document(cls, data: dict):
    """A ``cls`` message from a document written by :func:`to_document`."""
    msg = cls()
    _decode_into(msg, data)
    return msg
