"""AIP-151 long-running operations on Firestore, and the google.longrunning.Operations service.

Operations live in one Firestore collection per neuron (``OPERATIONS_COLLECTION``, default
``_operations``), named ``operations/{uuid}``. Each document holds the serialized Operation
(``op``), ``done``, ``cancel_requested`` and ``create_time``.

- Standard methods that return an Operation do their work in the call and answer with
  :meth:`Operations.done`: the resource packed in ``response``, the metadata in ``metadata``.
- Custom long-running methods call :meth:`Operations.start` with a ``work(job)`` function: it
  runs on a background thread, reports progress with ``job.progress(metadata)``, checks
  ``job.cancelled()`` (set by CancelOperation, from any instance) and returns the response
  message; raising :class:`Cancelled` or :class:`Failed` ends the operation with that status.
  On Cloud Run a background thread only runs while CPU is allocated (``--no-cpu-throttling``);
  work that may outlive the request belongs in Cloud Tasks or a Cloud Run job (see the README).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import threading
import time
import uuid

import grpc
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, empty_pb2
from google.rpc import code_pb2, status_pb2

from scaffold_runtime import aip

log = logging.getLogger("scaffold_runtime.operations")
COLLECTION = os.environ.get("OPERATIONS_COLLECTION", "_operations")
PREFIX = "operations/"
WAIT_MAX_SECONDS = 60.0  # WaitOperation without a timeout waits at most this (or the deadline)
_NAME = re.compile(r"^operations/[0-9a-f-]{36}$")
_DONE_FILTER = re.compile(r"^\s*done\s*=\s*(true|false)\s*$")


class Cancelled(Exception):
    """Raised by work that saw ``job.cancelled()``: the operation ends with CANCELLED."""


class Failed(Exception):
    """Raised by work to end its operation with ``code`` and ``message`` (shown to callers)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _pack(msg) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(msg if msg is not None else empty_pb2.Empty())
    return out


def _errors(context, name: str = ""):
    """The store's error mapping (never UNKNOWN): NOT_FOUND, INVALID_ARGUMENT, UNAVAILABLE, INTERNAL."""
    from scaffold_runtime.store import ResourceStore

    return ResourceStore._errors(_OPERATIONS_ERRORS, context, name)


class _OperationsErrors:
    """What the store's error mapping reads of a store: the AIP-193 ErrorInfo domain and type."""

    resource_type = "longrunning.googleapis.com/Operation"
    domain = "longrunning.googleapis.com"


_OPERATIONS_ERRORS = _OperationsErrors()


class Job:
    """What running work sees: its operation's name, progress reports and the cancel flag."""

    def __init__(self, ops: Operations, name: str, op: operations_pb2.Operation) -> None:
        self.ops, self.name, self._op = ops, name, op

    def progress(self, metadata) -> None:
        """Replace the operation's metadata with ``metadata`` (e.g. a percentage done)."""
        self._op.metadata.CopyFrom(_pack(metadata))
        self.ops._ref(self.name).update({"op": self._op.SerializeToString()}, timeout=self.ops.timeout)

    def cancelled(self) -> bool:
        """Whether CancelOperation was called for this operation (read from Firestore)."""
        snap = self.ops._ref(self.name).get(timeout=self.ops.timeout)
        return bool(snap.exists and snap.get("cancel_requested"))


class Operations:
    """A neuron's operations collection: create (done or running), read, list, cancel, delete."""

    def __init__(self, client, collection: str = COLLECTION, timeout: float | None = None) -> None:
        self.client, self.collection = client, collection
        from scaffold_runtime import store

        self.timeout = timeout or store.TIMEOUT

    def _ref(self, name: str):
        return self.client.collection(self.collection).document(name.removeprefix(PREFIX))

    def _save(self, op: operations_pb2.Operation, *, create: bool = False) -> None:
        data = {"op": op.SerializeToString(), "done": op.done}
        ref = self._ref(op.name)
        if create:
            ref.create({**data, "cancel_requested": False, "create_time": datetime.datetime.now(datetime.UTC)},
                       timeout=self.timeout)
        else:
            ref.update(data, timeout=self.timeout)

    # -- what methods call ----------------------------------------------------------------
    def done(self, context, result, metadata=None) -> operations_pb2.Operation:
        """Store and return a finished operation whose ``response`` is ``result`` (packed) and
        whose ``metadata`` is ``metadata`` (packed; Empty when None). Aborts UNAVAILABLE/INTERNAL."""
        op = operations_pb2.Operation(name=f"{PREFIX}{uuid.uuid4()}", done=True, metadata=_pack(metadata),
                                      response=_pack(result))
        with _errors(context, op.name):
            self._save(op, create=True)
        return op

    def start(self, context, metadata, work, *, name: str = "") -> operations_pb2.Operation:
        """Store a running operation and run ``work(job)`` on a background thread; return the
        operation (not done). ``work`` returns the response message; :class:`Cancelled` and
        :class:`Failed` end it with that status, any other exception with INTERNAL (logged)."""
        op = operations_pb2.Operation(name=name or f"{PREFIX}{uuid.uuid4()}", metadata=_pack(metadata))
        with _errors(context, op.name):
            self._save(op, create=True)
        running = operations_pb2.Operation()
        running.CopyFrom(op)
        threading.Thread(target=self._run, args=(Job(self, op.name, running), work), name=f"lro-{op.name[-8:]}",
                         daemon=True).start()
        return op

    def _run(self, job: Job, work) -> None:
        op = job._op
        try:
            op.response.CopyFrom(_pack(work(job)))
        except Cancelled:
            op.error.CopyFrom(status_pb2.Status(code=code_pb2.CANCELLED, message="the operation was cancelled"))
        except Failed as exc:
            op.error.CopyFrom(status_pb2.Status(code=exc.code.value[0], message=exc.message))
        except Exception:
            log.exception("operation %s failed", job.name)
            op.error.CopyFrom(status_pb2.Status(code=code_pb2.INTERNAL, message="internal error"))
        op.done = True
        try:
            self._save(op)
        except Exception:
            log.exception("could not record the end of operation %s", job.name)

    # -- reads ----------------------------------------------------------------------------
    def _check(self, name: str) -> str:
        if not _NAME.match(name or ""):
            raise aip.InvalidArgument(f"name {aip.echo(name)} is not an operation name (operations/{{uuid}})")
        return name

    def read(self, name: str) -> tuple[operations_pb2.Operation, bool]:
        """(operation, cancel_requested); raises aip.InvalidArgument or google NotFound."""
        from google.api_core import exceptions as gexc

        snap = self._ref(self._check(name)).get(timeout=self.timeout)
        if not snap.exists:
            raise gexc.NotFound(name)
        return operations_pb2.Operation.FromString(snap.get("op")), bool(snap.get("cancel_requested"))


