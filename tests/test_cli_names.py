"""Names through the whole path: multi-word and irregular nouns, and examples in the workspace's own org."""

from __future__ import annotations

import pytest

from tests.conftest import _neuron_testing, need, run_neuron_tests

SHELVES = "xmpl.br.resources-book-shelves-v1"


def test_multi_word_name_from_proto_create_to_passing_neuron_tests(workspace, scaffold):
    assert scaffold("proto", "create", SHELVES).code == 0
    proto = workspace / "proto/xmpl/br/resources/book_shelves/v1/book_shelves.proto"
    text = proto.read_text()
    assert "package xmpl.br.resources.book_shelves.v1;" in text
    assert "message BookShelf {" in text and "service BookShelvesService {" in text
    assert 'pattern: "bookShelves/{book_shelf}"' in text and 'singular: "bookShelf"' in text
    assert 'get: "/v1/bookShelves"' in text and "repeated BookShelf book_shelves = 1;" in text
    assert "string book_shelf_id = 2" in text
    r = scaffold("proto", "lint", SHELVES)
    assert r.code == 0, r.output
    r = scaffold("proto", "gen", SHELVES)
    assert r.code == 0, r.output
    r = scaffold("neuron", "create", SHELVES)
    assert r.code == 0, r.output
    root = workspace / "neurons/resources-book-shelves-v1"
    assert '"/v1/bookShelves"' in (root / "openapi.json").read_text()
    need(_neuron_testing().emulator_problem() is None, "the Firestore emulator and Java")
    result = run_neuron_tests(root)
    assert result.returncode == 0 and " passed" in result.stdout, result.stdout[-3000:] + result.stderr[-2000:]
    assert "starting the Firestore emulator…" in result.stdout  # said before the wait, not after


@pytest.mark.parametrize("name, message", [("people", "message Person {"), ("news", "message News {"),
                                           ("indices", "message Index {")])
def test_irregular_nouns_make_valid_protos(workspace, scaffold, name, message):
    full = f"xmpl.br.resources-{name}-v1"
    assert scaffold("proto", "create", full).code == 0
    text = (workspace / f"proto/xmpl/br/resources/{name}/v1/{name}.proto").read_text()
    assert message in text and f'pattern: "{name}/' in text
    r = scaffold("proto", "lint", full)
    assert r.code == 0, r.output
    r = scaffold("neuron", "create", full)
    assert r.code == 0, r.output


def test_error_examples_use_the_workspace_org_and_product(tmp_path, scaffold):
    assert scaffold("init", "w", "--org", "acme", "--product", "shop", cwd=tmp_path).code == 0
    root = tmp_path / "w"
    for args in (("proto", "create", "books"), ("neuron", "create"), ("neuron", "test"), ("proto", "gen", "x.y")):
        r = scaffold(*args, cwd=root)
        assert r.code == 2, r.output
        assert "acme.shop.resources-books-v1" in r.err and "xmpl" not in r.err, (args, r.err)


def test_a_huge_name_is_a_usage_error_and_writes_nothing(workspace, scaffold):
    """A 300-character NAME said "File name too long: /abs/path…" (exit 1); now exit 2 with the limit."""
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    r = scaffold("proto", "create", f"xmpl.br.resources-{'a' * 300}-v1")
    assert r.code == 2 and "NAME is 300 characters long, at most 63" in r.err and str(workspace) not in r.err, r.err
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before
    longest = f"xmpl.br.resources-{'-'.join(['abcdefg'] * 8)}-v1"  # NAME of 63 characters
    assert scaffold("proto", "create", longest).code == 0
