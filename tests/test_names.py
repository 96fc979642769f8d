import pytest

from generator import names
from generator.errors import UsageError


def test_parse_resources_name():
    n = names.parse("xmpl.br.resources-books-v1")
    assert (n.org, n.product, n.kind, n.name, n.version) == ("xmpl", "br", "resources", "books", "v1")
    assert n.package == "xmpl.br.resources.books.v1"
    assert n.proto_path == "xmpl/br/resources/books/v1/books.proto"
    assert n.neuron_dir == "resources-books-v1"
    assert n.full == "xmpl.br.resources-books-v1"


def test_parse_services_name_with_prerelease_version():
    n = names.parse("xmpl.br.services-translator-v2beta1")
    assert n.kind == "services" and n.version == "v2beta1"


@pytest.mark.parametrize(
    "bad, says",
    [
        ("xmpl.br.books", "ORG.PRODUCT.KIND-NAME-VERSION"),
        ("Xmpl.br.resources-books-v1", "lower-case"),
        ("../x", "ORG.PRODUCT.KIND-NAME-VERSION"),
        ("xmpl.br.resources-books-1", "VERSION like v1"),
        ("xmpl.br.widgets-books-v1", "unknown kind 'widgets'"),
        ("xmpl.br.resources-class-v1", "Python keyword"),
        ("xmpl.br.resources-books-v1/../../etc", "ORG.PRODUCT.KIND-NAME-VERSION"),
        ("", "ORG.PRODUCT.KIND-NAME-VERSION"),
    ],
)
def test_bad_names_say_the_pattern_with_an_example(bad, says):
    with pytest.raises(UsageError) as err:
        names.parse(bad)
    assert says in err.value.message
    assert "xmpl.br.resources-books-v1" in err.value.message


def test_parse_multi_word_name():
    n = names.parse("xmpl.br.resources-book-shelves-v1")
    assert n.name == "book-shelves" and n.snake == "book_shelves"
    assert n.package == "xmpl.br.resources.book_shelves.v1"
    assert n.proto_path == "xmpl/br/resources/book_shelves/v1/book_shelves.proto"
    assert n.neuron_dir == "resources-book-shelves-v1"


@pytest.mark.parametrize(
    "name, singular, type_name, collection, plural_field",
    [
        ("books", "book", "Book", "books", "books"),
        ("people", "person", "Person", "people", "people"),
        ("person", "person", "Person", "people", "people"),
        ("news", "news", "News", "news", "news"),
        ("series", "series", "Series", "series", "series"),
        ("indices", "index", "Index", "indices", "indices"),
        ("analyses", "analysis", "Analysis", "analyses", "analyses"),
        ("statuses", "status", "Status", "statuses", "statuses"),
        ("book-shelves", "book_shelf", "BookShelf", "bookShelves", "book_shelves"),
    ],
)
def test_nouns_come_from_a_real_inflection_library(name, singular, type_name, collection, plural_field):
    r = names.nouns(name)
    assert (r.singular, r.type_name, r.collection, r.plural_field) == (singular, type_name, collection, plural_field)


def test_singular_of_a_camel_case_collection():
    assert names.singular("bookShelves") == "bookShelf"
    assert names.singular("people") == "person" and names.singular("book") == "book"


def test_examples_in_errors_use_the_given_org_and_product():
    with pytest.raises(UsageError) as err:
        names.parse("nope", "acme", "shop")
    assert "acme.shop.resources-books-v1" in err.value.message and "xmpl" not in err.value.message


def test_keyword_in_a_multi_word_name_is_fine_only_when_joined():
    assert names.parse("xmpl.br.resources-for-items-v1").snake == "for_items"
    with pytest.raises(UsageError):
        names.parse("xmpl.br.resources-import-v1")


def test_repository_passes_ruff():
    """Our own code passes the linter CI would run (generated neurons have their own test)."""
    import subprocess
    import sys
    from pathlib import Path

    ruff = Path(sys.executable).parent / "ruff"
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run([str(ruff), "check", "--no-cache", "generator", "tests", "bench"], cwd=repo,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_inflect_is_imported_quickly_and_typeguard_is_left_as_it_was():
    import subprocess
    import sys

    probe = ("from generator import names; assert names.singular('people') == 'person'; "
             "import typeguard, typeguard._decorators; assert typeguard.typechecked is typeguard._decorators.typechecked; "
             "import inflect; assert inflect.engine().plural_noun('person') == 'people'")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_inflect_answers_are_kept_per_user_and_a_later_run_skips_the_import(tmp_path):
    """Issue 13 item 4: words seen before are answered from ~/.cache/scaffold/inflect."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    probe = ("import sys; from generator import names; "
             "print(names.singular('bookShelves'), names.plural('person'), names.singular('book'), "
             "'inflect' in sys.modules)")

    def run() -> str:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert run() == ["bookShelf", "people", "book", "True"]
    [stored] = (tmp_path / "scaffold" / "inflect").glob("*.json")
    assert json.loads(stored.read_text()) == {"singular:shelves": "shelf", "plural:person": "people", "singular:book": ""}
    assert run() == ["bookShelf", "people", "book", "False"]  # all answered from the file
    for damaged in ("{not json", '["a list"]', '{"singular:shelves": 1}'):
        stored.write_text(damaged)
        assert run() == ["bookShelf", "people", "book", "True"]  # ignored, inflect asked again
        assert json.loads(stored.read_text())["singular:shelves"] == "shelf"  # and rewritten
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way\n")
    env["XDG_CACHE_HOME"] = str(blocker)  # no cache folder can be made there
    assert run() == ["bookShelf", "people", "book", "True"]
    assert blocker.read_text() == "in the way\n"
