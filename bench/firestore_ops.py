"""Firestore reads and writes per ResourceStore call, next to the minimum each operation needs.

    .venv/bin/python bench/firestore_ops.py      # starts its own emulator on 127.0.0.1

The Firestore client's RPCs are wrapped to count what Firestore bills: one read per document
lookup (BatchGetDocuments, found or not) and per document a query returns (RunQuery; an empty
result still bills one), one write per write in a Commit (a write whose precondition fails is
counted too: it was attempted). Uses the real emulator and tests/protos/aip (widgets: etag, request_id, allow_missing).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class Counts:
    def __init__(self) -> None:
        self.reads = self.writes = 0


def instrument(client, counts: Counts) -> None:
    """Count billed reads and writes of every RPC ``client`` makes."""
    api = client._firestore_api

    def streaming(fn, found, at_least: int):
        def wrapper(*args, **kwargs):
            n = 0
            for response in fn(*args, **kwargs):
                if found(response):
                    n += 1
                    counts.reads += 1
                yield response
            counts.reads += max(at_least - n, 0)  # an empty query still bills one read
        return wrapper

    def commit(fn):
        def wrapper(*args, **kwargs):
            request = kwargs.get("request") or (args[0] if args else None)
            counts.writes += len(request["writes"] if isinstance(request, dict) else request.writes)
            return fn(*args, **kwargs)
        return wrapper

    # A lookup bills one read, found or missing (the client stops reading after one response).
    api.batch_get_documents = streaming(api.batch_get_documents, lambda r: True, 0)
    api.run_query = streaming(api.run_query, lambda r: r._pb.HasField("document"), 1)
    api.commit = commit(api.commit)


class Context:
    """The slice of grpc.ServicerContext the store uses; an abort raises."""

    def time_remaining(self):
        return None

    def abort(self, code, message):
        raise RuntimeError(f"{code}: {message}")

    def abort_with_status(self, status):
        raise RuntimeError(f"{status.code}: {status.details}")


def main() -> None:
    from grpc_tools import protoc
    from scaffold_runtime import testing

    from generator.protoc import bundled_includes

    out = Path(tempfile.mkdtemp(prefix="bench-ops-"))
    include = REPO / "tests" / "protos" / "aip"
    assert protoc.main(["protoc", f"-I{include}", *[f"-I{i}" for i in bundled_includes()], f"--python_out={out}",
                        "aiptest/v1/widgets.proto"]) == 0
    sys.path.insert(0, str(out))
    from aiptest.v1 import widgets_pb2 as pb
    from google.protobuf import field_mask_pb2

    with testing.firestore_emulator() as emu:
        os.environ["FIRESTORE_EMULATOR_HOST"] = emu.host
        from google.cloud import firestore
        from scaffold_runtime.store import ResourceStore

        client = firestore.Client(project="demo-bench")
        counts = Counts()
        instrument(client, counts)
        store = ResourceStore(client, pb.Widget, "widgets/{widget}", id_field="widget_id")
        ctx = Context()
        for i in range(20):
            store.create(ctx, pb.Widget(display_name=f"w{i % 4}"), f"seed-{i}")
        rows = []

        def measure(label, minimum, fn):
            counts.reads = counts.writes = 0
            fn()
            rows.append((label, counts.reads, counts.writes, minimum))

        w = store.create(ctx, pb.Widget(display_name="x"), "w-1")
        mask = field_mask_pb2.FieldMask(paths=["title"])
        measure("Get", "1 R", lambda: store.get(ctx, "widgets/seed-1"))
        measure("List, page_size 10 of 21", "10 R", lambda: store.list(ctx, 10))
        measure("List, filter + order_by, page_size 3", "3 R",
                lambda: store.list(ctx, 3, filter='display_name = "w1"', order_by="create_time desc"))
        measure("Create", "1 W", lambda: store.create(ctx, pb.Widget(display_name="y"), "w-2"))
        measure("Create with request_id", "1 W (+1 W record)",
                lambda: store.create(ctx, pb.Widget(display_name="y"), "w-3", request_id="r-1"))
        measure("Create, repeated request_id (replay)", "1 R",
                lambda: store.create(ctx, pb.Widget(display_name="y"), "w-3", request_id="r-1"))
        measure("Update with update_mask", "1 R + 1 W", lambda: store.update(ctx, pb.Widget(name=w.name, title="t"), mask))
        w = store.get(ctx, w.name)
        measure("Update with etag", "1 R + 1 W",
                lambda: store.update(ctx, pb.Widget(name=w.name, title="u", etag=w.etag), mask))
        measure("Update, allow_missing creates", "1 R + 1 W",
                lambda: store.update(ctx, pb.Widget(name="widgets/new-1", display_name="n"), allow_missing=True))
        measure("Delete", "1 W", lambda: store.delete(ctx, "widgets/w-2"))
        w = store.get(ctx, w.name)
        measure("Delete with etag", "1 R + 1 W", lambda: store.delete(ctx, w.name, etag=w.etag))
        measure("Delete, allow_missing, absent", "1 W (precondition)",
                lambda: store.delete(ctx, "widgets/gone", allow_missing=True))
        measure("Delete with request_id", "1 W (+1 W record)",
                lambda: store.delete(ctx, "widgets/new-1", request_id="r-2"))
    print(f"{'call':<40} {'reads':>5} {'writes':>6}  minimum")
    for label, r, wr, minimum in rows:
        print(f"{label:<40} {r:>5} {wr:>6}  {minimum}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
