"""AIP standard methods (Get, List, Create, Update, Delete) on Firestore.

A resource name is also its Firestore document path: ``shelves/s1/books/b1`` is document
``b1`` in collection ``shelves/s1/books``. A resource may have several name patterns
(``projects/{p}/secrets/{s}`` and ``projects/{p}/locations/{l}/secrets/{s}``): every one is
accepted. Every method validates its input first and maps failures onto the gRPC codes AIP-193
expects; Firestore outages become UNAVAILABLE; anything unexpected becomes INTERNAL with a
generic message (the exception is logged), never UNKNOWN.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.api_core import exceptions as gexc
from google.api_core import retry as retries
from google.protobuf import field_mask_pb2

from scaffold_runtime import aip, codec, status
from scaffold_runtime.batch import BatchMethods
from scaffold_runtime.softdelete import IsDeleted, SoftDeleteMethods
from scaffold_runtime.tracing import store_call

log = logging.getLogger("scaffold_runtime.store")
# Every database call is bounded: FIRESTORE_TIMEOUT_SECONDS, or less when the caller's
# deadline is nearer. Reads are retried within that bound (safe to repeat); writes are not
# (a retried create or delete could report ALREADY_EXISTS or NOT_FOUND for its own success).
TIMEOUT = float(os.environ.get("FIRESTORE_TIMEOUT_SECONDS", "5"))
_TRANSIENT = retries.if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError)
UPDATE_ATTEMPTS = 10
DELETE_BATCH = 400  # documents per batch when Delete(force=True) removes children
# A List page stops before its response would pass what the client accepts: GRPC_MAX_SEND_BYTES
# (default gRPC's 4 MiB receive limit) minus headroom for the token and framing.
DEFAULT_MAX_SEND_BYTES = 4 * 1024 * 1024
PAGE_HEADROOM = 64 * 1024
_ITEM_OVERHEAD = 8  # tag + length prefix of one repeated element, at most
# AIP-155: responses of calls with a request_id, kept for replay (Terraform sets a TTL policy on
# expire_time); a pending record whose caller died is taken over after REQUEST_LEASE_SECONDS.
REQUESTS_COLLECTION = "_requests"
REQUEST_LEASE_SECONDS = 60
REQUEST_ID_MAX = 256
MAX_VIOLATIONS = 20  # AIP-193 BadRequest entries per error: the details travel in the trailers


def max_page_bytes() -> int:
    """Bytes of resources one List page may carry (GRPC_MAX_SEND_BYTES minus headroom)."""
    return max(1, int(os.environ.get("GRPC_MAX_SEND_BYTES", "") or DEFAULT_MAX_SEND_BYTES) - PAGE_HEADROOM)


class _Contended(Exception):
    """An update lost its precondition race UPDATE_ATTEMPTS times in a row."""


class _HasChildren(Exception):
    """Delete without ``force`` of a resource that still has child resources."""


class _ParentNotFound(Exception):
    """Create under a parent (a resource of this neuron) that does not exist."""


class _StaleEtag(Exception):
    """AIP-154: the request's etag is not the resource's current one."""


class _InProgress(Exception):
    """AIP-155: a request with the same request_id is still being processed elsewhere."""


def _resource_type(message_cls) -> str:
    """The message's google.api.resource type ("library.googleapis.com/Book"), "" if none."""
    from google.api import resource_pb2

    options = message_cls.DESCRIPTOR.GetOptions()
    return options.Extensions[resource_pb2.resource].type if options.HasExtension(resource_pb2.resource) else ""


def _segment_re(segments) -> re.Pattern:
    return re.compile("^" + "/".join("[^/]+" if s.startswith("{") else re.escape(s) for s in segments) + "$")


@dataclass(frozen=True)
class _Pattern:
    """One name pattern: ``shelves/{shelf}/books/{book}``."""

    text: str
    name_re: re.Pattern
    parent_re: re.Pattern
    parent: str  # "shelves/{shelf}", "" for a top-level collection
    collection_id: str

    @classmethod
    def parse(cls, text: str) -> _Pattern:
        segments = text.split("/")
        return cls(text, _segment_re(segments), _segment_re(segments[:-2]), "/".join(segments[:-2]), segments[-2])


