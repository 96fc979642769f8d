"""AIP-231/233/234/235 batch methods, mixed into :class:`scaffold_runtime.store.ResourceStore`.

Every batch is all-or-nothing: its reads and writes run in one Firestore transaction, results
come back in request order, and the first problem (in request order) fails the whole call.

- At most :data:`MAX_BATCH` (``BATCH_MAX_SIZE``, default 1000, the AIPs' documented maximum)
  items; none at all is INVALID_ARGUMENT.
- A batch ``parent`` (when set and not ``-``) must be the parent of every name, and each
  create request's own ``parent`` must be empty or equal to it: INVALID_ARGUMENT otherwise.
- BatchGet: NOT_FOUND naming the first missing name. BatchCreate: ALREADY_EXISTS naming the
  first taken name (a name twice in one batch is INVALID_ARGUMENT). BatchUpdate / BatchDelete:
  NOT_FOUND naming the first missing one; a name twice is INVALID_ARGUMENT.
- Firestore once capped a transaction at 500 writes; the emulator commits 1000 in one
  transaction, and a commit Firestore refuses as too large becomes INVALID_ARGUMENT (nothing is
  written), never a partial batch.
"""

from __future__ import annotations

import os

from google.api_core import exceptions as gexc

from scaffold_runtime import aip

MAX_BATCH = int(os.environ.get("BATCH_MAX_SIZE", "1000") or 1000)


class _Missing(Exception):
    """The named resource of a batch does not exist (raised out of the transaction)."""


class _Taken(Exception):
    """The named resource of a batch create already exists."""


def _parent_of(name: str) -> str:
    return name.rsplit("/", 2)[0] if name.count("/") > 1 else ""


