"""Tests of the Books example's own code (the publisher filter), over a real channel against
the Firestore emulator. The standard methods' contract is test_books_service_contract.py.
"""

from __future__ import annotations

import grpc
import pytest
from xmpl.br.resources.books.v1 import books_pb2, books_pb2_grpc


@pytest.fixture
def stub(channel):
    return books_pb2_grpc.BooksServiceStub(channel)


def assert_code(call, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value


# -- Hand-written for the example: the publisher filter ------------------------------------


def add_book(stub, book_id: str, publisher: str):
    return stub.CreateBook(
        books_pb2.CreateBookRequest(
            book=books_pb2.Book(display_name=book_id.title(), authors=["Anon"], publisher=publisher), book_id=book_id
        )
    )


def test_list_books_filters_by_publisher_across_pages(stub):
    for i in range(5):
        add_book(stub, f"penguin-{i}", "Penguin")
        add_book(stub, f"vintage-{i}", "Vintage")
    names, token = [], ""
    while True:
        page = stub.ListBooks(books_pb2.ListBooksRequest(filter='publisher = "Penguin"', page_size=2, page_token=token))
        assert all(b.publisher == "Penguin" for b in page.books)
        names += [b.name for b in page.books]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"books/penguin-{i}" for i in range(5)]


def test_list_books_filter_with_quotes_and_no_match(stub):
    add_book(stub, "odd-1", 'Odd "Quoted" Press')
    page = stub.ListBooks(books_pb2.ListBooksRequest(filter=r'publisher = "Odd \"Quoted\" Press"'))
    assert [b.name for b in page.books] == ["books/odd-1"]
    assert list(stub.ListBooks(books_pb2.ListBooksRequest(filter='publisher = "Nobody"')).books) == []


@pytest.mark.parametrize(
    "bad", ['author = "X"', "publisher = Penguin", 'publisher != "X"', 'publisher = "X" AND x = 1']
)
def test_list_books_rejects_an_unsupported_filter(stub, bad):
    err = assert_code(lambda: stub.ListBooks(books_pb2.ListBooksRequest(filter=bad)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "unsupported filter" in err.details()


def test_a_page_token_only_works_with_its_own_filter(stub):
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