class ResourceStore(SoftDeleteMethods, BatchMethods):
    """One resource type's collection(s). Servicer methods call these and return the result.

    ``pattern``: the resource's name pattern, or all of them (a sequence). ``parent_store``:
    the store of the parent resource when it belongs to the same neuron; then Create under a
    missing parent is NOT_FOUND and the parent's Delete refuses (FAILED_PRECONDITION) while
    children exist, unless ``force``. ``soft_delete``: AIP-164 (see scaffold_runtime.softdelete);
    batch methods (AIP-231/233/234/235) are in scaffold_runtime.batch.
    """

    def __init__(self, client, message_cls, pattern: str | Sequence[str], *, id_field: str = "",
                 name_field: str = "name", parent_store: ResourceStore | None = None,
                 soft_delete: bool = False, domain: str = "") -> None:
        self.client = client
        self.soft_delete = soft_delete
        self.cls = message_cls
        self.patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        if not self.patterns:
            raise ValueError("ResourceStore needs at least one name pattern")
        self.pattern = self.patterns[0]
        self._patterns = tuple(_Pattern.parse(p) for p in self.patterns)
        self.name_field = name_field
        self.id_field = id_field
        self.collection_id = self._patterns[0].collection_id
        self.nested = bool(self._patterns[0].parent)
        self.parent_store: ResourceStore | None = None
        self.children: list[ResourceStore] = []
        if parent_store is not None:
            self.set_parent(parent_store)
        fields = self.cls.DESCRIPTOR.fields_by_name
        self._create_time = "create_time" if "create_time" in fields else ""
        self._update_time = "update_time" if "update_time" in fields else ""
        # AIP-154: a string `etag` field is computed by the server (see _etag_of).
        etag = fields.get("etag")
        self._etag = "etag" if etag is not None and etag.type == etag.TYPE_STRING and not codec.is_repeated(etag) else ""
        self.resource_type = _resource_type(message_cls)
        # AIP-193 ErrorInfo.domain: the resource type's service ("library.googleapis.com"), else the package.
        self.domain = domain or self.resource_type.partition("/")[0] or message_cls.DESCRIPTOR.file.package
        self._always_present = tuple(f for f in (name_field, self._create_time, self._update_time) if f)

    def set_parent(self, parent_store: ResourceStore) -> None:
        """Make ``parent_store`` (the parent resource's store, same neuron) this one's parent:
        the same as passing ``parent_store=`` to the constructor, for stores built in any order."""
        self.parent_store = parent_store
        if self not in parent_store.children:
            parent_store.children.append(self)

    # -- validation -----------------------------------------------------------------------
    def _formats(self, parents: bool = False) -> str:
        texts = dict.fromkeys(p.parent if parents else p.text for p in self._patterns if p.parent or not parents)
        return " or ".join(texts)

    def matches(self, name: str) -> bool:
        """Whether ``name`` is a valid name of this resource (any pattern, every id safe)."""
        return (len(name.encode()) <= 1500 and any(p.name_re.match(name) for p in self._patterns)
                and all(aip.is_safe_id(s) for s in name.split("/")))

    def _check_name(self, name: str, field: str = "name") -> str:
        if not name:
            raise aip.InvalidArgument(f"{field} is required (format: {self._formats()})", field=field)
        if not self.matches(name):
            raise aip.InvalidArgument(f"{field} {aip.echo(name)} does not match the format {self._formats()}", field=field)
        return name

    def _collection_path(self, parent: str) -> str:
        """The Firestore collection for ``parent``; the first pattern whose parent matches wins.
        Raises aip.InvalidArgument for a parent no pattern takes, and for AIP-159's ``-``."""
        if not parent:
            top = next((p for p in self._patterns if not p.parent), None)
            if top is None:
                raise aip.InvalidArgument(f"parent is required (format: {self._formats(parents=True)})", field="parent")
            return top.collection_id
        nested = [p for p in self._patterns if p.parent]
        if not nested:
            raise aip.InvalidArgument(f"parent must be empty: {self.pattern} has no parent", field="parent")
        if "-" in parent.split("/"):  # AIP-159's "any parent", never a document called "-"
            raise aip.InvalidArgument(f"parent {aip.echo(parent)}: '-' (every parent, AIP-159) is not supported; "
                                      f"name one parent ({self._formats(parents=True)})", field="parent")
        if all(aip.is_safe_id(s) for s in parent.split("/")):
            for p in nested:
                if p.parent_re.match(parent):
                    return f"{parent}/{p.collection_id}"
        raise aip.InvalidArgument(f"parent {aip.echo(parent)} does not match the format {self._formats(parents=True)}",
                                  field="parent")

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
        """Turn whatever the body raises into one gRPC status (never UNKNOWN) on ``context``,
        with AIP-193 details: an ErrorInfo (reason, the store's domain, the resource name and
        type) and, for INVALID_ARGUMENT naming request fields, a BadRequest."""
        what = aip.echo(name) if name else "resource"
        C = grpc.StatusCode

        def fail(code, message: str, reason: str, violations=(), **extra) -> None:
            metadata = {**({"resource": name} if name and name != "resource" else {}), "type": self.resource_type,
                        **extra}
            status.abort(context, code, message, reason=reason, domain=self.domain, metadata=metadata,
                         violations=violations)

        try:
            yield
        except (aip.InvalidArgument, codec.Unstorable) as exc:
            fields = getattr(exc, "fields", ())
            fail(C.INVALID_ARGUMENT, str(exc), "INVALID_ARGUMENT_FIELD" if fields else "INVALID_REQUEST",
                 [(f, aip.clip(exc)) for f in fields[:MAX_VIOLATIONS]])
        except gexc.InvalidArgument as exc:  # e.g. a document over Firestore's 1 MiB limit
            log.info("firestore refused the request: %s", str(exc)[:200])
            fail(C.INVALID_ARGUMENT, "the database refused this request (too large or malformed)", "REQUEST_REFUSED")
        except gexc.ResourceExhausted as exc:
            if "exceeds maximum size" in str(exc):  # the write request itself was too large
                fail(C.INVALID_ARGUMENT, "the resource is too large to store (the database holds 1 MiB)",
                     "RESOURCE_TOO_LARGE")
            log.warning("firestore quota exhausted: %s", str(exc)[:300])
            fail(C.UNAVAILABLE, "the database is overloaded; retry later", "DATABASE_OVERLOADED")
        except gexc.NotFound:
            fail(C.NOT_FOUND, f"{what} not found", "RESOURCE_NOT_FOUND")
        except _ParentNotFound as exc:
            fail(C.NOT_FOUND, f"parent {aip.echo(exc.args[0])} not found", "PARENT_NOT_FOUND", parent=exc.args[0])
        except IsDeleted:
            fail(C.FAILED_PRECONDITION, f"{what} is deleted: undelete it first", "RESOURCE_DELETED")
        except _HasChildren:
            fail(C.FAILED_PRECONDITION,
                 f"{what} has child resources: delete them first, or set force to delete them too", "RESOURCE_HAS_CHILDREN")
        except (gexc.AlreadyExists, gexc.Conflict):
            fail(C.ALREADY_EXISTS, f"{what} already exists", "RESOURCE_ALREADY_EXISTS")
        except _StaleEtag:
            fail(C.ABORTED, f"the etag does not match {what}'s current etag: read it again and retry", "ETAG_MISMATCH")
        except _InProgress:
            fail(C.ABORTED, "a request with this request_id is still in progress; retry it later", "REQUEST_IN_PROGRESS")
        except (gexc.Aborted, _Contended):
            fail(C.ABORTED, "concurrent modification; retry the call", "CONCURRENT_MODIFICATION")
        except gexc.FailedPrecondition as exc:
            from scaffold_runtime import ordering

            needed = ordering.missing_index(exc)
            if needed is None:
                log.error("firestore precondition failed: %s", str(exc)[:300])
                fail(C.INTERNAL, "internal error", "INTERNAL")
            fail(C.FAILED_PRECONDITION, needed, "MISSING_INDEX")
        except (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.RetryError, gexc.InternalServerError) as exc:
            log.warning("firestore unavailable: %s", type(exc).__name__, extra={"fields": {"error": str(exc)[:300]}})
            fail(C.UNAVAILABLE, "the database is unavailable; retry later", "DATABASE_UNAVAILABLE")
        except Exception as exc:
            log.exception("store call failed: %s", type(exc).__name__, extra={"fields": {"resource": name[:200]}})
            fail(C.INTERNAL, "internal error", "INTERNAL")

    def _now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def _stamp(self, msg, *, created: bool) -> None:
        now = self._now()
        if created and self._create_time:
            getattr(msg, self._create_time).FromDatetime(now)
        if self._update_time:
            getattr(msg, self._update_time).FromDatetime(now)

    def _from_doc(self, snapshot):
        return self._with_etag(codec.from_document(self.cls, snapshot.to_dict(), snapshot.reference.path))

    # -- AIP-154 etags --------------------------------------------------------------------
    def _etag_of(self, msg) -> str:
        """The etag of stored resource ``msg``: a hash of its content (update_time included)."""
        import base64
        import hashlib

        copy = self.cls()
        copy.CopyFrom(msg)
        if self._etag:
            copy.ClearField(self._etag)
        digest = hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode()

    def _with_etag(self, msg):
        """``msg`` with its etag field set (when the resource has one); returns ``msg``."""
        if self._etag:
            setattr(msg, self._etag, self._etag_of(msg))
        return msg

    def _check_etag(self, etag: str, current) -> None:
        """Raise _StaleEtag when ``etag`` is given and is not ``current``'s (AIP-154: ABORTED)."""
        if etag and etag != self._etag_of(current):
            raise _StaleEtag()

    # -- AIP-131 Get ----------------------------------------------------------------------
    @store_call("get")
    def get(self, context, name: str):
        """The resource called ``name``; aborts INVALID_ARGUMENT / NOT_FOUND / UNAVAILABLE."""
        with self._errors(context, name):
            self._check_name(name)
            snap = self.client.document(name).get(**self._read(context))
            if not snap.exists:
                raise gexc.NotFound(name)
            return self._from_doc(snap)

    # -- AIP-132 List ---------------------------------------------------------------------
    @store_call("list")
    def list(self, context, page_size: int = 0, page_token: str = "", parent: str = "", where=(), *,
             filter: str = "", order_by: str = ""):
        """Return ``(resources, next_page_token)``; the token is empty on the last page.

        A page holds at most ``page_size`` resources and stops early before the response
        would pass :func:`max_page_bytes` (one resource larger than that still comes alone).
        ``filter`` (AIP-160) and ``order_by`` (AIP-132) are parsed and checked against the
        resource (scaffold_runtime.filtering / .ordering); without ``order_by`` resources come
        in name order. ``where``: extra ``(field, op, value)`` Firestore filters (operators such
        as ``"=="``). A page token only works with the same parent, filter, order and ``where``.
        Aborts INVALID_ARGUMENT (naming the part of filter / order_by Firestore cannot serve),
        FAILED_PRECONDITION (a composite index is missing: names it), UNAVAILABLE.
        """
        with self._errors(context, parent):
            size = aip.page_size(page_size)
            path = self._collection_path(parent)
            collection = self.client.collection(path)
            query = collection
            for field, op, value in where:
                from google.cloud.firestore_v1.base_query import FieldFilter

                query = query.where(filter=FieldFilter(field, op, value))
            scope = path if not where else f"{path}?{sorted((f, o, repr(v)) for f, o, v in where)}"
            if filter or order_by:
                return self._list_ordered(context, query, size, page_token, scope, filter, order_by)
            query = query.order_by("__name__")
            if page_token:
                after = aip.decode_page_token(page_token, scope)
                query = query.start_after({"__name__": collection.document(after)})
            snaps = list(query.limit(size + 1).stream(**self._read(context)))
            return self._page(snaps, size, lambda snap: aip.encode_page_token(snap.id, scope))

    def _list_ordered(self, context, query, size: int, page_token: str, scope: str, filter: str, order_by: str):
        """One page of ``query`` narrowed by AIP-160 ``filter`` and ordered by ``order_by``;
        the page token carries the last resource's order values, bound to both."""
        from scaffold_runtime import filtering, ordering

        f = filtering.parse(filter, self.cls.DESCRIPTOR, always_present=self._always_present)
        o = ordering.parse(order_by, self.cls.DESCRIPTOR, filter=f, always_present=self._always_present)
        scope = f"{scope}?{f.canonical}#{o.canonical}"
        query = o.apply(f.apply(query))
        if page_token:
            query = o.start_after(query, aip.decode_page_token(page_token, scope, cursor_is_id=False))
        snaps = list(query.limit(size + 1).stream(**self._read(context)))
        return self._page(snaps, size, lambda snap: aip.encode_page_token(o.cursor(snap), scope))

    def _page(self, snaps, size: int, token_after):
        """``(resources, next token)`` from ``snaps`` (up to ``size + 1`` documents), cut short
        before :func:`max_page_bytes`; ``token_after(snapshot)`` makes the token after one."""
        items, budget = [], max_page_bytes()
        for snap in snaps[:size]:
            item = self._from_doc(snap)
            budget -= item.ByteSize() + _ITEM_OVERHEAD
            if budget < 0 and items:
                return items, token_after(snaps[len(items) - 1])
            items.append(item)
        return items, token_after(snaps[size - 1]) if len(snaps) > size else ""

    # -- AIP-133 Create -------------------------------------------------------------------
    @store_call("create")
    def create(self, context, resource, resource_id: str = "", parent: str = "", *, request_id: str = ""):
        """Store ``resource`` under ``parent`` and return it with its name and timestamps.

        The id is ``resource_id`` (checked against AIP-122) when the request has an id field;
        without one, the client's own name is kept when it is a valid name under ``parent``,
        else a random id is chosen. ``request_id`` (AIP-155): a repeat replays the first
        response. Aborts INVALID_ARGUMENT, ALREADY_EXISTS, NOT_FOUND (the parent, when
        ``parent_store`` is set and it does not exist), UNAVAILABLE."""
        if request_id:
            return self._once(context, "create", request_id, lambda: self.create(context, resource, resource_id, parent))
        with self._errors(context, "resource"):
            name, msg = self._new_resource(resource, resource_id, parent)
            data = self._document(msg)
        with self._errors(context, name):
            ref = self.client.document(name)
            if self.parent_store is not None and parent and self.parent_store.matches(parent):
                self._create_under(ref, data, parent, context)
            else:
                ref.create(data, **self._write(context))
            return self._with_etag(msg)

    def _new_resource(self, resource, resource_id: str, parent: str, where: str = ""):
        """``(name, message)`` of a resource to create: id chosen, OUTPUT_ONLY cleared,
        REQUIRED checked, name and timestamps set. Raises aip.InvalidArgument (``where``
        prefixes messages, e.g. ``requests[2]: ``)."""
        path = self._collection_path(parent)
        own = getattr(resource, self.name_field)
        if self.id_field and resource_id:
            aip.check_id(resource_id, self.id_field)
        elif not self.id_field and own and own.rpartition("/")[0] == path and self.matches(own):
            resource_id = own.rpartition("/")[2]
        else:
            resource_id = str(uuid.uuid4())
        msg = self.cls()
        msg.CopyFrom(resource)
        aip.clear_output_only(msg)
        missing = [m for m in aip.missing_required(msg) if m != self.name_field]  # the server names it
        if missing:
            raise aip.InvalidArgument(f"{where}missing required field(s): {aip.field_list(missing)}", field=missing)
        name = f"{path}/{resource_id}"
        setattr(msg, self.name_field, name)
        self._stamp(msg, created=True)
        return name, msg

    def _create_under(self, ref, data: dict, parent: str, context) -> None:
        """Create ``ref`` in a transaction that sees ``parent`` exist (so a concurrent Delete of
        the parent either sees this child or makes this Create NOT_FOUND)."""
        from google.cloud import firestore

        parent_ref = self.client.document(parent)
        timeout = self._timeout(context)

        @firestore.transactional
        def run(tx):
            if not next(iter(tx.get(parent_ref, timeout=timeout))).exists:
                raise _ParentNotFound(parent)
            tx.create(ref, data)

        run(self.client.transaction())

    # -- AIP-134 Update -------------------------------------------------------------------
    @store_call("update")
    def update(self, context, resource, update_mask: field_mask_pb2.FieldMask | None = None, *,
               allow_missing: bool = False, request_id: str = ""):
        """Apply ``resource`` through ``update_mask`` (AIP-134/161: ``*``, field paths, and
        ``map_field.key`` for one map entry) and return the stored result.

        AIP-154: a non-empty etag in ``resource`` must be the current one (else ABORTED).
        ``allow_missing`` (AIP-134): a missing resource is created with the name's id (the
        mask applied to an empty resource). ``request_id`` (AIP-155): a repeat replays the
        first response. Aborts INVALID_ARGUMENT, NOT_FOUND, ABORTED (stale etag, contended),
        UNAVAILABLE."""
        if request_id:
            return self._once(context, "update", request_id,
                              lambda: self.update(context, resource, update_mask, allow_missing=allow_missing))
        name = getattr(resource, self.name_field)
        etag = getattr(resource, self._etag) if self._etag else ""
        with self._errors(context, name):
            self._check_name(name, f"{self.cls.DESCRIPTOR.name.lower()}.{self.name_field}")
            plan = self._mask_plan(resource, update_mask)
            ref = self.client.document(name)
            # Optimistic concurrency: read, apply the mask, write only if the document is still
            # the one read (last_update_time precondition); on a conflict, read again. Two
            # updates of different fields therefore never lose either field.
            for _attempt in range(UPDATE_ATTEMPTS):
                snap = ref.get(**self._read(context))
                creating = not snap.exists
                if creating:
                    if not allow_missing:
                        raise gexc.NotFound(name)
                    if etag:  # the client expected a version that does not exist
                        raise _StaleEtag()
                    current = self.cls()
                    setattr(current, self.name_field, name)
                else:
                    current = self._from_doc(snap)
                    self._check_etag(etag, current)
                updated = self._apply_mask(plan, resource, current, created=creating)
                data = self._document(updated)
                if creating:
                    if self._create_missing(ref, data, name, context):
                        return self._with_etag(updated)
                    continue  # created meanwhile by someone else: update that one
                from google.cloud import firestore

                changes = {**{self.client.field_path(k): v for k, v in data.items()},
                           **{self.client.field_path(k): firestore.DELETE_FIELD
                              for k in (snap.to_dict() or {}) if k not in data}}
                try:
                    ref.update(changes, option=self.client.write_option(last_update_time=snap.update_time),
                               **self._write(context))
                except gexc.FailedPrecondition:
                    continue  # changed since we read it: apply the mask to the new version
                return self._with_etag(updated)
            raise _Contended(name)

    def _mask_plan(self, resource, update_mask) -> tuple[bool, list[str], list]:
        """``(replace, plain paths, map-key paths)`` of an AIP-134 update; raises aip.InvalidArgument."""
        descriptor = self.cls.DESCRIPTOR
        if update_mask is not None and list(update_mask.paths) == ["*"]:
            return True, [], []
        given = list(update_mask.paths) if update_mask is not None and update_mask.paths else aip.set_paths(resource)
        paths = [p for p in aip.check_mask_paths(descriptor, given) if not self._etag or p != self._etag]
        keyed = [k for k in (aip.map_key_path(descriptor, p) for p in paths) if k is not None]
        return False, [p for p in paths if aip.map_key_path(descriptor, p) is None], keyed

    def _apply_mask(self, plan, resource, current, where: str = "", *, created: bool = False):
        """``current`` updated from ``resource`` by ``plan`` (see _mask_plan), stamped. Raises
        IsDeleted (a soft-deleted resource) or aip.InvalidArgument (a REQUIRED field cleared)."""
        replace, plain, keyed = plan
        self.refuse_deleted(current)
        name = getattr(current, self.name_field)
        if replace:
            updated = self._replaced(resource, current, aip.output_only_paths(self.cls.DESCRIPTOR))
        else:
            updated = current
            if plain:
                field_mask_pb2.FieldMask(paths=plain).MergeMessage(
                    resource, updated, replace_message_field=True, replace_repeated_field=True
                )
            for at, fd, key in keyed:
                aip.apply_map_key(resource, updated, at, fd, key)
        missing = aip.missing_required(updated)
        if missing:
            raise aip.InvalidArgument(f"{where}the update would clear required field(s): {aip.field_list(missing)}",
                                      field=missing)
        setattr(updated, self.name_field, name)
        self._stamp(updated, created=created)
        return updated

    def _create_missing(self, ref, data: dict, name: str, context) -> bool:
        """AIP-134 allow_missing: create ``ref``; False when it exists by now (a concurrent create)."""
        parent = name.rsplit("/", 2)[0] if name.count("/") >= 3 else ""
        try:
            if self.parent_store is not None and self.nested and self.parent_store.matches(parent):
                self._create_under(ref, data, parent, context)
            else:
                ref.create(data, **self._write(context))
        except (gexc.AlreadyExists, gexc.Conflict):
            return False
        return True

    def _replaced(self, resource, current, out_only: set[str]):
        """``resource`` as a full replacement of ``current``, keeping the server's fields."""
        updated = self.cls()
        updated.CopyFrom(resource)
        for field in out_only | ({self._etag} if self._etag else set()):
            updated.ClearField(field)
        for fd, value in current.ListFields():
            if fd.name in out_only:
                if fd.type == fd.TYPE_MESSAGE and not codec.is_repeated(fd):
                    getattr(updated, fd.name).CopyFrom(value)
                elif aip.is_map(fd):
                    getattr(updated, fd.name).MergeFrom(value)
                elif codec.is_repeated(fd):
                    getattr(updated, fd.name).extend(value)
                else:
                    setattr(updated, fd.name, value)
        return updated

    # -- AIP-135 Delete -------------------------------------------------------------------
    @store_call("delete")
    def delete(self, context, name: str, force: bool = False, *, allow_missing: bool = False, etag: str = "",
               request_id: str = "") -> None:
        """Delete ``name``. When other stores name this one their ``parent_store``, a resource
        with children is FAILED_PRECONDITION unless ``force``, which deletes every descendant
        first (all child collections, recursively, in batches). ``allow_missing`` (AIP-135): a
        missing resource is success. ``etag`` (AIP-154): must be the current one, else ABORTED.
        ``request_id`` (AIP-155): a repeat replays the first response. Aborts INVALID_ARGUMENT,
        NOT_FOUND, FAILED_PRECONDITION, ABORTED, UNAVAILABLE."""
        if request_id:
            return self._once(context, "delete", request_id,
                              lambda: self.delete(context, name, force, allow_missing=allow_missing, etag=etag))
        with self._errors(context, name):
            self._check_name(name)
            ref = self.client.document(name)
            try:
                self._delete(ref, force, etag, context)
            except gexc.NotFound:
                if not allow_missing:
                    raise
        return None

    def _delete(self, ref, force: bool, etag: str, context) -> None:
        if not self.children and not etag:
            ref.delete(option=self.client.write_option(exists=True), **self._write(context))
            return
        for _attempt in range(UPDATE_ATTEMPTS):
            if not self.children:  # etag: delete exactly the version whose etag matched
                snap = ref.get(**self._read(context))
                if not snap.exists:
                    raise gexc.NotFound(ref.path)
                self._check_etag(etag, self._from_doc(snap))
                try:
                    ref.delete(option=self.client.write_option(last_update_time=snap.update_time), **self._write(context))
                    return
                except gexc.FailedPrecondition:
                    continue  # changed since we read it: check the etag again
            if force:
                self._delete_descendants(ref, context)
            try:
                self._delete_if_childless(ref, context, etag)
                return
            except _HasChildren:
                if not force:
                    raise
        raise _Contended(ref.path)

    def _delete_if_childless(self, ref, context, etag: str = "") -> None:
        """Delete ``ref`` in a transaction that sees no child documents (and, given ``etag``,
        sees that version); raises _HasChildren, _StaleEtag, NotFound."""
        from google.cloud import firestore

        timeout = self._timeout(context)
        collections = list(ref.collections(timeout=timeout))

        @firestore.transactional
        def run(tx):
            snap = next(iter(tx.get(ref, timeout=timeout)))
            if not snap.exists:
                raise gexc.NotFound(ref.path)
            if etag:
                self._check_etag(etag, self._from_doc(snap))
            for collection in collections:
                if any(True for _ in tx.get(collection.limit(1), timeout=timeout)):
                    raise _HasChildren(ref.path)
            tx.delete(ref)

        run(self.client.transaction())

    def _delete_descendants(self, ref, context) -> None:
        """Delete every document below ``ref`` (depth first, DELETE_BATCH per write batch)."""
        timeout = self._timeout(context)
        for collection in ref.collections(timeout=timeout):
            while True:
                docs = list(itertools.islice(collection.list_documents(page_size=DELETE_BATCH, timeout=timeout),
                                             DELETE_BATCH))
                if not docs:
                    break
                for doc in docs:
                    self._delete_descendants(doc, context)
                batch = self.client.batch()
                for doc in docs:
                    batch.delete(doc)
                batch.commit(timeout=timeout)

    # -- AIP-155 request ids ----------------------------------------------------------------
    def _once(self, context, method: str, request_id: str, act):
        """Run ``act()`` (the store call without its request_id) once per ``request_id``.

        A record document ``_requests/{sha256(resource type, method, caller, request_id)}`` is
        created (a create precondition: exactly one caller wins) before acting and then holds
        the serialized response; a repeat, also a concurrent one, waits for that record and
        replays the response instead of acting again. A failed first call removes its record
        so a retry acts. Records carry ``expire_time`` (REQUEST_ID_TTL_SECONDS, Firestore's
        TTL policy deletes them). Returns what ``act`` returns (a resource, or None); aborts
        INVALID_ARGUMENT (a malformed request_id), ABORTED (the first call still runs past
        this call's deadline), UNAVAILABLE."""
        from scaffold_runtime import auth

        with self._errors(context):
            if len(request_id) > REQUEST_ID_MAX or not request_id.isprintable():
                raise aip.InvalidArgument(f"request_id must be at most {REQUEST_ID_MAX} printable characters "
                                          "(a UUID4 is recommended)", field="request_id")
            key = hashlib.sha256("\0".join((self.resource_type or self.pattern, method, auth.caller(),
                                            request_id)).encode()).hexdigest()
            ref = self.client.collection(REQUESTS_COLLECTION).document(key)
            replay = self._claim(ref, context)
        if replay is not None:
            return self.cls.FromString(replay) if method != "delete" else None
        try:
            result = act()
        except BaseException:
            self._release(ref)
            raise
        try:
            done = self._now() + datetime.timedelta(seconds=request_ttl())
            ref.update({"state": "done", "response": result.SerializeToString() if result is not None else b"",
                        "expire_time": done}, **self._write(context))
        except Exception as exc:  # noqa: BLE001 - the call succeeded: answer it, the lease runs out
            log.warning("could not record the response of request_id: %s", type(exc).__name__)
        return result

    def _claim(self, ref, context) -> bytes | None:
        """Create the pending record ``ref`` (None: this call acts) or wait for the first call's
        response (its bytes). Raises _InProgress when it does not come within the deadline."""
        deadline = time.monotonic() + self._timeout(context)
        delay = 0.02
        while True:
            now = self._now()
            try:
                ref.create({"state": "pending", "lease_until": now + datetime.timedelta(seconds=REQUEST_LEASE_SECONDS),
                            "expire_time": now + datetime.timedelta(seconds=request_ttl())}, **self._write(context))
                return None
            except (gexc.AlreadyExists, gexc.Conflict):
                pass
            snap = ref.get(**self._read(context))
            data = snap.to_dict() or {}
            stale = data.get("expire_time") is not None and data["expire_time"] < now  # TTL deletion lags
            if snap.exists and not stale and data.get("state") == "done":
                return bytes(data.get("response") or b"")
            if snap.exists and (stale or (data.get("lease_until") is not None and data["lease_until"] < now)):
                with contextlib.suppress(gexc.FailedPrecondition, gexc.NotFound):  # the first call died
                    ref.delete(option=self.client.write_option(last_update_time=snap.update_time), **self._write(context))
                continue
            if not snap.exists:
                continue  # the first call failed and released it: act
            if time.monotonic() + delay > deadline:
                raise _InProgress()
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _release(self, ref) -> None:
        """Remove a pending record after a failed call (best effort: its lease runs out anyway)."""
        try:
            ref.delete(timeout=TIMEOUT)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not release a request_id record: %s", type(exc).__name__)


def request_ttl() -> float:
    """Seconds a request_id's response is kept for replay (REQUEST_ID_TTL_SECONDS, default 1 day)."""
    return float(os.environ.get("REQUEST_ID_TTL_SECONDS", "") or 86400)
