"""AIP-164 soft delete and Undelete, mixed into :class:`scaffold_runtime.store.ResourceStore`.

A store made with ``soft_delete=True`` (its resource has ``delete_time``; the service has an
Undelete) keeps deleted resources: Delete sets ``delete_time`` and, when the message has them,
``expire_time`` and ``purge_time`` to now + ``SOFT_DELETE_RETENTION_DAYS`` (default 30);
Undelete clears them. Every stored document also carries a boolean ``_scaffold_deleted``
(:data:`DELETED`): Firestore cannot query for a missing field, and an unset ``delete_time`` is
not written, so List hides deleted resources with ``_scaffold_deleted == False``
(:meth:`SoftDeleteMethods.visible`), a filter Firestore serves from its single-field index.

Per AIP-164: Get returns a deleted resource; List hides it unless ``show_deleted``; Delete of a
deleted resource is NOT_FOUND; Undelete of a resource that is not deleted is ALREADY_EXISTS;
Create with the id of a deleted resource is ALREADY_EXISTS (the document still exists); Update
of a deleted resource is FAILED_PRECONDITION. Deleted resources are not purged by the neuron:
a Firestore TTL policy on ``expire_time`` (or ``purge_time``) removes them after retention.
"""

from __future__ import annotations

import datetime
import os

from google.api_core import exceptions as gexc

from scaffold_runtime import codec

DELETED = "_scaffold_deleted"
RETENTION_DAYS = float(os.environ.get("SOFT_DELETE_RETENTION_DAYS", "30") or 30)
_EXPIRY_FIELDS = ("expire_time", "purge_time")


class IsDeleted(Exception):
    """A mutation of a soft-deleted resource (FAILED_PRECONDITION)."""


class SoftDeleteMethods:
    """Soft delete for ResourceStore; it relies on the store's client, _errors, _check_name,
    _from_doc, _stamp, _timeout and cls."""

    soft_delete: bool = False

    def _document(self, msg) -> dict:
        """The Firestore document for ``msg``: its fields (never its computed AIP-154 etag), plus
        :data:`DELETED` on a soft store."""
        if getattr(self, "_etag", "") and getattr(msg, self._etag):
            msg = _without(msg, self._etag)
        data = codec.to_document(msg)
        if self.soft_delete:
            data[DELETED] = msg.HasField("delete_time")
        return data

    def visible(self, show_deleted: bool = False) -> tuple:
        """List's ``where`` clause: hide soft-deleted resources unless ``show_deleted``."""
        return () if show_deleted or not self.soft_delete else ((DELETED, "==", False),)

    def refuse_deleted(self, msg) -> None:
        """Raise :class:`IsDeleted` when ``msg`` is soft-deleted (mutations are refused)."""
        if self.soft_delete and msg.HasField("delete_time"):
            raise IsDeleted(getattr(msg, self.name_field))

    def _mark(self, msg, deleted: bool) -> None:
        """Set (now, now + retention) or clear delete_time and the expiry fields."""
        fields = self.cls.DESCRIPTOR.fields_by_name
        now = self._now()
        for field in ("delete_time", *_EXPIRY_FIELDS):
            if field not in fields:
                continue
            if not deleted:
                msg.ClearField(field)
            else:
                at = now if field == "delete_time" else now + datetime.timedelta(days=RETENTION_DAYS)
                getattr(msg, field).FromDatetime(at)
        self._stamp(msg, created=False)

    def _transition(self, context, name: str, deleted: bool, etag: str = ""):
        """Read ``name`` and set its deleted state in one transaction; return the result.
        ``etag`` (AIP-154): when given, must be the resource's current one."""
        from google.cloud import firestore

        ref = self.client.document(name)
        timeout = self._timeout(context)

        @firestore.transactional
        def run(tx):
            snap = next(iter(tx.get(ref, timeout=timeout)))
            if not snap.exists:
                raise gexc.NotFound(name)
            msg = self._from_doc(snap)
            self._check_etag(etag, msg)
            if not self.soft_delete:  # a Delete that returns the resource, on a hard-deleting store
                tx.delete(ref)
                return msg
            if msg.HasField("delete_time") == deleted:
                raise (gexc.NotFound(name) if deleted else gexc.AlreadyExists(name))
            self._mark(msg, deleted)
            tx.set(ref, self._document(msg))
            return self._with_etag(msg)

        return run(self.client.transaction())

    def delete_returning(self, context, name: str, *, etag: str = ""):
        """AIP-164 Delete: mark ``name`` deleted and return it (a hard-deleting store deletes it
        and returns it as it was). ``etag`` (AIP-154) must be the current one when given.
        Aborts INVALID_ARGUMENT, NOT_FOUND (absent or already deleted), ABORTED (stale etag,
        contention), UNAVAILABLE."""
        with self._errors(context, name):
            self._check_name(name)
            return self._transition(context, name, True, etag)

    def undelete(self, context, name: str):
        """AIP-164 Undelete: clear ``name``'s delete_time (and expiry) and return it. Aborts
        INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS (not deleted), ABORTED, UNAVAILABLE."""
        with self._errors(context, name):
            self._check_name(name)
            return self._transition(context, name, False)


def _without(msg, field: str):
    """A copy of ``msg`` with ``field`` cleared."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    copy.ClearField(field)
    return copy