class BatchMethods:
    """Batch methods for ResourceStore; they rely on its client, _errors, _check_name,
    _from_doc, _new_resource, _mask_plan, _apply_mask, _document and soft-delete helpers."""

    # -- checks ---------------------------------------------------------------------------
    def _check_batch(self, names: list[str], parent: str, field: str) -> None:
        """Count, name format, parent consistency and duplicates; raises aip.InvalidArgument."""
        if not names:
            raise aip.InvalidArgument(f"{field} is required: give between 1 and {MAX_BATCH} items")
        if len(names) > MAX_BATCH:
            raise aip.InvalidArgument(f"{field} has {len(names)} items; a batch holds at most {MAX_BATCH}")
        seen: set[str] = set()
        for i, name in enumerate(names):
            self._check_name(name, f"{field}[{i}]")
            if parent and parent != "-" and _parent_of(name) != parent:
                raise aip.InvalidArgument(f"{field}[{i}] {aip.echo(name)} is not a child of parent {aip.echo(parent)}")
            if name in seen:
                raise aip.InvalidArgument(f"{field}[{i}] repeats {aip.echo(name)}: each name may appear once")
            seen.add(name)

    def _run_batch(self, context, body):
        """Run ``body(tx)`` in one transaction; turn _Missing/_Taken into NOT_FOUND/ALREADY_EXISTS
        naming the resource. Returns what ``body`` returns."""
        from google.cloud import firestore

        problem = None
        with self._errors(context, "resource"):
            try:
                return firestore.transactional(body)(self.client.transaction())
            except _Missing as exc:
                problem = gexc.NotFound(exc.args[0]), exc.args[0]
            except _Taken as exc:
                problem = gexc.AlreadyExists(exc.args[0]), exc.args[0]
        with self._errors(context, problem[1]):  # outside the first block: one status only
            raise problem[0]

    def _read_all(self, tx, names: list[str], context) -> list:
        """Snapshots of ``names`` in their order, read in one call inside ``tx``."""
        refs = [self.client.document(n) for n in names]
        by_path = {s.reference.path: s for s in tx.get_all(refs, timeout=self._timeout(context))}
        return [by_path[r.path] for r in refs]

    # -- AIP-231 BatchGet -----------------------------------------------------------------
    def batch_get(self, context, names, parent: str = "") -> list:
        """The resources called ``names``, in order, read at one point in time (soft-deleted ones
        included, as Get returns them). Aborts INVALID_ARGUMENT, NOT_FOUND (the first missing)."""
        names = list(names)
        with self._errors(context, "resource"):
            self._check_batch_get(names, parent)

        def body(tx):
            snaps = self._read_all(tx, names, context)
            missing = next((n for n, s in zip(names, snaps, strict=True) if not s.exists), None)
            if missing is not None:
                raise _Missing(missing)
            return [self._from_doc(s) for s in snaps]

        return self._run_batch(context, body)

    def _check_batch_get(self, names: list[str], parent: str) -> None:
        """As _check_batch, but a name may repeat (BatchGet returns it twice)."""
        unique = list(dict.fromkeys(names))
        if len(names) > MAX_BATCH:
            raise aip.InvalidArgument(f"names has {len(names)} items; a batch holds at most {MAX_BATCH}")
        self._check_batch(unique, parent, "names")

    # -- AIP-233 BatchCreate --------------------------------------------------------------
    def batch_create(self, context, requests, parent: str = "") -> list:
        """Create every ``(resource, resource_id, request_parent)`` of ``requests`` (ids and
        REQUIRED fields as Create checks them), all or none; return them in order. Aborts
        INVALID_ARGUMENT, ALREADY_EXISTS (the first taken name), NOT_FOUND (a missing parent
        when the parent is this neuron's), UNAVAILABLE."""
        with self._errors(context, "resource"):
            made = []
            for i, (resource, resource_id, own_parent) in enumerate(requests):
                if parent and own_parent and own_parent != parent:
                    raise aip.InvalidArgument(f"requests[{i}].parent {aip.echo(own_parent)} differs from the "
                                              f"batch's parent {aip.echo(parent)}: leave it empty or make it equal")
                made.append(self._new_resource(resource, resource_id, own_parent or parent, f"requests[{i}]: "))
            self._check_batch([n for n, _ in made], parent, "requests")
            docs = [(n, m, self._document(m)) for n, m in made]
        parents = sorted({_parent_of(n) for n, _ in made} - {""}) if self.parent_store is not None else []

        def body(tx):
            timeout = self._timeout(context)
            for p in parents:
                if self.parent_store.matches(p) and not next(iter(tx.get(self.client.document(p), timeout=timeout))).exists:
                    raise _Missing(p)
            snaps = self._read_all(tx, [n for n, _, _ in docs], context)
            taken = next((s.reference.path for s in snaps if s.exists), None)
            if taken is not None:
                raise _Taken(taken)
            for name, _, data in docs:
                tx.create(self.client.document(name), data)
            return [self._with_etag(m) for _, m, _ in docs]

        return self._run_batch(context, body)

    # -- AIP-234 BatchUpdate --------------------------------------------------------------
    def batch_update(self, context, requests, parent: str = "") -> list:
        """Apply every ``(resource, update_mask or None)`` of ``requests`` as Update does, all or
        none; return the results in order. Aborts INVALID_ARGUMENT, NOT_FOUND (the first
        missing), FAILED_PRECONDITION (a soft-deleted one), ABORTED, UNAVAILABLE."""
        requests = list(requests)
        with self._errors(context, "resource"):
            names = [getattr(r, self.name_field) for r, _ in requests]
            self._check_batch(names, parent, "requests")
            plans = [self._mask_plan(r, m) for r, m in requests]

        def body(tx):
            snaps = self._read_all(tx, names, context)
            out = []
            for i, ((resource, _), plan, snap) in enumerate(zip(requests, plans, snaps, strict=True)):
                if not snap.exists:
                    raise _Missing(snap.reference.path)
                out.append(self._apply_mask(plan, resource, self._from_doc(snap), f"requests[{i}]: "))
            for msg in out:
                tx.set(self.client.document(getattr(msg, self.name_field)), self._document(msg))
            return [self._with_etag(msg) for msg in out]

        return self._run_batch(context, body)

    # -- AIP-235 BatchDelete --------------------------------------------------------------
    def batch_delete(self, context, names, parent: str = "") -> list:
        """Delete every one of ``names``, all or none (a soft-deleting store marks them deleted;
        resources with child resources are FAILED_PRECONDITION); return what was deleted, in
        order. Aborts INVALID_ARGUMENT, NOT_FOUND (the first missing or already deleted),
        FAILED_PRECONDITION, ABORTED, UNAVAILABLE."""
        names = list(names)
        with self._errors(context, "resource"):
            self._check_batch(names, parent, "names")
        from scaffold_runtime.store import _HasChildren

        def body(tx):
            timeout = self._timeout(context)
            snaps = self._read_all(tx, names, context)
            out = []
            for snap in snaps:
                if not snap.exists:
                    raise _Missing(snap.reference.path)
                msg = self._from_doc(snap)
                if self.soft_delete:
                    if msg.HasField("delete_time"):
                        raise _Missing(snap.reference.path)
                    self._mark(msg, True)
                elif self.children and any(
                        any(True for _ in tx.get(c.limit(1), timeout=timeout)) for c in snap.reference.collections(timeout=timeout)):
                    raise _HasChildren(snap.reference.path)
                out.append(msg)
            for snap, msg in zip(snaps, out, strict=True):
                if self.soft_delete:
                    tx.set(snap.reference, self._document(msg))
                else:
                    tx.delete(snap.reference)
            return out

        return self._run_batch(context, body)
