"""AIP-160 filters (scaffold_runtime.filtering) on real documents in the real
Firestore emulator: each operator and field type, AND/OR/NOT, and the refused filters."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.filtering_support import compile_shelf, items, load_runtime

filtering, ordering, codec = load_runtime()
STAMPED = ("name", "create_time")  # fields the store writes on every document


@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    return compile_shelf(tmp_path_factory.mktemp("shelf"))


@pytest.fixture(scope="module")
def collection(emulator, pb):
    """A real Firestore collection holding items() as codec.to_document wrote them."""
    from google.cloud import firestore

    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        client = firestore.Client(project="demo-local")
        col = client.collection("items")
        for item in items(pb):
            col.document(item.name.split("/")[1]).set(codec.to_document(item))
        yield col
    finally:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)


def ids(collection, pb, text: str) -> list[str]:
    f = filtering.parse(text, pb.Item.DESCRIPTOR, always_present=STAMPED)
    return sorted(s.id for s in f.apply(collection).stream())


def expected(pb, keep) -> list[str]:
    return sorted(i.name.split("/")[1] for i in items(pb) if keep(i))


CASES = [
    # text, what it means in Python over the same messages
    ('title = "title 1"', lambda i: i.title == "title 1"),
    ("title != 'title 1'", lambda i: i.title != "title 1"),  # title is REQUIRED: never unset
    ('title > "title 2"', lambda i: i.title > "title 2"),
    ('title <= "title 1"', lambda i: i.title <= "title 1"),
    ("pages = 30", lambda i: i.pages == 30),
    ("pages > 30", lambda i: i.pages > 30),
    ("pages >= 30", lambda i: i.pages >= 30),
    ("views > 1099511627779", lambda i: i.views > 2**40 + 3),
    ("big = 18446744073709551615", lambda i: i.big == 2**64 - 1),
    ("big = 5", lambda i: i.big == 5),
    ("done = true", lambda i: i.done),
    ("price > 4.5", lambda i: i.price > 4.5),
    ("price >= 4.5", lambda i: i.price >= 4.5),
    ("price = 3", lambda i: i.price == 3.0),  # an integer literal for a double field
    ("state = ACTIVE", lambda i: i.state == i.ACTIVE),
    ('state = "ARCHIVED"', lambda i: i.state == i.ARCHIVED),
    ('create_time > "2024-01-04T12:00:00.123456Z"', lambda i: i.create_time.ToMicroseconds() > 1704369600123456),
    ('create_time >= "2024-01-04T13:00:00.123456+01:00"', lambda i: i.create_time.ToMicroseconds() >= 1704369600123456),
    ('create_time < "2024-01-03T00:00:00Z"', lambda i: i.create_time.ToSeconds() < 1704240000),
    ('author.country = "SE"', lambda i: i.author.country == "SE"),
    ('author.born < "1953-01-01T00:00:00Z"', lambda i: i.author.born.ToSeconds() < -536457600),
    ('tags:"even"', lambda i: "even" in i.tags),
    ("tags:t3", lambda i: "t3" in i.tags),
    ("history:ACTIVE", lambda i: i.ACTIVE in i.history),
    ("labels.env = dev", lambda i: i.labels["env"] == "dev"),
    ('labels.env-name = "x2"', lambda i: i.labels["env-name"] == "x2"),
    ("rating >= 4", lambda i: i.HasField("rating") and i.rating.value >= 4),
    ("rating < 2", lambda i: i.HasField("rating") and i.rating.value < 2),
    ("edition < 3", lambda i: i.HasField("edition") and i.edition < 3),
    ("edition != 2", lambda i: i.HasField("edition") and i.edition != 2),
    ("pages > 10 AND pages < 60", lambda i: 10 < i.pages < 60),
    ("pages > 10 pages < 60", lambda i: 10 < i.pages < 60),  # a sequence is an AND
    ("state = ACTIVE OR state = DRAFT", lambda i: i.state in (i.ACTIVE, i.DRAFT)),
    ('(state = ACTIVE OR tags:"t0") AND author.country = "NO"',
     lambda i: (i.state == i.ACTIVE or "t0" in i.tags) and i.author.country == "NO"),
    ('state = ACTIVE OR tags:"t0" AND author.country = "NO"',  # OR binds tighter than AND
     lambda i: (i.state == i.ACTIVE or "t0" in i.tags) and i.author.country == "NO"),
    ("NOT pages > 30 AND pages > 0", lambda i: 0 < i.pages <= 30),
    ("-pages <= 30", lambda i: i.pages > 30),
    ('NOT (pages < 20 OR title = "title 3") AND pages > 0', lambda i: not (i.pages < 20 or i.title == "title 3")),
    ("NOT (NOT pages > 50)", lambda i: i.pages > 50),
    ('title = "title 0" OR title = "title 1" OR title = "title 2"', lambda i: i.title != "title 3"),
    ("", lambda i: True),
    ("   ", lambda i: True),
]


@pytest.mark.parametrize(("text", "keep"), CASES, ids=[c[0] or "empty" for c in CASES])
def test_filter_matches_python(collection, pb, text, keep):
    want = expected(pb, keep)
    assert ids(collection, pb, text) == want


def test_every_case_selects_something_and_not_everything(pb):
    """The table above is only meaningful when each non-empty filter splits the items."""
    everything = len(items(pb))
    for text, keep in CASES:
        if text.strip():
            assert 0 < len(expected(pb, keep)) < everything, text


REFUSED = [
    # text, words the message must contain
    ("pages =", "ends too early"),
    ("pages = = 3", "column 9"),
    ('title = "unterminated', "column 9"),
    ("pages ! 3", "unexpected character '!'"),
    ("nope = 1", "Item has no field nope"),
    ("author.nope = 1", "no field author.nope"),
    ("title.x = 1", "title has no fields"),
    ('"title" = "x"', "quoted string"),
    ("pages = many", "pages is an integer"),
    ("pages = 1.5", "pages is an integer"),
    ("pages = 99999999999", "out of range"),
    ("price = nan", "not a finite number"),
    ("price = 1e999", "not a finite number"),
    ("done = yes", "compare it with true or false"),
    ("done > true", "use = or !="),
    ("state = SHINY", "use one of its names"),
    ("state = 2", "use one of its names"),
    ("state > DRAFT", "use = or !="),
    ('create_time > "yesterday"', "RFC 3339"),
    ('create_time > "2024-13-01T00:00:00Z"', "RFC 3339"),
    ("create_time.seconds > 5", "use it as a whole"),
    ('author = "x"', "author is a message"),
    ("labels = 1", "labels is a map"),
    ('blob = "x"', "filters do not support"),
    ('length = "1s"', "length is a message"),
    ("big > 5", "64-bit unsigned"),
    ('tags = "x"', "tags:value"),
    ('title:"x"', "needs a repeated field"),
    ('editors.name = "x"', "editors is repeated"),
    ('NOT tags:"x"', "NOT cannot apply to ':'"),
    ('title = "ab*"', "wildcards"),
    ("title = ab*", "wildcards"),
    ("pages", "bare value"),
    ("pages = 3 x", "bare value"),
    ("title.startsWith(x)", "functions are not supported"),
    ("f(a) = 1", "functions are not supported"),
    ("pages = (3)", "parenthesised"),
    # a default value is not stored, so Firestore cannot find it
    ("pages < 5", "pages is unset"),
    ("done = false", "done is unset"),
    ("state != ACTIVE", "state is unset"),
    ('author.country != "NO"', "author.country is unset"),
    ("NOT pages > 5", "under NOT: pages <= 5"),
    # what Firestore refuses or would answer wrongly
    ("pages != 1 AND views != 2", "one '!='"),
    ('tags:"a" AND tags:"b"', "one ':'"),
    ("pages > 10 OR done = true", "drop every resource without pages"),
    ("(" * 40 + "pages = 1" + ")" * 40, "nested more than"),
    (" OR ".join(f"pages = {n}" for n in range(1, 32)), "more than 30 alternatives"),
    (("(pages = 1 OR pages = 2 OR pages = 3 OR pages = 4 OR pages = 5 OR pages = 6) AND "
     "(views = 1 OR views = 2 OR views = 3 OR views = 4 OR views = 5 OR views = 6)"), "more than 30 alternatives"),
    ("x" * 5000, "longer than"),
]


@pytest.mark.parametrize(("text", "words"), REFUSED, ids=[r[0][:40] for r in REFUSED])
def test_refused_filters_name_the_part(pb, text, words):
    with pytest.raises(filtering.FilterError) as caught:
        filtering.parse(text, pb.Item.DESCRIPTOR, always_present=STAMPED)
    assert words in str(caught.value)
    assert str(caught.value).startswith("filter")


def test_filter_error_is_invalid_argument(pb):
    """The store maps aip.InvalidArgument to INVALID_ARGUMENT: FilterError is one."""
    assert issubclass(filtering.FilterError, filtering.InvalidArgument)
    assert filtering.InvalidArgument.__module__ == "scaffold_runtime.aip"


def test_error_names_column_and_text(pb):
    with pytest.raises(filtering.FilterError) as caught:
        filtering.parse('title = "a" AND author.shoe = "x"', pb.Item.DESCRIPTOR)
    assert str(caught.value) == "filter at column 17 ('author.shoe'): Item has no field author.shoe"


def test_thirty_alternatives_still_run(collection, pb):
    text = " OR ".join(f"pages = {n * 10}" for n in range(1, 31))
    assert ids(collection, pb, text) == expected(pb, lambda i: i.pages > 0)


def test_canonical_ignores_spelling_but_not_meaning(pb):
    d = pb.Item.DESCRIPTOR
    a = filtering.parse('title="x"  AND  pages>3', d).canonical
    assert a == filtering.parse("title = 'x' AND pages > 3", d).canonical
    assert a == filtering.parse('title = x pages > 3', d).canonical
    assert a != filtering.parse('title = "x" AND pages > 4', d).canonical
    assert filtering.parse("", d).canonical == ""
    assert filtering.parse("-pages <= 3", d).canonical == filtering.parse("pages > 3", d).canonical


def test_fields_and_inequalities_reported(pb):
    f = filtering.parse('(pages > 3 AND tags:"a") OR (pages > 5 AND title > "b")', pb.Item.DESCRIPTOR)
    assert f.present_fields() == {"pages"}
    assert f.inequality_fields() == ["pages", "title"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=80) | st.lists(st.sampled_from(
    ["pages", "title", "author.country", "tags", "state", "=", "!=", "<", ">=", ":", "AND", "OR", "NOT", "-",
     "(", ")", '"x"', "'y", "3", "-2.5", "ACTIVE", "true", ".", ",", "*", " ", "\\", "\n"]), max_size=20).map(" ".join))
def test_fuzz_only_filter_errors(pb, text):
    try:
        filtering.parse(text, pb.Item.DESCRIPTOR, always_present=STAMPED)
    except filtering.FilterError as exc:
        assert str(exc) and "Traceback" not in str(exc)
