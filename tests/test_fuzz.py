"""Property-based tests (hypothesis): generated requests to every Books method, and generated
names and paths to the CLI. Only documented status codes come back, nothing is stored for a
rejected request, and the CLI answers with a clean error or a working result.
"""

from __future__ import annotations

import json
import keyword
import os
import subprocess
import sys

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO, _neuron_testing, need
from tests.helpers import ServerProcess, import_stubs

BOOKS = REPO / "examples/books/neurons/resources-books-v1"
DOCUMENTED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "RESOURCE_EXHAUSTED"}
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Odd text: control characters, RTL marks, emoji, long strings, path-like and Firestore-reserved.
odd_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=300),
    st.sampled_from(["", " ", "..", ".", "__name__", "a/b", "/", "books/", "books/..", "books/__x__", "books/a/b",
                     "\u202e", "\x00", "books/\x00", "💥" * 50, "x" * 2000, "books/" + "y" * 1600]),
)
names = st.one_of(odd_text, odd_text.map(lambda t: f"books/{t}"))
masks = st.lists(st.one_of(st.sampled_from(["display_name", "publisher", "authors", "name", "create_time", "*",
                                            "display_name.x", "nope", "authors.x", ""]), odd_text), max_size=4)


@pytest.fixture(scope="module")
def fuzz_server():
    testing = _neuron_testing()
    need(testing.emulator_command() is not None, "the Firestore emulator")
    pb = import_stubs(BOOKS, "xmpl.br.resources.books.v1.books_pb2")
    pb_grpc = import_stubs(BOOKS, "xmpl.br.resources.books.v1.books_pb2_grpc")
    with testing.firestore_emulator() as emu:
        server = ServerProcess(BOOKS, {"FIRESTORE_EMULATOR_HOST": emu.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.BooksServiceStub(ch)
            stub.CreateBook(pb.CreateBookRequest(book=pb.Book(display_name="Seed", authors=["A"], publisher="P"), book_id="seed"))
            yield pb, stub, emu
        out = server.stop()
    assert "Traceback" not in out


def count_books(stub, pb) -> int:
    total, token = 0, ""
    while True:
        page = stub.ListBooks(pb.ListBooksRequest(page_size=1000, page_token=token))
        total += len(page.books)
        token = page.next_page_token
        if not token:
            return total


def call(fn):
    try:
        fn()
        return "OK", ""
    except grpc.RpcError as err:
        return err.code().name, err.details() or ""


def check(code: str, details: str) -> None:
    assert code in DOCUMENTED, (code, details)
    for leak in ("Traceback", "/work/", "site-packages", 'File "', "/app/"):
        assert leak not in details, details


@FUZZ
@given(name=names)
def test_fuzz_get_and_delete(fuzz_server, name):
    pb, stub, _ = fuzz_server
    check(*call(lambda: stub.GetBook(pb.GetBookRequest(name=name), timeout=30)))
    if name != "books/seed":
        check(*call(lambda: stub.DeleteBook(pb.DeleteBookRequest(name=name), timeout=30)))


@FUZZ
@given(page_size=st.integers(-(2**31), 2**31 - 1), token=odd_text, flt=odd_text)
def test_fuzz_list(fuzz_server, page_size, token, flt):
    pb, stub, _ = fuzz_server
    check(*call(lambda: stub.ListBooks(pb.ListBooksRequest(page_size=page_size, page_token=token, filter=flt), timeout=30)))


@FUZZ
@given(display=odd_text, publisher=odd_text, authors=st.lists(odd_text, max_size=3), book_id=odd_text,
       name=names, huge=st.booleans())
def test_fuzz_create_stores_nothing_when_rejected(fuzz_server, display, publisher, authors, book_id, name, huge):
    pb, stub, _ = fuzz_server
    if huge:
        display = "z" * 1_100_000  # over Firestore's 1 MiB document limit
    before = count_books(stub, pb)
    created = []
    code, details = call(lambda: created.append(stub.CreateBook(pb.CreateBookRequest(
        book=pb.Book(name=name, display_name=display, publisher=publisher, authors=authors), book_id=book_id), timeout=30)))
    check(code, details)
    after = count_books(stub, pb)
    assert after == before + (1 if code == "OK" else 0), (code, details)
    if created:
        stub.DeleteBook(pb.DeleteBookRequest(name=created[0].name))


@FUZZ
@given(name=names, display=odd_text, paths=masks)
def test_fuzz_update_changes_nothing_when_rejected(fuzz_server, name, display, paths):
    pb, stub, _ = fuzz_server
    seed = stub.GetBook(pb.GetBookRequest(name="books/seed"))
    code, details = call(lambda: stub.UpdateBook(pb.UpdateBookRequest(
        book=pb.Book(name=name, display_name=display), update_mask={"paths": paths}), timeout=30))
    check(code, details)
    if code != "OK":
        assert stub.GetBook(pb.GetBookRequest(name="books/seed")) == seed
    else:  # put the seed back for the next example
        stub.UpdateBook(pb.UpdateBookRequest(book=seed, update_mask={"paths": ["*"]}))


# -- The CLI ---------------------------------------------------------------------------------

cli_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["../x", "/etc/passwd", "xmpl.br.resources-../../x-v1", "xmpl.br.resources-class-v1",
                     "xmpl.br.resources-books-v1/../../..", "xmpl.br.services-def-v1", "xmpl.br.resources-ünï-v1",
                     "xmpl.br.resources-books-v1\x00", "-h", "--force", "xmpl..resources-books-v1"]),
)


