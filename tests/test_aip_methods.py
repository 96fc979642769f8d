"""AIP-164 soft delete, AIP-231/233/234/235 batch methods and AIP-151 long-running operations,
generated from protos and run as real servers (and gateways) against the Firestore emulator:
our own proto (tests/protos/aipmethods) and real googleapis protos that declare them."""

from __future__ import annotations

import datetime
import importlib
import time
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest

from tests.conftest import REPO
from tests.helpers import ServerProcess, import_stubs
from tests.test_gateway import Gateway

OWN = REPO / "tests/protos/aipmethods"


@pytest.fixture
def library(workspace, scaffold, emulator):
    """Our proto's neuron running (gRPC + gateway), its stub module and a channel."""
    emulator.wipe("aiplib")  # the neuron's own database
    r = scaffold("neuron", "create", "--proto", str(OWN / "xmpl/aip/v1/library.proto"), "-I", str(OWN), "--out", "aiplib")
    assert r.code == 0, r.output
    root = workspace / "neurons/aiplib"
    pb_grpc = import_stubs(root, "xmpl.aip.v1.library_pb2_grpc")  # a fresh xmpl package: another test's may be loaded
    pb = importlib.import_module("xmpl.aip.v1.library_pb2")  # the one pb_grpc imported
    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
    gateway = Gateway(root, server.target)
    channel = grpc.insecure_channel(server.target)
    yield pb, pb_grpc.LibraryStub(channel), channel, gateway.url
    channel.close()
    gateway.stop()
    server.stop()


