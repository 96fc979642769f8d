"""The proto commands through the CLI, as a user types them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BOOKS = "xmpl.br.resources-books-v1"
BOOKS_PROTO = Path("proto/xmpl/br/resources/books/v1/books.proto")


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_init_writes_workspace(tmp_path, scaffold):
    r = scaffold("init", "w", "--org", "xmpl", "--product", "br", "--gcp-project", "xmpl-br-dev", cwd=tmp_path)
    assert r.code == 0, r.output
    text = (tmp_path / "w" / "scaffold.toml").read_text()
    assert 'org = "xmpl"' in text and 'project = "xmpl-br-dev"' in text and 'region = "europe-west1"' in text
    assert (tmp_path / "w" / "proto" / "buf.yaml").is_file()


def test_init_refuses_to_overwrite_without_force(workspace, scaffold):
    before = (workspace / "scaffold.toml").read_text()
    r = scaffold("init", ".", "--org", "other", "--product", "p")
    assert r.code == 1 and "already exists" in r.err and "--force" in r.err
    assert (workspace / "scaffold.toml").read_text() == before
    r = scaffold("init", ".", "--org", "other", "--product", "p", "--force")
    assert r.code == 0 and 'org = "other"' in (workspace / "scaffold.toml").read_text()


@pytest.mark.parametrize("org", ["Xmpl", "1x", "x-y", "class"])
def test_init_rejects_bad_org(tmp_path, scaffold, org):
    r = scaffold("init", "w", "--org", org, "--product", "br", cwd=tmp_path)
    assert r.code == 2 and "invalid org" in r.err
    assert not (tmp_path / "w").exists()


def test_commands_outside_a_workspace_say_how_to_make_one(tmp_path, scaffold):
    r = scaffold("proto", "create", BOOKS, cwd=tmp_path)
    assert r.code == 1
    assert "no scaffold.toml" in r.err and "scaffold init --org ORG --product PRODUCT" in r.err
    assert "Traceback" not in r.output
    assert list(tmp_path.iterdir()) == []


def test_workspace_is_found_from_a_subfolder(workspace, scaffold):
    sub = workspace / "deep" / "er"
    sub.mkdir(parents=True)
    r = scaffold("proto", "create", BOOKS, cwd=sub)
    assert r.code == 0, r.output
    assert (workspace / BOOKS_PROTO).is_file()


def test_proto_create_resources_skeleton(workspace, scaffold):
    r = scaffold("proto", "create", BOOKS)
    assert r.code == 0, r.output
    assert "create" in r.out and "books.proto" in r.out
    text = (workspace / BOOKS_PROTO).read_text()
    assert "package xmpl.br.resources.books.v1;" in text
    assert 'pattern: "books/{book}"' in text
    for rpc in ("GetBook", "ListBooks", "CreateBook", "UpdateBook", "DeleteBook"):
        assert f"rpc {rpc}(" in text
    assert "returns (google.protobuf.Empty)" in text
    assert "google.protobuf.FieldMask update_mask" in text
    assert "string name = 1 [(google.api.field_behavior) = OUTPUT_ONLY];" in text


def test_proto_create_services_skeleton(workspace, scaffold):
    r = scaffold("proto", "create", "xmpl.br.services-translator-v1")
    assert r.code == 0, r.output
    text = (workspace / "proto/xmpl/br/services/translator/v1/translator.proto").read_text()
    assert "service TranslatorService" in text and "rpc Echo(EchoRequest) returns (EchoResponse)" in text


def test_proto_create_never_overwrites_without_force(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    path = workspace / BOOKS_PROTO
    path.write_text(path.read_text() + "\n// my edit\n")
    edited = path.read_text()
    r = scaffold("proto", "create", BOOKS)
    assert r.code == 1 and "already exists" in r.err and "--force" in r.err
    assert path.read_text() == edited
    assert scaffold("proto", "create", BOOKS, "--force").code == 0
    assert "// my edit" not in path.read_text()


@pytest.mark.parametrize(
    "bad",
    ["xmpl.br.books", "XMPL.br.resources-books-v1", "../x", "xmpl.br.resources-books-1", "xmpl.br.things-books-v1"],
)
def test_proto_create_bad_names(workspace, scaffold, bad):
    before = tree(workspace)
    r = scaffold("proto", "create", bad)
    assert r.code == 2
    assert "expected ORG.PRODUCT.KIND-NAME-VERSION" in r.err and "e.g. xmpl.br.resources-books-v1" in r.err
    assert "Traceback" not in r.output
    assert tree(workspace) == before


def test_proto_create_for_another_org_is_refused(workspace, scaffold):
    r = scaffold("proto", "create", "acme.shop.resources-books-v1")
    assert r.code == 2 and "this workspace is xmpl.br" in r.err
    assert not (workspace / "proto" / "acme").exists()


def test_proto_gen_writes_importable_stubs_and_descriptor_set(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    r = scaffold("proto", "gen", BOOKS)
    assert r.code == 0, r.output
    out = workspace / "protobuf/python/xmpl/br/resources/books/v1"
    for name in ("books_pb2.py", "books_pb2_grpc.py", "books_pb2.pyi", "__init__.py"):
        assert (out / name).is_file(), name
    for pkg in ("xmpl", "xmpl/br", "xmpl/br/resources", "xmpl/br/resources/books"):
        assert (workspace / "protobuf/python" / pkg / "__init__.py").is_file()
    probe = subprocess.run(
        [sys.executable, "-c", ("from xmpl.br.resources.books.v1 import books_pb2_grpc, books_pb2;"
                                "print(books_pb2.Book(display_name='x').display_name, books_pb2_grpc.BooksServiceStub.__name__)")],
        env={**os.environ, "PYTHONPATH": "protobuf/python"}, capture_output=True, text=True, cwd=workspace,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["x", "BooksServiceStub"]
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString((workspace / "protobuf/descriptors/xmpl/br/resources/books/v1/books.binpb").read_bytes())
    names = [f.name for f in fds.file]
    assert "google/api/annotations.proto" in names  # imports included
    books = next(f for f in fds.file if f.name.endswith("books.proto"))
    assert books.source_code_info.location  # source info kept
    again = scaffold("proto", "gen", BOOKS)
    assert again.code == 0 and "create" not in again.out and "identical" in again.out


def test_proto_gen_all(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    scaffold("proto", "create", "xmpl.br.services-translator-v1")
    r = scaffold("proto", "gen", "--all")
    assert r.code == 0, r.output
    assert (workspace / "protobuf/python/xmpl/br/services/translator/v1/translator_pb2_grpc.py").is_file()
    assert (workspace / "protobuf/python/xmpl/br/resources/books/v1/books_pb2_grpc.py").is_file()


def test_proto_gen_syntax_error_reports_file_line_col(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    path = workspace / BOOKS_PROTO
    lines = path.read_text().splitlines()
    lines[30] = "  rpc Broken(GetBookRequest returns (Book);"
    path.write_text("\n".join(lines) + "\n")
    r = scaffold("proto", "gen", BOOKS)
    assert r.code == 1
    assert "books.proto:31:" in r.err, r.err
    assert "Traceback" not in r.output
    assert not (workspace / "protobuf").exists()


def test_proto_gen_missing_import_says_to_add_an_include(workspace, scaffold):
    p = workspace / "elsewhere" / "x.proto"
    p.parent.mkdir()
    p.write_text('syntax = "proto3";\npackage a.b.v1;\nimport "vendor/thing.proto";\nmessage X { vendor.Thing t = 1; }\n')
    r = scaffold("proto", "gen", "--proto", str(p))
    assert r.code == 1
    assert "vendor/thing.proto" in r.err and "-I DIR" in r.err
    assert not (workspace / "protobuf").exists()


def test_proto_gen_unknown_name_says_how_to_create_it(workspace, scaffold):
    r = scaffold("proto", "gen", BOOKS)
    assert r.code == 2 and f"scaffold proto create {BOOKS}" in r.err


def test_proto_gen_needs_exactly_one_source(workspace, scaffold):
    r = scaffold("proto", "gen")
    assert r.code == 2 and "--proto FILE" in r.err


def test_bring_your_own_protos_with_imports_and_streaming(workspace, scaffold, tmp_path):
    ext = tmp_path / "ext"
    (ext / "acme/common/v1").mkdir(parents=True)
    (ext / "acme/chat/v1").mkdir(parents=True)
    (ext / "acme/common/v1/money.proto").write_text(
        'syntax = "proto3";\npackage acme.common.v1;\nmessage Money { string currency = 1; int64 units = 2; }\n'
    )
    (ext / "acme/chat/v1/chat.proto").write_text(
        """syntax = "proto3";
