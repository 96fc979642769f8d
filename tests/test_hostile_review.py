"""Hostile callers found by the review (issue: review): each attack reproduced against a real
generated neuron on 127.0.0.1 and the real Firestore emulator; every loop is bounded."""

from __future__ import annotations

import grpc
import pytest

from tests.conftest import REPO
from tests.helpers import ServerProcess, import_stubs
from tests.test_store_aip import env, library_stores, uid  # noqa: F401 - env is the module's fixture

BOOKS = REPO / "examples/books/neurons/resources-books-v1"
SERVICE = "/xmpl.br.resources.books.v1.BooksService"
# Bytes no message can be read from: a bad tag, a length past the end, a truncated varint.
GARBAGE = (b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab", b"\x08")
BAD_UTF8_NAME = b"\x0a\x02\xc3\x28"  # GetBookRequest.name (a proto3 string) holding invalid UTF-8


@pytest.fixture(scope="module")
def server(emulator):
    proc = ServerProcess(BOOKS, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
    yield proc
    proc.stop()


def raw_call(channel, method: str, payload: bytes, streaming: bool = False):
    """Send ``payload`` as the request bytes of ``method``; returns (code, details)."""
    kw = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    try:
        if streaming:
            list(channel.stream_stream(method, **kw)(iter([payload]), timeout=10))
        else:
            channel.unary_unary(method, **kw)(payload, timeout=10)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as err:
        return err.code(), err.details() or ""


def test_malformed_protobuf_bytes_are_invalid_argument_not_internal(server):
    pb = import_stubs(BOOKS, "xmpl.br.resources.books.v1.books_pb2")
    pb_grpc = import_stubs(BOOKS, "xmpl.br.resources.books.v1.books_pb2_grpc")
    with grpc.insecure_channel(server.target) as channel:
        for method, type_name, payloads in (("GetBook", "GetBookRequest", (*GARBAGE, BAD_UTF8_NAME)),
                                            ("ListBooks", "ListBooksRequest", GARBAGE),
                                            ("CreateBook", "CreateBookRequest", GARBAGE)):
            for payload in payloads:
                code, details = raw_call(channel, f"{SERVICE}/{method}", payload)
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, payload, code, details)
                assert f"xmpl.br.resources.books.v1.{type_name}" in details and "Exception" not in details
        code, details = raw_call(channel, "/grpc.health.v1.Health/Check", b"\xff\xff")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        code, details = raw_call(channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                 b"\xff\xff", streaming=True)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        # Well-formed calls still work on the same connection.
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.BooksServiceStub(channel).GetBook(pb.GetBookRequest(name="books/none"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    log = "".join(server.output)
    assert "Traceback" not in log and "Exception deserializing" not in log, log[-2000:]
    assert '"grpc.code": "INVALID_ARGUMENT"' in log


def test_bad_request_descriptions_are_plain_text_and_bounded(server):
    """AIP-193 field violations carry the message itself, not its Python repr in quotes."""
    from scaffold_runtime.status import details_of

    pb = import_stubs(BOOKS, "xmpl.br.resources.books.v1.books_pb2")
    pb_grpc = import_stubs(BOOKS, "xmpl.br.resources.books.v1.books_pb2_grpc")
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.BooksServiceStub(channel)
        for name, expected in (("shelves/x", "name 'shelves/x' does not match the format books/{book}"),
                               ("n" * 5000, None)):
            with pytest.raises(grpc.RpcError) as err:
                stub.GetBook(pb.GetBookRequest(name=name), timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            (violation,) = [v for d in details_of(err.value) if d.DESCRIPTOR.name == "BadRequest"
                            for v in d.field_violations]
            assert violation.field == "name"
            if expected:
                assert violation.description == expected == err.value.details()
            else:
                assert violation.description.startswith("name 'nnn") and len(violation.description) <= 101


def test_the_aip159_wildcard_parent_is_refused_not_stored_as_a_shelf_named_dash(env):
    """`POST /v1/shelves/-/books` stored shelves/-/books/x and `GET /v1/shelves/-/books` listed only
    that literal shelf: a caller asking for every shelf silently got the wrong answer."""
    shelves, books = library_stores(env)
    for parent in ("shelves/-", "-"):
        err = env.h.fails(lambda ctx, parent=parent: books.create(
            ctx, env.library.Book(title="W"), uid("b"), parent=parent))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "AIP-159" in err.details(), err.details()
        err = env.h.fails(lambda ctx, parent=parent: books.list(ctx, 10, parent=parent) and None)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "shelves/{shelf}" in err.details(), err.details()
    assert not list(env.client.collection("shelves/-/books").limit(1).stream())
    shelf = env.h.run(lambda ctx: shelves.create(ctx, env.library.Shelf(theme="t")), env.library.Shelf).name
    made = env.h.run(lambda ctx: books.create(ctx, env.library.Book(title="W"), uid("b"), parent=shelf), env.library.Book)
    assert made.name.startswith(shelf + "/books/")  # one named parent still works
