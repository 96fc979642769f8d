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
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class InvalidArgument(ValueError):
    """A request the client must fix; the message is safe to send back."""


def check_id(value: str, field: str) -> str:
    if not ID_RE.match(value):
        raise InvalidArgument(
            f"{field} {value!r} is not a valid id: use 1-63 lower-case letters, digits and "
            "hyphens, starting with a letter and not ending with a hyphen"
        )
    return value


def page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size must not be negative")
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


def decode_page_token(token: str, scope: str) -> str:
    """The cursor inside ``token``; InvalidArgument if forged, damaged or from another query."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        mac, body = raw[:12], raw[12:]
        if len(mac) != 12 or not hmac.compare_digest(mac, hmac.new(_key(), body, hashlib.sha256).digest()[:12]):
            raise ValueError("bad mac")
        data = json.loads(body)
        after, token_scope = data["a"], data["s"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not valid: pass next_page_token from the previous response") from None
    if token_scope != scope or not isinstance(after, str):
        raise InvalidArgument("page_token belongs to a different request: the other parameters must match")
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


def check_mask_paths(descriptor, paths) -> list[str]:
    """Validate ``update_mask`` paths against the resource; return them, minus OUTPUT_ONLY ones."""
    kept = []
    out_only = output_only_paths(descriptor)
    for path in paths:
        if path == "*":
            raise InvalidArgument("update_mask '*' cannot be combined with other paths")
        desc = descriptor
        parts = path.split(".")
        for i, part in enumerate(parts):
            fd = desc.fields_by_name.get(part) if desc is not None else None
            if fd is None:
                raise InvalidArgument(f"update_mask path {path!r} is not a field of {descriptor.name}")
            last = i == len(parts) - 1
            if not last:
                if fd.type != _d.FieldDescriptor.TYPE_MESSAGE or is_repeated(fd):
                    raise InvalidArgument(f"update_mask path {path!r} goes inside a field that is not a message")
                desc = fd.message_type
        if parts[0] not in out_only:
            kept.append(path)
    return kept


def set_paths(msg) -> list[str]:
    """AIP-134 with no mask: every top-level field set in the request."""
    return [fd.name for fd, _ in msg.ListFields()]