def code_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_soft_delete_and_undelete(library):
    pb, stub, _, _ = library
    for i in range(3):
        stub.CreateShelf(pb.CreateShelfRequest(shelf_id=f"s{i}", shelf=pb.Shelf(title=f"t{i}")))
    deleted = stub.DeleteShelf(pb.DeleteShelfRequest(name="shelves/s1"))
    assert deleted.name == "shelves/s1" and deleted.HasField("delete_time")
    retention = deleted.expire_time.ToDatetime() - deleted.delete_time.ToDatetime()
    assert retention == datetime.timedelta(days=30)
    # List hides it unless show_deleted; Get still returns it.
    assert [s.name for s in stub.ListShelves(pb.ListShelvesRequest()).shelves] == ["shelves/s0", "shelves/s2"]
    assert [s.name for s in stub.ListShelves(pb.ListShelvesRequest(show_deleted=True)).shelves] == [
        "shelves/s0", "shelves/s1", "shelves/s2"]
    assert stub.GetShelf(pb.GetShelfRequest(name="shelves/s1")) == deleted
    # Deleting again: NOT_FOUND; creating its id again: ALREADY_EXISTS; updating it: FAILED_PRECONDITION.
    assert code_of(lambda: stub.DeleteShelf(pb.DeleteShelfRequest(name="shelves/s1")))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stub.CreateShelf(pb.CreateShelfRequest(shelf_id="s1")))[0] == grpc.StatusCode.ALREADY_EXISTS
    code, details = code_of(lambda: stub.UpdateShelf(pb.UpdateShelfRequest(shelf=pb.Shelf(name="shelves/s1", title="x"))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "undelete" in details
    restored = stub.UndeleteShelf(pb.UndeleteShelfRequest(name="shelves/s1"))
    assert not restored.HasField("delete_time") and not restored.HasField("expire_time") and restored.title == "t1"
    assert len(stub.ListShelves(pb.ListShelvesRequest()).shelves) == 3
    # An updated resource stays listed (the _scaffold_deleted marker survives updates).
    stub.UpdateShelf(pb.UpdateShelfRequest(shelf=pb.Shelf(name="shelves/s1", title="new")))
    assert len(stub.ListShelves(pb.ListShelvesRequest()).shelves) == 3
    assert code_of(lambda: stub.UndeleteShelf(pb.UndeleteShelfRequest(name="shelves/s1")))[0] == grpc.StatusCode.ALREADY_EXISTS
    assert code_of(lambda: stub.UndeleteShelf(pb.UndeleteShelfRequest(name="shelves/zz")))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: stub.UndeleteShelf(pb.UndeleteShelfRequest(name="bad/name")))[0] == grpc.StatusCode.INVALID_ARGUMENT


def _books(pb, *ids, shelf="shelves/a"):
    return [pb.CreateBookRequest(book_id=i, book=pb.Book(title=f"T {i}")) for i in ids], shelf


def test_batch_methods(library):
    pb, stub, _, _ = library
    stub.CreateShelf(pb.CreateShelfRequest(shelf_id="a"))
    requests, shelf = _books(pb, "b3", "b1", "b2")
    made = stub.BatchCreateBooks(pb.BatchCreateBooksRequest(parent=shelf, requests=requests)).books
    assert [b.name for b in made] == ["shelves/a/books/b3", "shelves/a/books/b1", "shelves/a/books/b2"]  # order kept
    got = stub.BatchGetBooks(pb.BatchGetBooksRequest(parent=shelf, names=["shelves/a/books/b2", "shelves/a/books/b3"]))
    assert [b.title for b in got.books] == ["T b2", "T b3"]
    code, details = code_of(lambda: stub.BatchGetBooks(pb.BatchGetBooksRequest(
        names=["shelves/a/books/b1", "shelves/a/books/x1", "shelves/a/books/x2"])))
    assert code == grpc.StatusCode.NOT_FOUND and "shelves/a/books/x1" in details
    # Parent consistency, size limits, duplicates: INVALID_ARGUMENT.
    code, details = code_of(lambda: stub.BatchGetBooks(pb.BatchGetBooksRequest(parent="shelves/other", names=["shelves/a/books/b1"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a child" in details
    bad = [pb.CreateBookRequest(parent="shelves/zz", book_id="c1", book=pb.Book(title="x"))]
    assert code_of(lambda: stub.BatchCreateBooks(pb.BatchCreateBooksRequest(parent=shelf, requests=bad)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    many = [f"shelves/a/books/n{i}" for i in range(1001)]
    code, details = code_of(lambda: stub.BatchGetBooks(pb.BatchGetBooksRequest(names=many)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "1000" in details
    assert code_of(lambda: stub.BatchGetBooks(pb.BatchGetBooksRequest()))[0] == grpc.StatusCode.INVALID_ARGUMENT
    # All or nothing: one taken id fails the batch and creates none of the others.
    requests, _ = _books(pb, "c1", "b1", "c2")
    code, details = code_of(lambda: stub.BatchCreateBooks(pb.BatchCreateBooksRequest(parent=shelf, requests=requests)))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "shelves/a/books/b1" in details
    assert code_of(lambda: stub.GetBook(pb.GetBookRequest(name="shelves/a/books/c1")))[0] == grpc.StatusCode.NOT_FOUND
    requests, _ = _books(pb, "d1", "d1")
    assert code_of(lambda: stub.BatchCreateBooks(pb.BatchCreateBooksRequest(parent=shelf, requests=requests)))[0] == grpc.StatusCode.INVALID_ARGUMENT
    # Under a missing parent (a store of this neuron): NOT_FOUND naming it.
    requests, _ = _books(pb, "e1")
    code, details = code_of(lambda: stub.BatchCreateBooks(pb.BatchCreateBooksRequest(parent="shelves/none", requests=requests)))
    assert code == grpc.StatusCode.NOT_FOUND and "shelves/none" in details
    # A full batch of 1000 in one transaction.
    requests = [pb.CreateBookRequest(book_id=f"m{i:04d}", book=pb.Book(title="m")) for i in range(1000)]
    assert len(stub.BatchCreateBooks(pb.BatchCreateBooksRequest(parent=shelf, requests=requests), timeout=60).books) == 1000
    # BatchUpdate: masks per request, order kept, one missing fails all.
    ups = [pb.UpdateBookRequest(book=pb.Book(name="shelves/a/books/b2", author="X"), update_mask={"paths": ["author"]}),
           pb.UpdateBookRequest(book=pb.Book(name="shelves/a/books/b1", title="New"), update_mask={"paths": ["title"]})]
    out = stub.BatchUpdateBooks(pb.BatchUpdateBooksRequest(parent=shelf, requests=ups)).books
    assert [(b.name, b.title, b.author) for b in out] == [("shelves/a/books/b2", "T b2", "X"), ("shelves/a/books/b1", "New", "")]
    ups.append(pb.UpdateBookRequest(book=pb.Book(name="shelves/a/books/gone", title="y")))
    ups[0].book.author = "Y"
    code, details = code_of(lambda: stub.BatchUpdateBooks(pb.BatchUpdateBooksRequest(requests=ups)))
    assert code == grpc.StatusCode.NOT_FOUND and "gone" in details
    assert stub.GetBook(pb.GetBookRequest(name="shelves/a/books/b2")).author == "X"
    clear = [pb.UpdateBookRequest(book=pb.Book(name="shelves/a/books/b2"), update_mask={"paths": ["title"]})]
    code, details = code_of(lambda: stub.BatchUpdateBooks(pb.BatchUpdateBooksRequest(requests=clear)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "requests[0]" in details and "title" in details
    # BatchDelete: all or nothing.
    names = ["shelves/a/books/b1", "shelves/a/books/nope"]
    assert code_of(lambda: stub.BatchDeleteBooks(pb.BatchDeleteBooksRequest(names=names)))[0] == grpc.StatusCode.NOT_FOUND
    assert stub.GetBook(pb.GetBookRequest(name="shelves/a/books/b1")).title == "New"
    stub.BatchDeleteBooks(pb.BatchDeleteBooksRequest(parent=shelf, names=["shelves/a/books/b1", "shelves/a/books/b3"]))
    left = stub.BatchGetBooks(pb.BatchGetBooksRequest(names=["shelves/a/books/b2"])).books
    assert [b.name for b in left] == ["shelves/a/books/b2"]
    assert code_of(lambda: stub.GetBook(pb.GetBookRequest(name="shelves/a/books/b1")))[0] == grpc.StatusCode.NOT_FOUND


def test_long_running_create_and_the_operations_service(library):
    from google.longrunning import operations_pb2, operations_pb2_grpc

    pb, stub, channel, url = library
    stub.CreateShelf(pb.CreateShelfRequest(shelf_id="a"))
    op = stub.CreateBook(pb.CreateBookRequest(parent="shelves/a", book_id="b1", book=pb.Book(title="T")))
    assert op.done and op.name.startswith("operations/")
    book = pb.Book()
    assert op.response.Unpack(book) and book.name == "shelves/a/books/b1"
    assert op.metadata.Is(pb.OperationMetadata.DESCRIPTOR)
    ops = operations_pb2_grpc.OperationsStub(channel)
    assert ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name)) == op
    assert ops.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name)) == op
    listed = ops.ListOperations(operations_pb2.ListOperationsRequest(filter="done = true"))
    assert [o.name for o in listed.operations] == [op.name]
    assert not ops.ListOperations(operations_pb2.ListOperationsRequest(filter="done = false")).operations
    bad = lambda: ops.ListOperations(operations_pb2.ListOperationsRequest(filter="name = 'x'"))
    assert code_of(bad)[0] == grpc.StatusCode.INVALID_ARGUMENT
    ops.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))  # done: no effect
    assert ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name)).response == op.response
    ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name))
    assert code_of(lambda: ops.GetOperation(operations_pb2.GetOperationRequest(name=op.name)))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: ops.DeleteOperation(operations_pb2.DeleteOperationRequest(name=op.name)))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: ops.GetOperation(operations_pb2.GetOperationRequest(name="../x")))[0] == grpc.StatusCode.INVALID_ARGUMENT
    # A failing long-running create fails the call itself (nothing to poll).
    assert code_of(lambda: stub.CreateBook(pb.CreateBookRequest(parent="shelves/a", book_id="b1", book=pb.Book(title="T"))))[0] == grpc.StatusCode.ALREADY_EXISTS
    # Through the gateway: the Operation renders as JSON with its Any fields typed.
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post("/v1/shelves/a/books", params={"bookId": "b2"}, json={"title": "Via HTTP"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["done"] is True and body["response"]["@type"].endswith("xmpl.aip.v1.Book")
        assert body["response"]["name"] == "shelves/a/books/b2" and body["metadata"]["@type"].endswith("OperationMetadata")
        assert http.delete("/v1/shelves/a").json()["deleteTime"]
        assert http.post("/v1/shelves/a:undelete", json={}).status_code == 200
        got = http.get("/v1/shelves/a/books:batchGet", params={"names": ["shelves/a/books/b2"]})
        assert got.status_code == 200 and [b["title"] for b in got.json()["books"]] == ["Via HTTP"]
        r = http.post("/v1/shelves/a/books:batchCreate", json={"requests": [{"bookId": "h1", "book": {"title": "H"}}]})
        assert r.status_code == 200 and r.json()["books"][0]["name"] == "shelves/a/books/h1"
        r = http.post("/v1/shelves/a/books:batchDelete", json={"names": ["shelves/a/books/h1", "shelves/a/books/h9"]})
        assert r.status_code == 404 and "h9" in r.json()["error"]["message"]


def test_background_operations_report_progress_and_honour_cancel(emulator, monkeypatch):
    """operations.start: work on a thread, progress in metadata, CancelOperation -> CANCELLED."""
    from google.cloud import firestore
    from google.longrunning import operations_pb2, operations_pb2_grpc
    from google.protobuf import wrappers_pb2
    from google.rpc import code_pb2
    from scaffold_runtime import operations

    emulator.wipe("(default)")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    ops = operations.Operations(firestore.Client(project=emulator.project), collection="_operations")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    operations_pb2_grpc.add_OperationsServicer_to_server(operations.OperationsServicer(ops), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        stub = operations_pb2_grpc.OperationsStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

        def counting(job):
            for i in range(600):  # bounded: at most ~60 s
                if job.cancelled():
                    raise operations.Cancelled()
                job.progress(wrappers_pb2.Int32Value(value=i))
                time.sleep(0.1)
            return wrappers_pb2.StringValue(value="finished")

        op = ops.start(None, wrappers_pb2.Int32Value(value=0), counting)
        assert not op.done
        deadline = time.monotonic() + 30
        while True:
            seen = wrappers_pb2.Int32Value()
            stub.GetOperation(operations_pb2.GetOperationRequest(name=op.name)).metadata.Unpack(seen)
            if seen.value >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert seen.value >= 2  # progress reached the stored operation
        stub.CancelOperation(operations_pb2.CancelOperationRequest(name=op.name))
        end = stub.WaitOperation(operations_pb2.WaitOperationRequest(name=op.name, timeout={"seconds": 30}))
        assert end.done and end.error.code == code_pb2.CANCELLED
        # Work that fails unexpectedly ends INTERNAL without its exception text; a result is packed.
        failing = ops.start(None, None, lambda job: 1 / 0)
        ok = ops.start(None, None, lambda job: wrappers_pb2.StringValue(value="done"))
        failed = stub.WaitOperation(operations_pb2.WaitOperationRequest(name=failing.name, timeout={"seconds": 30}))
        assert failed.error.code == code_pb2.INTERNAL and "division" not in failed.error.message
        result = wrappers_pb2.StringValue()
        stub.WaitOperation(operations_pb2.WaitOperationRequest(name=ok.name, timeout={"seconds": 30})).response.Unpack(result)
        assert result.value == "done"
    finally:
        server.stop(0)


@pytest.fixture
def apikeys(workspace, scaffold, corpus, emulator):
    """google/api/apikeys/v2 (soft delete, Undelete and LRO standard methods) served with its gateway."""
    emulator.wipe("apikeys")
    rel = "google/api/apikeys/v2/apikeys.proto"
    assert scaffold("neuron", "create", "--proto", str(corpus / rel), "-I", str(corpus), "--out", "apikeys").code == 0
    root = workspace / "neurons/apikeys"
    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
    gateway = Gateway(root, server.target)
    yield root, gateway.url
    gateway.stop()
    server.stop()


def test_real_apikeys_proto_soft_deletes_through_operations(apikeys, emulator):
    root, url = apikeys
    base = "/v2/projects/p1/locations/global/keys"
    with httpx.Client(base_url=url, timeout=30) as http:
        for kid in ("k1", "k2"):
            r = http.post(base, params={"keyId": kid}, json={"displayName": kid})
            assert r.status_code == 200, r.text
            assert r.json()["done"] and r.json()["response"]["name"] == f"projects/p1/locations/global/keys/{kid}"
        r = http.delete(f"{base}/k1")
        assert r.status_code == 200 and r.json()["response"]["deleteTime"], r.text
        assert [k["name"].rsplit("/", 1)[1] for k in http.get(base).json()["keys"]] == ["k2"]
        assert len(http.get(base, params={"showDeleted": "true"}).json()["keys"]) == 2
        assert http.get(f"{base}/k1").json()["deleteTime"]
        assert http.delete(f"{base}/k1").status_code == 404
        r = http.post(f"{base}/k1:undelete", json={})
        assert r.status_code == 200 and "deleteTime" not in r.json()["response"], r.text
        assert http.post(f"{base}/k1:undelete", json={}).status_code == 409
        assert len(http.get(base).json()["keys"]) == 2
    # Its generated tests (contract included) pass on the same emulator.
    from tests.conftest import run_neuron_tests

    result = run_neuron_tests(root, emulator=emulator)
    assert result.returncode == 0, result.stdout[-3000:]


def test_real_admanager_batch_create_and_update(workspace, scaffold, corpus, emulator):
    """google/ads/admanager/v1/team_service.proto: BatchCreateTeams / BatchUpdateTeams through the gateway."""
    emulator.wipe("teams")
    rel = "google/ads/admanager/v1/team_service.proto"
    assert scaffold("neuron", "create", "--proto", str(corpus / rel), "-I", str(corpus), "--out", "teams").code == 0
    root = workspace / "neurons/teams"
    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
    gateway = Gateway(root, server.target)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            reqs = [{"parent": "networks/1", "team": {"displayName": f"Team {i}"}} for i in range(3)]
            r = http.post("/v1/networks/1/teams:batchCreate", json={"requests": reqs})
            assert r.status_code == 200, r.text
            teams = r.json()["teams"]
            assert [t["displayName"] for t in teams] == ["Team 0", "Team 1", "Team 2"]
            ups = [{"team": {"name": t["name"], "description": "d"}, "updateMask": "description"} for t in teams[:2]]
            r = http.post("/v1/networks/1/teams:batchUpdate", json={"requests": ups})
            assert r.status_code == 200 and [t["description"] for t in r.json()["teams"]] == ["d", "d"], r.text
            r = http.post("/v1/networks/2/teams:batchCreate", json={"requests": reqs[:1]})
            assert r.status_code == 400 and "parent" in r.json()["error"]["message"]
    finally:
        gateway.stop()
        server.stop()


def test_longrunning_proto_resolves_without_include(tmp_path):
    from generator import protoc

    proto = tmp_path / "x.proto"
    proto.write_text('syntax = "proto3";\npackage x;\nimport "google/longrunning/operations.proto";\n'
                     "service S { rpc Go(Empty) returns (google.longrunning.Operation); }\nmessage Empty {}\n")
    source = protoc.source_for([proto], [])
    assert source.locate("google/longrunning/operations.proto") is not None
    assert protoc.is_bundled("google/longrunning/operations.proto", source.includes)
    assert Path(source.locate("google/longrunning/operations.proto")).read_text().count("service Operations") == 1
