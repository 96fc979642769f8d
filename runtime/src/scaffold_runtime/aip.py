"""AIP rules the standard methods share: names and ids, page tokens, field masks, behaviours.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re

from google.api import field_behavior_pb2
from google.protobuf import descriptor as _d

from scaffold_runtime.codec import is_repeated

ID_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")  # AIP-122
# A name segment that can never be a resource id: Firestore's reserved names, path tricks,
# and ``:`` (reserved for custom methods, ``name:verb``), so a route is never read as a name.
UNSAFE_ID = re.compile(r"^(\.|\.\.|__.*__)$|:")
ECHO_LIMIT = 100
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class InvalidArgument(ValueError):
    """A request the client must fix; the message is safe to send back.

    ``field``: the request field(s) at fault (``"book.title"``, or several), which become
    AIP-193 ``google.rpc.BadRequest`` field violations; subclasses may set ``FIELD``."""

    FIELD = ""

    def __init__(self, message: str = "", *, field: str | tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        fields = (field,) if isinstance(field, str) else tuple(field)
        self.fields: tuple[str, ...] = tuple(f for f in fields if f) or ((self.FIELD,) if self.FIELD else ())


def clip(value, limit: int = ECHO_LIMIT) -> str:
    """``str(value)`` cut to ``limit`` characters (+ "…"), unquoted: a huge input never turns
    into a huge status (gRPC refuses metadata over ~8 KiB)."""
    text = str(value)
    return text[:limit] + "…" if len(text) > limit else text


def echo(value) -> str:
    """``value`` quoted for an error message (Python repr), cut as :func:`clip` does."""
    return repr(clip(value))


def field_list(names: list[str], limit: int = 5) -> str:
    """``names`` joined for a message: the first ``limit`` (each cut short) and how many more."""
    shown = ", ".join(n if len(n) <= ECHO_LIMIT else n[:ECHO_LIMIT] + "…" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def is_safe_id(segment: str) -> bool:
    """Whether ``segment`` can be one resource id: non-empty, no ``/``, not reserved, no ``:``."""
    return bool(segment) and "/" not in segment and not UNSAFE_ID.search(segment) and len(segment.encode()) <= 1500


def check_id(value: str, field: str) -> str:
    """``value`` if it is an AIP-122 id; raises InvalidArgument naming ``field`` otherwise."""
    if not ID_RE.match(value):
        raise InvalidArgument(
            f"{field} {echo(value)} is not a valid id: use 1-63 lower-case letters, digits and "
            "hyphens, starting with a letter and not ending with a hyphen", field=field
        )
    return value


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size must not be negative", field="page_size")
    if value == 0:
        return DEFAULT_PAGE_SIZE
    return min(value, MAX_PAGE_SIZE)


def _key() -> bytes:
    # Set PAGE_TOKEN_KEY (e.g. from Secret Manager) so tokens cannot be forged at all; the
    # default still detects tampering and works across instances of one service.
    return os.environ.get("PAGE_TOKEN_KEY", "scaffold-page-token").encode()


def encode_page_token(after: str, scope: str) -> str:
    """An opaque cursor: the last document id seen, bound to the request's ``scope``."""
    body = json.dumps({"a": after, "s": scope}, separators=(",", ":")).encode()
    mac = hmac.new(_key(), body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def decode_page_token(token: str, scope: str, *, cursor_is_id: bool = True) -> str:
    """The cursor inside ``token``; InvalidArgument if forged, damaged or from another query.

    ``cursor_is_id``: the cursor must be one document id (False for an ordering's JSON cursor,
    which scaffold_runtime.ordering checks itself)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        mac, body = raw[:12], raw[12:]
        if len(mac) != 12 or not hmac.compare_digest(mac, hmac.new(_key(), body, hashlib.sha256).digest()[:12]):
            raise ValueError("bad mac")
        data = json.loads(body)
        after, token_scope = data["a"], data["s"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not valid: pass next_page_token from the previous response",
                              field="page_token") from None
    if token_scope != scope or not isinstance(after, str):
        raise InvalidArgument("page_token belongs to a different request: the other parameters must match",
                              field="page_token")
    if cursor_is_id and not is_safe_id(after):  # a signed token whose cursor is not one document id
        raise InvalidArgument("page_token is not valid: pass next_page_token from the previous response",
                              field="page_token")
    return after


def behaviors(fd) -> set[int]:
    return set(fd.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def has_value(msg, fd) -> bool:
    if is_repeated(fd):
        return len(getattr(msg, fd.name)) > 0
    if fd.has_presence:
        return msg.HasField(fd.name)
    return getattr(msg, fd.name) != fd.default_value


def missing_required(msg, prefix: str = "") -> list[str]:
    """Names of REQUIRED fields of ``msg`` (and of set sub-messages) that are not set."""
    missing = []
    for fd in msg.DESCRIPTOR.fields:
        b = behaviors(fd)
        if field_behavior_pb2.OUTPUT_ONLY in b:
            continue
        set_ = has_value(msg, fd)
        if field_behavior_pb2.REQUIRED in b and not set_:
            missing.append(prefix + fd.name)
        elif set_ and fd.type == fd.TYPE_MESSAGE and not is_repeated(fd) \
                and not fd.message_type.GetOptions().map_entry:
            missing += missing_required(getattr(msg, fd.name), f"{prefix}{fd.name}.")
    return missing


def clear_output_only(msg) -> None:
    """Drop OUTPUT_ONLY fields a client sent: the server owns them."""
    for fd in msg.DESCRIPTOR.fields:
        if field_behavior_pb2.OUTPUT_ONLY in behaviors(fd):
            msg.ClearField(fd.name)


def output_only_paths(descriptor) -> set[str]:
    return {fd.name for fd in descriptor.fields if field_behavior_pb2.OUTPUT_ONLY in behaviors(fd)}


def split_path(path: str) -> list[str]:
    """AIP-161 path segments: split on ``.``, except inside backticks (labels.`a.b` -> 2 parts).

    Raises InvalidArgument for an unbalanced backtick or an empty segment."""
    parts, buf, quoted, was_quoted = [], [], False, False
    for ch in path + ".":
        if ch == "`":
            quoted, was_quoted = not quoted, True
        elif ch == "." and not quoted:
            if not buf and not was_quoted:
                raise InvalidArgument(f"update_mask path {echo(path)} has an empty segment", field="update_mask")
            parts.append("".join(buf))
            buf, was_quoted = [], False
        else:
            buf.append(ch)
    if quoted:
        raise InvalidArgument(f"update_mask path {echo(path)} has an unclosed backtick", field="update_mask")
    return parts


def is_map(fd) -> bool:
    return fd.type == _d.FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def map_key(fd, key: str, path: str):
    """``key`` (text from a mask path) as a key of map field ``fd``; InvalidArgument if it is not one."""
    key_fd = fd.message_type.fields_by_name["key"]
    if key_fd.type == _d.FieldDescriptor.TYPE_STRING:
        return key
    if key_fd.type == _d.FieldDescriptor.TYPE_BOOL and key in ("true", "false"):
        return key == "true"
    try:
        if key_fd.type != _d.FieldDescriptor.TYPE_BOOL:
            return int(key)
    except ValueError:
        pass
    raise InvalidArgument(f"update_mask path {echo(path)}: {echo(key)} is not a key of map {fd.name}",
                          field="update_mask")


def check_mask_paths(descriptor, paths) -> list[str]:
    """Validate ``update_mask`` paths against the resource; return them, minus OUTPUT_ONLY ones.

    A path may end in one map key (AIP-161: ``labels.lang``); a path deeper into a map value
    (``labels.lang.x``) raises InvalidArgument, as does an unknown field."""
    kept = []
    out_only = output_only_paths(descriptor)
    for path in paths:
        if path == "*":
            raise InvalidArgument("update_mask '*' cannot be combined with other paths", field="update_mask")
        desc = descriptor
        parts = split_path(path)
        for i, part in enumerate(parts):
            fd = desc.fields_by_name.get(part) if desc is not None else None
            if fd is None:
                raise InvalidArgument(f"update_mask path {echo(path)} is not a field of {descriptor.name}",
                                      field="update_mask")
            last = i == len(parts) - 1
            if not last and is_map(fd):
                if i + 2 != len(parts):
                    raise InvalidArgument(f"update_mask path {echo(path)} goes inside a map value: "
                                          f"name one key ({'.'.join(parts[:i + 1])}.KEY) or the whole map")
                map_key(fd, parts[i + 1], path)
                break
            if not last:
                if fd.type != _d.FieldDescriptor.TYPE_MESSAGE or is_repeated(fd):
                    raise InvalidArgument(f"update_mask path {echo(path)} goes inside a field that is not a message",
                                          field="update_mask")
                desc = fd.message_type
        if parts[0] not in out_only:
            kept.append(path)
    return kept


def map_key_path(descriptor, path: str):
    """``(message path, map field, key)`` when ``path`` (already checked) names one map key, else None."""
    parts = split_path(path)
    desc = descriptor
    for i, part in enumerate(parts[:-1]):
        fd = desc.fields_by_name[part]
        if is_map(fd):
            return parts[:i], fd, map_key(fd, parts[i + 1], path)
        desc = fd.message_type
    return None


def apply_map_key(source, target, where: list[str], fd, key) -> None:
    """Copy map entry ``key`` of field ``fd`` (under message path ``where``) from ``source`` to
    ``target``; delete it from ``target`` when ``source`` does not have it."""
    for part in where:
        source, target = getattr(source, part), getattr(target, part)
    src, dst = getattr(source, fd.name), getattr(target, fd.name)
    if key not in src:
        if key in dst:
            del dst[key]
    elif fd.message_type.fields_by_name["value"].type == _d.FieldDescriptor.TYPE_MESSAGE:
        dst[key].CopyFrom(src[key])
    else:
        dst[key] = src[key]


def set_paths(msg) -> list[str]:
    """AIP-134 with no mask: every top-level field set in the request."""
    return [fd.name for fd, _ in msg.ListFields()]
