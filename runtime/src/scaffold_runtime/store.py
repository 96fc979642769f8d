"""AIP standard methods (Get, List, Create, Update, Delete) on Firestore.

A resource name is also its Firestore document path: ``shelves/s1/books/b1`` is document
``b1`` in collection ``shelves/s1/books``. Every method validates its input first and maps
failures onto the gRPC codes AIP-193 expects; Firestore outages become UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import uuid

import grpc
from google.api_core import exceptions as gexc
from google.api_core import retry as retries
from google.protobuf import field_mask_pb2

from scaffold_runtime import aip, codec

log = logging.getLogger("scaffold_runtime.store")
_UNSAFE_ID = re.compile(r"^(\.|\.\.|__.*__)$")
# Every database call is bounded: FIRESTORE_TIMEOUT_SECONDS, or less when the caller's
# deadline is nearer. Reads are retried within that bound (safe to repeat); writes are not
# (a retried create or delete could report ALREADY_EXISTS or NOT_FOUND for its own success).
TIMEOUT = float(os.environ.get("FIRESTORE_TIMEOUT_SECONDS", "5"))
_TRANSIENT = retries.if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError)
UPDATE_ATTEMPTS = 10


class _Contended(Exception):
    """An update lost its precondition race UPDATE_ATTEMPTS times in a row."""


class ResourceStore:
    """One resource type's collection. Servicer methods call these and return the result."""

    def __init__(self, client, message_cls, pattern: str, *, id_field: str = "", name_field: str = "name") -> None:
        self.client = client
        self.cls = message_cls
        self.pattern = pattern
        self.name_field = name_field
        self.id_field = id_field
        segments = pattern.split("/")
        self.collection_id = segments[-2]
        self._name_re = re.compile("^" + "/".join("[^/]+" if s.startswith("{") else re.escape(s) for s in segments) + "$")
        self._parent_re = re.compile("^" + "/".join("[^/]+" if s.startswith("{") else re.escape(s) for s in segments[:-2]) + "$")
        self.nested = len(segments) > 2
        fields = self.cls.DESCRIPTOR.fields_by_name
        self._create_time = "create_time" if "create_time" in fields else ""
        self._update_time = "update_time" if "update_time" in fields else ""

    # -- validation -----------------------------------------------------------------------
    def _check_name(self, name: str, field: str = "name") -> str:
        if not name:
            raise aip.InvalidArgument(f"{field} is required (format: {self.pattern})")
        if not self._name_re.match(name) or any(_UNSAFE_ID.match(s) for s in name.split("/")) or len(name.encode()) > 1500:
            raise aip.InvalidArgument(f"{field} {name!r} does not match the format {self.pattern}")
        return name

    def _collection_path(self, parent: str) -> str:
        if not self.nested:
            if parent:
                raise aip.InvalidArgument(f"parent must be empty: {self.pattern} has no parent")
            return self.collection_id
        if not parent:
            raise aip.InvalidArgument(f"parent is required (format: {'/'.join(self.pattern.split('/')[:-2])})")
        if not self._parent_re.match(parent) or any(_UNSAFE_ID.match(s) for s in parent.split("/")):
            raise aip.InvalidArgument(f"parent {parent!r} does not match the format {'/'.join(self.pattern.split('/')[:-2])}")
        return f"{parent}/{self.collection_id}"

    # -- bounds ---------------------------------------------------------------------------
    def _timeout(self, context) -> float:
        remaining = context.time_remaining() if context is not None else None
        return max(0.05, min(TIMEOUT, remaining - 0.05)) if remaining is not None else TIMEOUT

    def _read(self, context) -> dict:
        timeout = self._timeout(context)
        return {"retry": retries.Retry(predicate=_TRANSIENT, initial=0.05, maximum=1.0, multiplier=2.0,
                                       timeout=timeout), "timeout": timeout}

    def _write(self, context) -> dict:
        return {"retry": None, "timeout": self._timeout(context)}

    # -- errors ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, context, name: str = ""):
        try:
            yield
        except aip.InvalidArgument as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except gexc.InvalidArgument as exc:  # e.g. a document over Firestore's 1 MiB limit
            log.info("firestore refused the request: %s", str(exc)[:200])
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the database refused this request (too large or malformed)")
        except gexc.NotFound:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{name or 'resource'} not found")
        except (gexc.AlreadyExists, gexc.Conflict):
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists")
        except (gexc.Aborted, _Contended):
            context.abort(grpc.StatusCode.ABORTED, "concurrent modification; retry the call")
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError, gexc.InternalServerError) as exc:
            log.warning("firestore unavailable: %s", type(exc).__name__, extra={"fields": {"error": str(exc)[:300]}})
            context.abort(grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry later")
        except gexc.GoogleAPICallError as exc:
            log.error("firestore call failed: %s", exc, extra={"fields": {"resource": name}})
            context.abort(grpc.StatusCode.INTERNAL, "internal error")

    def _now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def _stamp(self, msg, *, created: bool) -> None:
        now = self._now()
        if created and self._create_time:
            getattr(msg, self._create_time).FromDatetime(now)
        if self._update_time:
            getattr(msg, self._update_time).FromDatetime(now)

    def _from_doc(self, snapshot):
        return codec.from_document(self.cls, snapshot.to_dict())

    # -- AIP-131 Get ----------------------------------------------------------------------
    def get(self, context, name: str):
        with self._errors(context, name):
            self._check_name(name)
            snap = self.client.document(name).get(**self._read(context))
            if not snap.exists:
                raise gexc.NotFound(name)
            return self._from_doc(snap)

    # -- AIP-132 List ---------------------------------------------------------------------
    def list(self, context, page_size: int = 0, page_token: str = "", parent: str = "", where=()):
        """Return ``(resources, next_page_token)``; the token is empty on the last page.

        ``where``: ``(field, op, value)`` filters (Firestore operators such as ``"=="``), e.g.
        parsed from an AIP-160 ``filter``; a page token only works with the same filters.
        """
        with self._errors(context, parent):
            size = aip.page_size(page_size)
            path = self._collection_path(parent)
            collection = self.client.collection(path)
            query = collection
            for field, op, value in where:
                from google.cloud.firestore_v1.base_query import FieldFilter

                query = query.where(filter=FieldFilter(field, op, value))
            query = query.order_by("__name__")
            scope = path if not where else f"{path}?{sorted((f, o, repr(v)) for f, o, v in where)}"
            if page_token:
                after = aip.decode_page_token(page_token, scope)
                query = query.start_after({"__name__": collection.document(after)})
            snaps = list(query.limit(size + 1).stream(**self._read(context)))
            items = [self._from_doc(s) for s in snaps[:size]]
            token = aip.encode_page_token(snaps[size - 1].id, scope) if len(snaps) > size else ""
            return items, token

    # -- AIP-133 Create -------------------------------------------------------------------
    def create(self, context, resource, resource_id: str = "", parent: str = ""):
        name = ""
        with self._errors(context, "resource"):
            path = self._collection_path(parent)
            if self.id_field:
                if resource_id:
                    aip.check_id(resource_id, self.id_field)
                else:
                    resource_id = str(uuid.uuid4())
            else:
                resource_id = str(uuid.uuid4())
            msg = self.cls()
            msg.CopyFrom(resource)
            aip.clear_output_only(msg)
            missing = aip.missing_required(msg)
            if missing:
                raise aip.InvalidArgument(f"missing required field(s): {', '.join(missing)}")
            name = f"{path}/{resource_id}"
            setattr(msg, self.name_field, name)
            self._stamp(msg, created=True)
            try:
                self.client.document(name).create(codec.to_document(msg), **self._write(context))
            except (gexc.AlreadyExists, gexc.Conflict):
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} already exists")
            return msg

    # -- AIP-134 Update -------------------------------------------------------------------
    def update(self, context, resource, update_mask: field_mask_pb2.FieldMask | None = None):
        name = getattr(resource, self.name_field)
        with self._errors(context, name):
            self._check_name(name, f"{self.cls.DESCRIPTOR.name.lower()}.{self.name_field}")
            descriptor = self.cls.DESCRIPTOR
            out_only = aip.output_only_paths(descriptor)
            if update_mask is not None and list(update_mask.paths) == ["*"]:
                replace = True
                paths: list[str] = []
            else:
                replace = False
                given = list(update_mask.paths) if update_mask is not None and update_mask.paths else aip.set_paths(resource)
                paths = aip.check_mask_paths(descriptor, given)
            from google.cloud import firestore

            ref = self.client.document(name)
            # Optimistic concurrency: read, apply the mask, write only if the document is still
            # the one read (last_update_time precondition); on a conflict, read again. Two
            # updates of different fields therefore never lose either field.
            for _attempt in range(UPDATE_ATTEMPTS):
                snap = ref.get(**self._read(context))
                if not snap.exists:
                    raise gexc.NotFound(name)
                current = self._from_doc(snap)
                if replace:
                    updated = self.cls()
                    updated.CopyFrom(resource)
                    for field in out_only:  # the server's fields survive a full replace
                        updated.ClearField(field)
                    for fd, value in current.ListFields():
                        if fd.name in out_only:
                            if fd.type == fd.TYPE_MESSAGE and not codec.is_repeated(fd):
                                getattr(updated, fd.name).CopyFrom(value)
                            elif codec.is_repeated(fd):
                                getattr(updated, fd.name).extend(value)
                            else:
                                setattr(updated, fd.name, value)
                else:
                    updated = current
                    if paths:
                        field_mask_pb2.FieldMask(paths=paths).MergeMessage(
                            resource, updated, replace_message_field=True, replace_repeated_field=True
                        )
                missing = aip.missing_required(updated)
                if missing:
                    raise aip.InvalidArgument(f"the update would clear required field(s): {', '.join(missing)}")
                setattr(updated, self.name_field, name)
                self._stamp(updated, created=False)
                data = codec.to_document(updated)
                changes = {**data, **{k: firestore.DELETE_FIELD for k in (snap.to_dict() or {}) if k not in data}}
                try:
                    ref.update(changes, option=self.client.write_option(last_update_time=snap.update_time),
                               **self._write(context))
                except gexc.FailedPrecondition:
                    continue  # changed since we read it: apply the mask to the new version
                return updated
            raise _Contended(name)

    # -- AIP-135 Delete -------------------------------------------------------------------
    def delete(self, context, name: str) -> None:
        with self._errors(context, name):
            self._check_name(name)
            self.client.document(name).delete(option=self.client.write_option(exists=True), **self._write(context))