class OperationsServicer(operations_pb2_grpc.OperationsServicer):
    """google.longrunning.Operations over :class:`Operations` (AIP-151)."""

    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def GetOperation(self, request, context):
        with _errors(context, request.name):
            return self.ops.read(request.name)[0]

    def ListOperations(self, request, context):
        """Operations in name order; ``filter`` may be empty or ``done = true|false``."""
        with _errors(context, request.name):
            if request.name not in ("", "operations"):
                raise aip.InvalidArgument("name must be empty or \"operations\"")
            m = _DONE_FILTER.match(request.filter)
            if request.filter and m is None:
                raise aip.InvalidArgument("filter must be empty, \"done = true\" or \"done = false\"")
            from google.cloud.firestore_v1.base_query import FieldFilter

            size = aip.page_size(request.page_size)
            collection = self.ops.client.collection(self.ops.collection)
            query = collection
            scope = f"operations?{m.group(1) if m else ''}"
            if m:
                query = query.where(filter=FieldFilter("done", "==", m.group(1) == "true"))
            query = query.order_by("__name__")
            if request.page_token:
                after = aip.decode_page_token(request.page_token, scope)
                query = query.start_after({"__name__": collection.document(after)})
            snaps = list(query.limit(size + 1).stream(timeout=self.ops.timeout))
            out = operations_pb2.ListOperationsResponse(
                operations=[operations_pb2.Operation.FromString(s.get("op")) for s in snaps[:size]])
            if len(snaps) > size:
                out.next_page_token = aip.encode_page_token(snaps[size - 1].id, scope)
            return out

    def DeleteOperation(self, request, context):
        from google.api_core import exceptions as gexc

        with _errors(context, request.name):
            self.ops._check(request.name)
            try:
                self.ops._ref(request.name).delete(option=self.ops.client.write_option(exists=True),
                                                    timeout=self.ops.timeout)
            except gexc.FailedPrecondition:  # the emulator's answer for exists=False
                raise gexc.NotFound(request.name) from None
            return empty_pb2.Empty()

    def CancelOperation(self, request, context):
        """Ask the work to stop (it checks ``job.cancelled()``); a done operation is left as is."""
        with _errors(context, request.name):
            op, _ = self.ops.read(request.name)
            if not op.done:
                self.ops._ref(request.name).update({"cancel_requested": True}, timeout=self.ops.timeout)
            return empty_pb2.Empty()

    def WaitOperation(self, request, context):
        """The operation once done, or as it is when ``timeout`` (at most WAIT_MAX_SECONDS, and
        within the call's deadline) passes."""
        with _errors(context, request.name):
            limit = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else WAIT_MAX_SECONDS
            remaining = context.time_remaining()
            limit = min(max(0.0, limit), WAIT_MAX_SECONDS, (remaining - 0.5) if remaining is not None else WAIT_MAX_SECONDS)
            end, pause = time.monotonic() + limit, 0.05
            while True:
                op, _ = self.ops.read(request.name)
                if op.done or time.monotonic() + pause > end or not context.is_active():
                    return op
                time.sleep(pause)
                pause = min(pause * 2, 1.0)


def add_to_server(deps, server) -> Operations:
    """Register google.longrunning.Operations on ``server``, on ``deps.firestore``; returns the store."""
    ops = Operations(deps.firestore)
    operations_pb2_grpc.add_OperationsServicer_to_server(OperationsServicer(ops), server)
    return ops


SERVICE_NAME = operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name


def service():
    """google.longrunning.Operations as one of a neuron's services (for scaffold_runtime.server)."""
    from scaffold_runtime.server import Service

    return Service(SERVICE_NAME, operations_pb2_grpc.add_OperationsServicer_to_server,
                   lambda deps: OperationsServicer(Operations(deps.firestore)))
