"""Tests of what the Books example's README shows ListBooks doing with AIP-160 ``filter`` and
AIP-132 ``order_by``, over a real channel against the Firestore emulator. methods.py
customises nothing: these run the generated base. The standard methods' contract is
test_books_service_contract.py.
"""

from __future__ import annotations

import grpc
import pytest
from scaffold_runtime.status import details_of
from xmpl.br.resources.books.v1 import books_pb2, books_pb2_grpc


@pytest.fixture
def stub(channel):
    return books_pb2_grpc.BooksServiceStub(channel)


def assert_code(call, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value


def add_book(stub, book_id: str, publisher: str, authors=("Anon",), title: str = "") -> books_pb2.Book:
    """Create ``books/<book_id>``; returns the created book."""
    book = books_pb2.Book(display_name=title or book_id.title(), authors=list(authors), publisher=publisher)
    return stub.CreateBook(books_pb2.CreateBookRequest(book=book, book_id=book_id))


def list_all(stub, page_size: int = 2, **request) -> list[books_pb2.Book]:
    """Every book ListBooks(**request) returns, following page tokens ``page_size`` at a time."""
    books, token = [], ""
    for _ in range(20):  # bounded: a page token that never ends fails the test
        page = stub.ListBooks(books_pb2.ListBooksRequest(page_size=page_size, page_token=token, **request))
        assert len(page.books) <= page_size
        books += page.books
        token = page.next_page_token
        if not token:
            return books
    raise AssertionError("pagination does not end")


def names(books) -> list[str]:
    return [b.name for b in books]


def test_filter_by_publisher_across_pages(stub):
    for i in range(5):
        add_book(stub, f"penguin-{i}", "Penguin")
        add_book(stub, f"vintage-{i}", "Vintage")
    assert names(list_all(stub, filter='publisher = "Penguin"')) == [f"books/penguin-{i}" for i in range(5)]


def test_filter_value_with_escaped_quotes(stub):
    add_book(stub, "odd-1", 'Odd "Quoted" Press')
    add_book(stub, "odd-2", "Odd Press")
    page = stub.ListBooks(books_pb2.ListBooksRequest(filter=r'publisher = "Odd \"Quoted\" Press"'))
    assert names(page.books) == ["books/odd-1"]
    assert list(stub.ListBooks(books_pb2.ListBooksRequest(filter='publisher = "Nobody"')).books) == []


def test_has_on_the_repeated_authors(stub):
    add_book(stub, "odyssey", "Penguin", ["Homer"])
    add_book(stub, "good-omens", "Gollancz", ["Terry Pratchett", "Neil Gaiman"])
    add_book(stub, "coraline", "Bloomsbury", ["Neil Gaiman"])
    assert names(list_all(stub, filter='authors:"Neil Gaiman"')) == ["books/coraline", "books/good-omens"]
    assert names(list_all(stub, filter='authors:"Homer"')) == ["books/odyssey"]
    assert list_all(stub, filter='authors:"Gaiman"') == []  # membership, not a substring


def test_and_or(stub):
    add_book(stub, "odyssey", "Penguin", ["Homer"])
    add_book(stub, "iliad", "Vintage", ["Homer"])
    add_book(stub, "aeneid", "Penguin", ["Virgil"])
    add_book(stub, "beowulf", "Faber", ["Anon"])
    assert names(list_all(stub, filter='publisher = "Penguin" AND authors:"Homer"')) == ["books/odyssey"]
    either = list_all(stub, filter='publisher = "Vintage" OR authors:"Virgil"')
    assert names(either) == ["books/aeneid", "books/iliad"]
    grouped = list_all(stub, filter='authors:"Homer" AND (publisher = "Vintage" OR publisher = "Faber")')
    assert names(grouped) == ["books/iliad"]


def test_order_by_display_name_desc_with_paging(stub):
    for book_id, title in [
        ("b1", "Beowulf"),
        ("b2", "The Odyssey"),
        ("b3", "Aeneid"),
        ("b4", "The Iliad"),
        ("b5", "Metamorphoses"),
    ]:
        add_book(stub, book_id, "Penguin", title=title)
    ordered = list_all(stub, order_by="display_name desc")
    assert [b.display_name for b in ordered] == ["The Odyssey", "The Iliad", "Metamorphoses", "Beowulf", "Aeneid"]
    # A page token carries the order: resuming under another order is refused.
    first = stub.ListBooks(books_pb2.ListBooksRequest(page_size=2, order_by="display_name desc"))
    assert_code(
        lambda: stub.ListBooks(books_pb2.ListBooksRequest(page_token=first.next_page_token, order_by="display_name")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_an_unknown_field_is_invalid_argument_naming_it(stub):
    err = assert_code(
        lambda: stub.ListBooks(books_pb2.ListBooksRequest(filter='author = "X"')), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "author" in err.details() and "no field" in err.details()
    violations = [v.field for d in details_of(err) if d.DESCRIPTOR.name == "BadRequest" for v in d.field_violations]
    assert violations == ["filter"]


def test_a_page_token_is_refused_under_another_filter(stub):
    for i in range(3):
        add_book(stub, f"penguin-{i}", "Penguin")
    page = stub.ListBooks(books_pb2.ListBooksRequest(filter='publisher = "Penguin"', page_size=1))
    assert page.next_page_token
    assert_code(
        lambda: stub.ListBooks(
            books_pb2.ListBooksRequest(filter='publisher = "Vintage"', page_token=page.next_page_token)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
