"""`scaffold proto lint` refuses designs that generation would silently turn into stubs or
routes the gateway cannot bind; generation refuses the unbindable route too."""

from __future__ import annotations

from tests.test_cli_proto import BOOKS, BOOKS_PROTO


def rpc_line(text: str, rpc: str) -> int:
    return next(i + 1 for i, line in enumerate(text.splitlines()) if line.strip().startswith(f"rpc {rpc}("))


def test_nested_pattern_without_parent_field_is_an_error(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    path = workspace / BOOKS_PROTO
    text = path.read_text().replace('pattern: "books/{book}"', 'pattern: "shelves/{shelf}/books/{book}"')
    text = text.replace("=books/*}", "=shelves/*/books/*}")  # Get, Update, Delete stay standard
    path.write_text(text)
    r = scaffold("proto", "lint", BOOKS)
    assert r.code == 1, r.output
    assert (f"{BOOKS_PROTO}:{rpc_line(text, 'ListBooks')}: aip-132-request-parent-required: ListBooks: "
            "books.br.xmpl/Book is nested ('shelves/{shelf}/books/{book}') but ListBooksRequest has no") in r.out
    assert f"{BOOKS_PROTO}:{rpc_line(text, 'CreateBook')}: aip-133-request-parent-required: CreateBook:" in r.out
    assert "UNIMPLEMENTED stub" in r.out
    assert "GetBook" not in r.out and "DeleteBook" not in r.out  # still name-based standard methods


def test_http_variable_naming_no_field_is_an_error_and_generation_refuses_it(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    path = workspace / BOOKS_PROTO
    text = path.read_text().replace('get: "/v1/{name=books/*}"', 'get: "/v1/{nme=books/*}"')
    assert "{nme=" in text
    path.write_text(text)
    r = scaffold("proto", "lint", BOOKS)
    assert r.code == 1
    line = rpc_line(text, "GetBook")
    assert (f"{BOOKS_PROTO}:{line}: aip-127-http-variable: the HTTP path of GetBook binds {{nme}}, "
            "which is not a field of GetBookRequest") in r.out, r.out
    r = scaffold("neuron", "create", BOOKS)
    assert r.code != 0
    assert "binds {nme}, which is not a field of GetBookRequest" in r.err and "Traceback" not in r.output
    assert not (workspace / "neurons").exists() or not any((workspace / "neurons").iterdir())


def test_update_refuses_an_unbindable_variable_and_keeps_the_neuron(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    assert scaffold("neuron", "create", BOOKS).code == 0
    (root,) = (workspace / "neurons").iterdir()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    path = workspace / BOOKS_PROTO
    path.write_text(path.read_text().replace('delete: "/v1/{name=books/*}"', 'delete: "/v1/{book.nme=books/*}"'))
    r = scaffold("neuron", "update", BOOKS)
    assert r.code != 0 and "binds {book.nme}, which is not a field of DeleteBookRequest" in r.err
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_googleapis_protos_bind_only_real_fields(corpus):
    """The real-world control: well-formed bindings (nested `book.name`, several per rule) pass."""
    from generator import aip, model, protoc

    for rel in ("google/example/library/v1/library.proto", "google/pubsub/v1/pubsub.proto",
                "google/devtools/cloudbuild/v1/cloudbuild.proto"):
        src = protoc.source_for([corpus / rel], [corpus])
        api = model.build(protoc.descriptor_set(src), src.files)
        assert all(not aip.unbound_variables(m, api.messages) for s in api.services for m in s.methods), rel
