"""AIP-193 errors: a gRPC status carrying ``google.rpc.ErrorInfo`` and ``google.rpc.BadRequest``.

    status.abort(context, grpc.StatusCode.NOT_FOUND, "'books/b1' not found",
                 reason="RESOURCE_NOT_FOUND", domain="library.googleapis.com",
                 metadata={"resource": "books/b1"})

The details travel in the ``grpc-status-details-bin`` trailer (grpcio-status); clients read
them with ``grpc_status.rpc_status.from_call(err)``, the gateway renders them as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

METADATA_VALUE_LIMIT = 200  # characters per ErrorInfo metadata value (trailers stay small)


def status(code: grpc.StatusCode, message: str, *, reason: str, domain: str,
           metadata: Mapping[str, str] | None = None, violations: Iterable[tuple[str, str]] = ()) -> grpc.Status:
    """A grpc.Status for ``abort_with_status``: ``message`` plus an ErrorInfo (``reason``,
    ``domain``, ``metadata``) and, when ``violations`` (``(field, description)`` pairs) are
    given, a BadRequest with one field violation each."""
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=domain,
        metadata={k: str(v)[:METADATA_VALUE_LIMIT] for k, v in (metadata or {}).items() if v != ""})
    details = [info]
    pairs = list(violations)
    if pairs:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in pairs]))
    packed = []
    for d in details:
        any_ = any_pb2.Any()
        any_.Pack(d)
        packed.append(any_)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=packed))


def abort(context, code: grpc.StatusCode, message: str, **kwargs) -> None:
    """End the RPC on ``context`` with :func:`status` (raises, as ``context.abort`` does)."""
    context.abort_with_status(status(code, message, **kwargs))


def details_of(err: grpc.RpcError) -> list:
    """The unpacked detail messages (ErrorInfo, BadRequest, ...) of a failed call, [] if none."""
    st = rpc_status.from_call(err)
    if st is None:
        return []
    out = []
    for any_ in st.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
            if any_.Is(cls.DESCRIPTOR):
                msg = cls()
                any_.Unpack(msg)
                out.append(msg)
    return out