package acme.chat.v1;
import "acme/common/v1/money.proto";
import "google/api/annotations.proto";
import "google/protobuf/empty.proto";
import "google/rpc/status.proto";
import "google/type/date.proto";
message Msg { string text = 1; acme.common.v1.Money tip = 2; google.type.Date day = 3; google.rpc.Status st = 4; }
service Chat {
  rpc Send(Msg) returns (google.protobuf.Empty) { option (google.api.http) = {post: "/v1/messages" body: "*"}; }
  rpc Watch(google.protobuf.Empty) returns (stream Msg);
  rpc Upload(stream Msg) returns (google.protobuf.Empty);
  rpc Talk(stream Msg) returns (stream Msg);
}
service Admin { rpc Reset(google.protobuf.Empty) returns (google.protobuf.Empty); }
"""
    )
    r = scaffold("proto", "gen", "--proto", str(ext / "acme/chat/v1/chat.proto"), "-I", str(ext))
    assert r.code == 0, r.output
    gen = workspace / "protobuf/python/acme"
    assert (gen / "chat/v1/chat_pb2_grpc.py").is_file()
    assert (gen / "common/v1/money_pb2.py").is_file()  # a local import is generated too
    assert not (workspace / "protobuf/python/google").exists()  # googleapis stubs come from packages
    probe = subprocess.run(
        [sys.executable, "-c", "from acme.chat.v1 import chat_pb2_grpc as g; print(g.ChatStub, g.AdminServicer)"],
        env={**os.environ, "PYTHONPATH": "protobuf/python"}, capture_output=True, text=True, cwd=workspace,
    )
    assert probe.returncode == 0, probe.stderr


def test_proto_lint_clean_skeletons(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    scaffold("proto", "create", "xmpl.br.services-translator-v1")
    r = scaffold("proto", "lint", "--all")
    assert r.code == 0, r.output
    assert r.out.startswith("ok: ")


def test_proto_lint_findings_are_file_line_rule_message(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    path = workspace / BOOKS_PROTO
    text = path.read_text()
    text = text.replace('pattern: "books/{book}"', 'pattern: "Books/{Book}"')
    text = text.replace("google.protobuf.Timestamp create_time = 4 [(google.api.field_behavior) = OUTPUT_ONLY];",
                        "google.protobuf.Timestamp create_time = 4;")
    path.write_text(text)
    r = scaffold("proto", "lint", BOOKS)
    assert r.code == 1
    lines = [line for line in r.out.splitlines() if line]
    assert any(line.startswith(f"{BOOKS_PROTO}:") and ": aip-122-resource-pattern: " in line for line in lines), r.out
    ct_line = next(i + 1 for i, line in enumerate(text.splitlines()) if "create_time = 4" in line)
    assert f"{BOOKS_PROTO}:{ct_line}: aip-203-output-only: Book.create_time" in r.out


def test_proto_lint_rule_can_be_disabled_per_method(workspace, scaffold):
    scaffold("proto", "create", "xmpl.br.services-translator-v1")
    path = workspace / "proto/xmpl/br/services/translator/v1/translator.proto"
    text = path.read_text().replace("rpc Echo(EchoRequest) returns (EchoResponse)", "rpc GetEcho(EchoRequest) returns (EchoResponse)")
    path.write_text(text)
    r = scaffold("proto", "lint", "xmpl.br.services-translator-v1")
    assert r.code == 1 and "aip-13x-standard-get: GetEcho" in r.out
    path.write_text(text.replace("  // An example method", "  // scaffold-lint: disable=aip-13x-standard-get\n  // An example method"))
    assert scaffold("proto", "lint", "xmpl.br.services-translator-v1").code == 0
