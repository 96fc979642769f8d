"""AIP-132 order_by (scaffold_runtime.ordering) on the real Firestore emulator:
directions, ties, paging with cursors after a filter; the missing-index message; and the
indexes.toml -> google_firestore_index rendering (generator/indexes.py)."""

from __future__ import annotations

import json
import os

import hcl2
import pytest
from google.api_core import exceptions as gexc

from generator import indexes
from generator.errors import UsageError
from tests.filtering_support import compile_shelf, items, load_runtime

filtering, ordering, codec = load_runtime()
STAMPED = ("name", "create_time")


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    return compile_shelf(tmp_path_factory.mktemp("shelf"))


@pytest.fixture(scope="module")
def collection(emulator, pb):
    from google.cloud import firestore

    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        col = firestore.Client(project="demo-local").collection("ordered")
        for item in items(pb):
            col.document(item.name.split("/")[1]).set(codec.to_document(item))
        yield col
    finally:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)


def pages(collection, pb, order_by: str, filter_text: str = "", size: int = 3) -> list[list[str]]:
    """Every page of the query, each fetched with a cursor built from the previous page's last
    document, the cursor round-tripping through JSON as it would inside a page token."""
    d = pb.Item.DESCRIPTOR
    f = filtering.parse(filter_text, d, always_present=STAMPED)
    o = ordering.parse(order_by, d, filter=f, always_present=STAMPED)
    out, cursor = [], None
    for _ in range(20):  # bounded
        query = o.apply(f.apply(collection))
        if cursor is not None:
            query = o.start_after(query, json.loads(json.dumps(cursor)))
        snaps = list(query.limit(size).stream())
        if not snaps:
            break
        out.append([s.id for s in snaps])
        cursor = o.cursor(snaps[-1])
    return out


def python_order(pb, key, reverse=False, keep=lambda i: True) -> list[str]:
    chosen = [i for i in items(pb) if keep(i)]
    return [i.name.split("/")[1] for i in sorted(chosen, key=lambda i: (key(i), i.name), reverse=reverse)]


def flat(result):
    return [x for page in result for x in page]


def test_default_order_is_by_name(collection, pb):
    result = pages(collection, pb, "")
    assert result == [["i0", "i1", "i2"], ["i3", "i4", "i5"], ["i6", "i7"]]


def test_ties_break_on_name_ascending(collection, pb):
    # title repeats every four items: ties everywhere
    assert flat(pages(collection, pb, "title")) == python_order(pb, lambda i: i.title)


def test_desc_ties_break_on_name_descending(collection, pb):
    got = flat(pages(collection, pb, "title desc", size=2))
    assert got == python_order(pb, lambda i: i.title, reverse=True)


def test_two_fields_and_timestamps(collection, pb):
    got = flat(pages(collection, pb, "title desc, create_time", size=3))
    want = [i.name.split("/")[1] for i in sorted(items(pb), key=lambda i: (-int(i.title[-1]), i.create_time.ToMicroseconds()))]
    assert got == want


def test_nested_and_filtered_field(collection, pb):
    # author.country may be unset in general; the filter guarantees every match has it
    got = flat(pages(collection, pb, "author.country desc", 'author.country > "A"', size=2))
    assert got == python_order(pb, lambda i: i.author.country, reverse=True)


def test_order_with_inequality_on_another_field(collection, pb):
    got = pages(collection, pb, "title desc", "pages > 10", size=2)
    # Firestore orders by title, then by the inequality field, then by name
    want = [i.name.split("/")[1] for i in sorted((i for i in items(pb) if i.pages > 10),
                                                 key=lambda i: (i.title, i.pages, i.name), reverse=True)]
    assert flat(got) == want
    assert all(len(p) <= 2 for p in got)


def test_order_by_double_and_enum_through_filter(collection, pb):
    assert flat(pages(collection, pb, "price desc", "price > 1")) == python_order(
        pb, lambda i: i.price, reverse=True, keep=lambda i: i.price > 1)
    assert flat(pages(collection, pb, "state", "state = ACTIVE OR state = DRAFT")) == python_order(
        pb, lambda i: i.state, keep=lambda i: i.state in (i.ACTIVE, i.DRAFT))


def test_canonical_and_tiebreak(pb):
    d = pb.Item.DESCRIPTOR
    f = filtering.parse("pages > 3", d)
    o = ordering.parse(" title desc ,create_time", d, filter=f, always_present=STAMPED)
    assert o.canonical == "title desc, create_time asc, pages asc, __name__ asc"
    assert ordering.parse("", d).canonical == "__name__ asc"
    assert ordering.parse("title desc", d).canonical == "title desc, __name__ desc"