@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=cli_text)
def test_fuzz_cli_names_never_traceback_or_escape(tmp_path_factory, name):
    from generator import cli

    root = tmp_path_factory.mktemp("cli")
    outside = set(root.parent.iterdir())
    old = os.getcwd()
    try:
        os.chdir(root)
        assert cli.run(["init", "ws", "--org", "xmpl", "--product", "br"]) == 0
        os.chdir(root / "ws")
        for argv in (["proto", "create", name], ["neuron", "create", name], ["neuron", "create", "--out", name,
                                                                              "--proto", "proto/none.proto"]):
            try:
                code = cli.run(argv)
            except SystemExit as exc:  # typer's own usage errors
                code = exc.code
            assert code in (0, 1, 2), (argv, code)
    finally:
        os.chdir(old)
    assert set(root.parent.iterdir()) == outside  # nothing written next to the workspace's folder
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(root.resolve()), path


@settings(max_examples=25, deadline=None)
@given(rpc=st.sampled_from(["Class", "Import", "Def", "Return", "None", "Lambda"]),
       field=st.sampled_from(["class", "import", "def", "return", "lambda", "from", "global", "yield"]))
def test_reserved_python_words_as_rpc_and_field_names(tmp_path_factory, rpc, field):
    """Keywords as field names get protoc's treatment; RPC names are CamelCase so never clash.
    The generated neuron must import and list its services."""
    from generator import cli

    root = tmp_path_factory.mktemp("kw")
    proto = root / "kw.proto"
    proto.write_text(f'syntax = "proto3";\npackage kw.v1;\nmessage R {{ string {field} = 1; }}\n'
                     f"service S {{ rpc {rpc}(R) returns (R); }}\n")
    old = os.getcwd()
    try:
        os.chdir(root)
        assert cli.run(["init", "ws", "--org", "xmpl", "--product", "br"]) == 0
        os.chdir(root / "ws")
        code = cli.run(["neuron", "create", "--proto", str(proto), "--out", "kw"])
    finally:
        os.chdir(old)
    neuron = root / "ws/neurons/kw"
    if keyword.iskeyword(rpc):  # None: grpcio-tools cannot generate it; a clean refusal, nothing written
        assert code == 2 and not neuron.exists()
        return
    assert code == 0
    probe = subprocess.run([sys.executable, "-c", "import server, json; print(json.dumps(list(server.SERVICE_NAMES)))"],
                           cwd=neuron, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "protobuf"})
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == ["kw.v1.S"]
