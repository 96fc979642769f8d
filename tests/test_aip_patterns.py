"""Issue 14: AIP patterns on Firestore, end to end on the real emulator.

A neuron generated from our own proto (tests/protos/aip: filter, order_by, etag, request_id,
allow_missing on Update and Delete) and from googleapis protos that declare them runs its
generated contract tests; the generator renders indexes.toml into terraform/indexes.tf with
the TTL policy of request records; store errors carry AIP-193 details.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import hcl2
import pytest

from tests.conftest import run_neuron_tests
from tests.test_gateway import library  # noqa: F401 - its fixture: the library neuron behind its gateway
from tests.test_store_aip import env, library_stores, uid  # noqa: F401 - the module's fixture

REPO = Path(__file__).resolve().parent.parent
WIDGETS = REPO / "tests" / "protos" / "aip"
# Each proto's contract tests must include these (feature -> a test name fragment).
FEATURES = ["filters_by_equality", "orders_and_pages", "refuses_a_filter", "checks_the_etag",
            "with_allow_missing_creates", "with_allow_missing_succeeds_when_absent",
            "replays_a_repeated_request_id", "serves_declared_query"]
QUERIES = """
[[index]]
collection = "widgets"
filter = 'display_name = "x"'
order_by = "create_time desc"
fields = [["display_name", "ASCENDING"], ["create_time", "DESCENDING"]]
"""


def _create(scaffold, workspace, proto: Path, include: Path, out: str) -> Path:
    r = scaffold("neuron", "create", "--proto", str(proto), "-I", str(include), "--out", out)
    assert r.code == 0, r.output
    return workspace / "neurons" / out


def test_own_proto_neuron_serves_every_pattern(workspace, scaffold, emulator):
    proto = WIDGETS / "aiptest" / "v1" / "widgets.proto"
    root = _create(scaffold, workspace, proto, WIDGETS, "widgets")
    assert "# [[index]]" in (root / "indexes.toml").read_text()  # a commented example, the user's
    (root / "indexes.toml").write_text(QUERIES)
    r = scaffold("neuron", "update", "--proto", str(proto), "-I", str(WIDGETS), "--out", "widgets")
    assert r.code == 0, r.output
    contract = (root / "tests" / "test_widget_service_contract.py").read_text()
    for feature in FEATURES:
        assert feature in contract, feature
    tf = hcl2.loads((root / "terraform" / "indexes.tf").read_text())
    kinds = {kind for block in tf["resource"] for kind in block}
    assert kinds == {'"google_firestore_index"', '"google_firestore_field"'}
    field = next(iter(next(b for b in tf["resource"] if '"google_firestore_field"' in b)['"google_firestore_field"'].values()))
    assert field["collection"] == '"_requests"' and field["field"] == '"expire_time"' and "ttl_config" in field
    result = run_neuron_tests(root, "-rA", emulator=emulator)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for feature in FEATURES:
        assert any(feature in line for line in result.stdout.splitlines() if line.startswith("PASSED")), feature


def test_a_malformed_indexes_toml_is_one_clear_error(workspace, scaffold):
    proto = WIDGETS / "aiptest" / "v1" / "widgets.proto"
    root = _create(scaffold, workspace, proto, WIDGETS, "widgets")
    (root / "indexes.toml").write_text("[[index]]\ncollection = 'widgets'\n")
    before = (root / "terraform" / "indexes.tf").read_text()
    r = scaffold("neuron", "update", "--proto", str(proto), "-I", str(WIDGETS), "--out", "widgets")
    assert r.code != 0 and "indexes.toml" in r.output and "Traceback" not in r.output
    assert (root / "terraform" / "indexes.tf").read_text() == before


@pytest.mark.parametrize("path, features", [
    # etag on the resource and on Delete, request_id on Create/Update/Delete, filter, order_by
    ("google/cloud/saasplatform/saasservicemgmt/v1beta1/deployments_service.proto",
     ["checks_the_etag", "replays_a_repeated_request_id", "filters_by_equality", "refuses_an_order"]),
    # allow_missing on Delete, filter, order_by
    ("google/cloud/video/transcoder/v1/services.proto", ["with_allow_missing_succeeds_when_absent", "refuses_a_filter"]),
    # allow_missing on Update, etag on the resource
    ("google/cloud/bigquery/datapolicies/v2/datapolicy.proto", ["with_allow_missing_creates"]),
])
def test_googleapis_neurons_serve_the_patterns_they_declare(workspace, scaffold, corpus, emulator, path, features):
    root = _create(scaffold, workspace, corpus / path, corpus, "real")
    contract = "\n".join(p.read_text() for p in (root / "tests").glob("*_contract.py"))
    for feature in features:
        assert feature in contract, feature
    result = run_neuron_tests(root, emulator=emulator)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "failed" not in result.stdout


def test_store_errors_carry_aip193_details(env):
    from scaffold_runtime.status import details_of

    shelves, books = library_stores(env)
    missing = f"shelves/{uid()}"
    err = env.h.fails(lambda ctx: shelves.get(ctx, missing))
    (info,) = [d for d in details_of(err) if d.DESCRIPTOR.name == "ErrorInfo"]
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert (info.reason, info.domain, info.metadata["resource"]) == ("RESOURCE_NOT_FOUND", "library-example.googleapis.com", missing)
    assert info.metadata["type"] == "library-example.googleapis.com/Shelf"
    err = env.h.fails(lambda ctx: books.list(ctx, 10, parent="shelves/x", filter="no_such = 1") and None)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "no_such" in err.details()
    bad = [d for d in details_of(err) if d.DESCRIPTOR.name == "BadRequest"]
    assert [v.field for v in bad[0].field_violations] == ["filter"]
    err = env.h.fails(lambda ctx: shelves.get(ctx, "nope/x"))
    assert [v.field for d in details_of(err) if d.DESCRIPTOR.name == "BadRequest" for v in d.field_violations] == ["name"]


def test_list_filters_and_orders_a_real_googleapis_resource(env):
    shelves, books = library_stores(env)
    shelf = env.h.run(lambda ctx: shelves.create(ctx, env.library.Shelf(theme="t")), env.library.Shelf)
    for i, author in enumerate(["b", "a", "c", "a"]):
        env.h.run(lambda ctx, i=i, a=author: books.create(ctx, env.library.Book(title=f"t{i}", author=a), parent=shelf.name),
                  env.library.Book)

    def page(filter="", order_by="", token="", size=2):
        def fn(ctx):
            items, nxt = books.list(ctx, size, token, parent=shelf.name, filter=filter, order_by=order_by)
            return env.library.ListBooksResponse(books=items, next_page_token=nxt)
        return env.h.run(fn, env.library.ListBooksResponse)

    first = page('author = "a" AND title > ""', "title desc")
    assert [b.title for b in first.books] == ["t3", "t1"] and first.next_page_token == ""
    seen, token = [], ""
    while True:
        resp = page('author > ""', "author", token)
        seen += [b.author for b in resp.books]
        token = resp.next_page_token
        if not token:
            break
    assert seen == ["a", "a", "b", "c"]
    err = env.h.fails(lambda ctx: books.list(ctx, 2, page(order_by="author desc", filter='author > ""').next_page_token,
                                             parent=shelf.name, filter='author > ""', order_by="author") and None)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in err.details()


def test_gateway_renders_aip193_details_as_google_apis_do(library):
    import httpx

    _root, url = library
    with httpx.Client(base_url=url, timeout=30) as http:
        missing = http.get("/v1/shelves/nope")
        assert missing.status_code == 404
        body = missing.json()["error"]
        assert body["status"] == "NOT_FOUND" and body["code"] == 404
        (info,) = body["details"]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["reason"] == "RESOURCE_NOT_FOUND"
        assert info["domain"] == "library-example.googleapis.com" and info["metadata"]["resource"] == "shelves/nope"
        bad = http.get("/v1/shelves", params={"pageSize": -1})
        assert bad.status_code == 400
        types = {d["@type"]: d for d in bad.json()["error"]["details"]}
        violations = types["type.googleapis.com/google.rpc.BadRequest"]["fieldViolations"]
        assert [v["field"] for v in violations] == ["page_size"]