REFUSED = [
    ("nope", "has no field nope"),
    ("title sideways", "expected 'field' or 'field desc'"),
    ("title desc extra", "expected 'field' or 'field desc'"),
    ("title,", "expected 'field'"),
    ("title, title desc", "listed twice"),
    ("tags", "repeated field"),
    ("author", "a message field"),
    ("labels", "is a map"),
    ("blob", "bytes"),
    ("big", "uint64"),
    ("pages", "pages is unset"),  # not REQUIRED, not filtered: documents without it would vanish
    ("author.country", "author.country is unset"),
    ("ti-tle", "not a field path"),
    ("x" * 2000, "at most"),
]


@pytest.mark.parametrize(("text", "words"), REFUSED, ids=[r[0][:30] for r in REFUSED])
def test_refused_orderings_name_the_part(pb, text, words):
    with pytest.raises(ordering.OrderError) as caught:
        ordering.parse(text, pb.Item.DESCRIPTOR, always_present=STAMPED)
    assert words in str(caught.value)
    assert str(caught.value).startswith("order_by")


def test_bad_cursor_is_invalid_argument(collection, pb):
    o = ordering.parse("title", pb.Item.DESCRIPTOR)
    for cursor in ("[]", "not json", '["a"]', '[1, 2, 3]', '{"t": 1}'):
        with pytest.raises(ordering.InvalidArgument):
            o.start_after(collection, cursor)


# The text real Firestore returns for a query whose composite index is missing (the emulator
# never asks for indexes). The create_composite value is a real console link as Firestore
# prints it: collection tickets, providerId ASC, attendanceDate DESC, __name__ DESC.
REAL = ("The query requires an index. You can create it here: https://console.firebase.google.com/v1/r/project/"
        "central-provedor-35ef4/firestore/indexes?create_composite=ClZwcm9qZWN0cy9jZW50cmFsLXByb3ZlZG9yLTM1ZWY0L2RhdGFi"
        "YXNlcy8oZGVmYXVsdCkvY29sbGVjdGlvbkdyb3Vwcy90aWNrZXRzL2luZGV4ZXMvXxABGg4KCnByb3ZpZGVySWQQARoSCg5hdHRlbmRhbmNlRGF0"
        "ZRACGgwKCF9fbmFtZV9fEAI")


def test_missing_index_names_fields_and_directions():
    message = ordering.missing_index(gexc.FailedPrecondition(REAL))
    assert message == ("the query needs a composite index on collection tickets: providerId ASCENDING, "
                       "attendanceDate DESCENDING, __name__ DESCENDING; declare it in indexes.toml and deploy")
    assert "central-provedor" not in message and "http" not in message


def test_missing_index_other_errors_and_damaged_links():
    assert ordering.missing_index(gexc.FailedPrecondition("transaction aborted")) is None
    damaged = REAL[:-30]
    assert ordering.missing_index(gexc.FailedPrecondition(damaged)).startswith("the query needs a composite index")
    garbage = "The query requires an index. https://x/indexes?create_composite=____"
    assert "declare it in indexes.toml" in ordering.missing_index(gexc.FailedPrecondition(garbage))


INDEXES = """
[[index]]
collection = "books"
fields = [["publisher", "ASCENDING"], ["create_time", "DESCENDING"]]

[[index]]
collection = "books"
fields = [["tags", "CONTAINS"], ["author.country", "ASCENDING"]]
"""


def test_indexes_render_terraform():
    text = indexes.render_terraform(indexes.load(INDEXES))
    parsed = hcl2.loads(text)
    resources = [r['"google_firestore_index"'] for r in parsed["resource"]]
    assert len(resources) == 2
    assert list(resources[0]) == ['"books_publisher_asc_create_time_desc"']
    first = next(iter(resources[0].values()))
    assert first["collection"] == '"books"' and first["project"] == "${var.project_id}"
    fields = first["fields"]
    assert [f["field_path"].strip('"') for f in fields] == ["publisher", "create_time"]
    assert [f["order"].strip('"') for f in fields] == ["ASCENDING", "DESCENDING"]
    second = next(iter(resources[1].values()))
    assert second["fields"][0]["array_config"].strip('"') == "CONTAINS"
    assert indexes.render_terraform([]) == ""


@pytest.mark.parametrize(("text", "words"), [
    ("[[index]]\ncollection = 'b'\nfields = [['a', 'UP'], ['c', 'ASCENDING']]", "must be"),
    ("[[index]]\ncollection = 'b'\nfields = [['a', 'ASCENDING']]", "at least two fields"),
    ("[[index]]\ncollection = 'b c'\nfields = [['a', 'ASCENDING'], ['c', 'ASCENDING']]", "not a collection id"),
    ("[[index]]\ncollection = 'b'\nfields = [['a', 'ASCENDING'], ['a', 'DESCENDING']]", "listed twice"),
    ("[[index]]\ncollection = 'b'", "needs exactly"),
    ("[other]\nx = 1", "only [[index]]"),
    ("[[index]\n", "not valid TOML"),
    (INDEXES + INDEXES.split("\n\n")[0], "repeats"),
])
def test_bad_index_config_is_one_clear_error(text, words):
    with pytest.raises(UsageError) as caught:
        indexes.load(text)
    assert words in str(caught.value)
