"""APIs that change: regeneration alone keeps a neuron correct, user code is never lost, hand
edits to generated files are conflicts, and every neuron records what made it.

Each test edits a real proto, runs `scaffold neuron update`, and runs the neuron's own
(regenerated) tests against the session's Firestore emulator.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from generator import provenance
from tests.conftest import REPO, need, run_neuron_tests

NAME = "xmpl.br.resources-books-v1"
PROTO = "proto/xmpl/br/resources/books/v1/books.proto"
NEURON = "neurons/resources-books-v1"

NESTED_PATTERN = '''    pattern: "shelves/{shelf}/books/{book}"'''


def nest_under_shelves(text: str) -> str:
    """The Books proto with books nested under shelves (parent fields on List and Create)."""
    text = text.replace('    pattern: "books/{book}"', NESTED_PATTERN)
    text = text.replace('{name=books/*}', '{name=shelves/*/books/*}').replace('{book.name=books/*}', '{book.name=shelves/*/books/*}')
    text = text.replace('get: "/v1/books"', 'get: "/v1/{parent=shelves/*}/books"')
    text = text.replace('post: "/v1/books"', 'post: "/v1/{parent=shelves/*}/books"')
    parent = '''  // The shelf the books belong to. Format: shelves/{shelf}
  string parent = 9 [
    (google.api.field_behavior) = REQUIRED,
    (google.api.resource_reference) = {child_type: "books.br.xmpl/Book"}
  ];
'''
    text = text.replace("message ListBooksRequest {\n", "message ListBooksRequest {\n" + parent)
    text = text.replace("message CreateBookRequest {\n", "message CreateBookRequest {\n" + parent)
    return text


@pytest.fixture
def books(workspace, scaffold):
    assert scaffold("proto", "create", NAME).code == 0
    result = scaffold("neuron", "create", NAME)
    assert result.code == 0, result.output
    return workspace / NEURON


def edit(path: Path, fn) -> None:
    path.write_text(fn(path.read_text(encoding="utf-8")), encoding="utf-8")


def test_every_neuron_records_what_made_it(books):
    from generator import __version__
    from generator.runtime_dist import wheel

    record = provenance.load(books)
    assert record.scaffold == __version__ and record.runtime == wheel().version and record.name == NAME
    assert re.fullmatch(r"[0-9a-f]{64}", record.descriptors)
    assert set(record.files) >= {"server.py", "base.py", "requirements-runtime.txt", f"wheels/{wheel().filename}"}
    assert "methods.py" not in record.files  # user-owned files are never recorded as generated
    for path, digest in record.files.items():
        assert provenance.sha256((books / path).read_bytes()) == digest, path
    pin = (books / "requirements-runtime.txt").read_text()
    assert f"scaffold-runtime[firestore,gateway,id-token,tracing]=={wheel().version}" in pin and f"sha256:{wheel().sha256}" in pin
    assert not (books / "runtime").exists()  # the runtime is a library now, not a copy


def test_nesting_a_resource_is_carried_by_regeneration_alone(books, workspace, scaffold, emulator):
    methods_before = (books / "methods.py").read_text()
    edit(workspace / PROTO, nest_under_shelves)
    result = scaffold("neuron", "update", NAME)
    assert result.code == 0, result.output
    assert (books / "methods.py").read_text() == methods_before  # nothing of the user's changed
    base = (books / "base.py").read_text()
    assert '"shelves/{shelf}/books/{book}"' in base and "parent=request.parent" in base
    contract = (books / "tests/test_books_service_contract.py").read_text()
    assert "BOOK_PARENT" in contract  # the regenerated contract exercises the new shape
    r = run_neuron_tests(books, emulator=emulator)
    assert r.returncode == 0, r.stdout[-3000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout


def test_a_new_custom_rpc_gets_a_stub_and_a_removed_one_is_reported(books, workspace, scaffold, emulator):
    rpc = '''
  // Archives a book.
  rpc ArchiveBook(GetBookRequest) returns (Book);
}

// A book.'''
    edit(workspace / PROTO, lambda t: t.replace("}\n\n// A book.", rpc, 1))
    result = scaffold("neuron", "update", NAME)
    assert result.code == 0, result.output
    assert "methods.py: added BooksService.ArchiveBook" in result.out
    methods = (books / "methods.py").read_text()
    assert "def ArchiveBook(" in methods and "TODO: implement ArchiveBook" in methods
    r = run_neuron_tests(books, emulator=emulator)
    assert r.returncode == 0 and "test_archive_book_is_a_stub_until_implemented" in (books / "tests/test_books_service_contract.py").read_text()

    # Remove it again: the generated test goes with it; the user's override is reported, kept.
    edit(workspace / PROTO, lambda t: t.replace("\n  // Archives a book.\n  rpc ArchiveBook(GetBookRequest) returns (Book);\n", ""))
    result = scaffold("neuron", "update", NAME)
    assert result.code == 0, result.output
    assert "BooksService.ArchiveBook is not an RPC of the proto any more" in result.out
    assert "def ArchiveBook(" in (books / "methods.py").read_text()
    assert "archive_book" not in (books / "tests/test_books_service_contract.py").read_text()
    r = run_neuron_tests(books, emulator=emulator)
    assert r.returncode == 0, r.stdout[-3000:]


def test_a_changed_request_type_is_reported(books, workspace, scaffold):
    edit(books / "methods.py", lambda t: t + '''
    def GetBook(self, request: books_pb2.GetBookRequest, context: grpc.ServicerContext) -> books_pb2.Book:
        return super().GetBook(request, context)
''')
    edit(workspace / PROTO, lambda t: t.replace("rpc GetBook(GetBookRequest)", "rpc GetBook(FetchBookRequest)").replace(
        "message GetBookRequest {", "message FetchBookRequest {"))
    result = scaffold("neuron", "update", NAME)
    assert result.code == 0, result.output
    assert "BooksService.GetBook takes books_pb2.GetBookRequest, but the proto now sends books_pb2.FetchBookRequest" in result.out


def test_hand_edits_to_generated_files_are_conflicts(books, workspace, scaffold):
    edit(books / "base.py", lambda t: t + "# my fix\n")
    before = {p: p.read_bytes() for p in books.rglob("*") if p.is_file()}
    edit(workspace / PROTO, lambda t: t.replace("A longer description of the book.", "A longer description."))
    result = scaffold("neuron", "update", NAME)
    assert result.code == 1
    assert "edited by hand: base.py" in result.err and "--force" in result.err
    assert {p: p.read_bytes() for p in books.rglob("*") if p.is_file()} == before  # nothing written
    check = scaffold("neuron", "check", NAME)
    assert check.code == 1 and "base.py: generated file was edited by hand" in check.out
    assert "its proto changed since it was generated" in check.out
    assert "move the change into methods.py" in check.err and "--force" in check.err
    forced = scaffold("neuron", "update", NAME, "--force")
    assert forced.code == 0, forced.output
    edit(workspace / PROTO, lambda t: t.replace("A longer description.", "The description."))
    check = scaffold("neuron", "check", NAME)  # stale for its proto alone: no talk of hand edits
    assert check.code == 1 and "its proto changed since it was generated" in check.out
    assert "edited by hand" not in check.output and "--force" not in check.err, check.output
    forced = scaffold("neuron", "update", NAME, "--force")
    assert forced.code == 0, forced.output
    assert "# my fix" not in (books / "base.py").read_text()
    assert scaffold("neuron", "check", NAME).code == 0


def test_update_refuses_a_downgrade(books, scaffold):
    edit(books / provenance.FILENAME, lambda t: re.sub(r'^scaffold = ".*"$', 'scaffold = "9.0.0"', t, flags=re.MULTILINE))
    result = scaffold("neuron", "update", NAME)
    assert result.code == 2 and "made by scaffold 9.0.0, newer than this scaffold" in result.err


def test_check_and_update_all(books, workspace, scaffold, corpus):
    library = corpus / "google/example/library/v1/library.proto"
    r = scaffold("neuron", "create", "--proto", str(library), "-I", str(corpus), "--out", "library-v1")
    assert r.code == 0, r.output
    assert scaffold("neuron", "check", "--all").code == 0
    edit(workspace / PROTO, lambda t: t.replace("A longer description of the book.", "A longer description."))
    stale = scaffold("neuron", "check", "--all")
    assert stale.code == 1 and "stale  resources-books-v1" in stale.out and "    ok  library-v1" in stale.out
    updated = scaffold("neuron", "update", "--all")
    assert updated.code == 0, updated.output
    assert "== library-v1" in updated.out and "== resources-books-v1" in updated.out
    assert scaffold("neuron", "check", "--all").code == 0


V01 = "ac0837c"  # the last commit whose neurons carried their own runtime/ copy (scaffold 0.1)


def test_a_neuron_made_by_scaffold_0_1_upgrades_with_one_command(tmp_path, scaffold, emulator):
    """The Books example as scaffold 0.1 made it (in-tree runtime/, servicer on the grpc base)."""
    have = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{V01}^{{commit}}"], capture_output=True)
    need(have.returncode == 0, f"git history with commit {V01}")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", V01, "examples/books"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    ws = tmp_path / "examples/books"
    neuron = ws / NEURON
    assert (neuron / "runtime/store.py").is_file() and provenance.load(neuron) is None
    result = scaffold("neuron", "update", NAME, cwd=ws)
    assert result.code == 0, result.output
    assert not (neuron / "runtime").exists()
    assert "methods.py: imports of the old runtime/ folder now use scaffold_runtime" in result.out
    assert "from scaffold_runtime.store import ResourceStore" in (neuron / "methods.py").read_text()
    r = run_neuron_tests(neuron, emulator=emulator)
    assert r.returncode == 0, r.stdout[-3000:]
    assert scaffold("neuron", "check", NAME, cwd=ws).code == 0
