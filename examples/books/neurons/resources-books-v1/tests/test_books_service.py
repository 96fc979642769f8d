"""Tests for xmpl.br.resources.books.v1.BooksService, over a real channel against the Firestore emulator.

Created by scaffold; yours to edit. `scaffold neuron update` adds tests for new RPCs.
"""

from __future__ import annotations

import grpc
import pytest
from xmpl.br.resources.books.v1 import books_pb2, books_pb2_grpc

from runtime.testing import sample


@pytest.fixture
def stub(channel):
    return books_pb2_grpc.BooksServiceStub(channel)


def assert_code(call, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value

# -- books.br.xmpl/Book (books/{book}) ----------------------------------------


def create_book(stub, seed: int = 1, book_id: str = ""):
    """Create a book with its required fields set."""
    return stub.CreateBook(
        books_pb2.CreateBookRequest(
            book=sample(books_pb2.Book, seed),
            book_id=book_id
        )
    )


def test_create_book_sets_name_and_output_only_fields(stub):
    created = create_book(stub, book_id="first-1")
    assert created.name == "books/first-1"
    assert created.HasField("create_time")
    assert created.HasField("update_time")
    assert created.display_name == sample(books_pb2.Book).display_name
    assert stub.GetBook(books_pb2.GetBookRequest(name=created.name)) == created


def test_create_book_rejects_a_bad_id(stub):
    err = assert_code(lambda: create_book(stub, book_id="Not An Id!"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "book_id" in err.details()


def test_create_book_twice_is_already_exists(stub):
    create_book(stub, book_id="dup-1")
    assert_code(lambda: create_book(stub, book_id="dup-1"), grpc.StatusCode.ALREADY_EXISTS)


def test_create_book_names_a_missing_required_field(stub):
    resource = sample(books_pb2.Book)
    resource.ClearField("display_name")
    err = assert_code(
        lambda: stub.CreateBook(books_pb2.CreateBookRequest(book=resource)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "display_name" in err.details()


def test_get_book_not_found(stub):
    missing = "books/missing"
    assert_code(lambda: stub.GetBook(books_pb2.GetBookRequest(name=missing)), grpc.StatusCode.NOT_FOUND)


@pytest.mark.parametrize("bad", ["", "elsewhere/x", "books/a/b", "books/__x__"])
def test_get_book_rejects_a_malformed_name(stub, bad):
    assert_code(lambda: stub.GetBook(books_pb2.GetBookRequest(name=bad)), grpc.StatusCode.INVALID_ARGUMENT)


def list_all_book(stub, page_size: int):
    pages, token = [], ""
    while True:
        page = stub.ListBooks(books_pb2.ListBooksRequest(page_size=page_size, page_token=token))
        pages.append(list(page.books))
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 100, "pagination does not end"


def test_list_books_walks_every_page_in_a_stable_order(stub):
    created = [create_book(stub, i) for i in range(7)]
    pages = list_all_book(stub, page_size=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    names = [r.name for page in pages for r in page]
    assert sorted(names) == sorted(r.name for r in created)
    assert names == sorted(names)
    assert [r.name for page in list_all_book(stub, page_size=0) for r in page] == names


def test_list_books_coerces_a_huge_page_size(stub):
    create_book(stub)
    page = stub.ListBooks(books_pb2.ListBooksRequest(page_size=5000))
    assert len(page.books) == 1 and page.next_page_token == ""


def test_list_books_empty(stub):
    page = stub.ListBooks(books_pb2.ListBooksRequest())
    assert list(page.books) == [] and page.next_page_token == ""


def test_list_books_rejects_a_negative_page_size(stub):
    assert_code(lambda: stub.ListBooks(books_pb2.ListBooksRequest(page_size=-1)), grpc.StatusCode.INVALID_ARGUMENT)


@pytest.mark.parametrize("token", ["forged", "eyJhIjoiYm9va3MvMSJ9", "A" * 40])
def test_list_books_rejects_a_forged_page_token(stub, token):
    assert_code(
        lambda: stub.ListBooks(books_pb2.ListBooksRequest(page_token=token)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_update_book_not_found(stub):
    resource = sample(books_pb2.Book)
    resource.name = "books/missing"
    assert_code(lambda: stub.UpdateBook(books_pb2.UpdateBookRequest(book=resource)), grpc.StatusCode.NOT_FOUND)


def test_update_book_rejects_an_unknown_mask_path(stub):
    created = create_book(stub)
    assert_code(
        lambda: stub.UpdateBook(
            books_pb2.UpdateBookRequest(book=created, update_mask={"paths": ["no_such_field"]})
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_update_book_with_a_mask_changes_only_the_masked_field(stub):
    created = create_book(stub)
    change = books_pb2.Book(name=created.name, display_name="changed")
    updated = stub.UpdateBook(books_pb2.UpdateBookRequest(book=change, update_mask={"paths": ["display_name"]}))
    assert updated.display_name == "changed"
    expected = books_pb2.Book()
    expected.CopyFrom(created)
    expected.display_name = "changed"
    expected.update_time.CopyFrom(updated.update_time)
    assert updated.update_time.ToNanoseconds() >= created.update_time.ToNanoseconds()
    assert updated == expected
    assert stub.GetBook(books_pb2.GetBookRequest(name=created.name)) == updated


def test_delete_book_not_found(stub):
    missing = "books/missing"
    assert_code(lambda: stub.DeleteBook(books_pb2.DeleteBookRequest(name=missing)), grpc.StatusCode.NOT_FOUND)


def test_delete_book_removes_the_resource(stub):
    created = create_book(stub)
    stub.DeleteBook(books_pb2.DeleteBookRequest(name=created.name))
    assert_code(lambda: stub.GetBook(books_pb2.GetBookRequest(name=created.name)), grpc.StatusCode.NOT_FOUND)
    assert_code(lambda: stub.DeleteBook(books_pb2.DeleteBookRequest(name=created.name)), grpc.StatusCode.NOT_FOUND)


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


@pytest.mark.parametrize("bad", ['author = "X"', "publisher = Penguin", 'publisher != "X"', 'publisher = "X" AND x = 1'])
def test_list_books_rejects_an_unsupported_filter(stub, bad):
    err = assert_code(lambda: stub.ListBooks(books_pb2.ListBooksRequest(filter=bad)), grpc.StatusCode.INVALID_ARGUMENT)
    assert "unsupported filter" in err.details()


def test_a_page_token_only_works_with_its_own_filter(stub):
    for i in range(3):
        add_book(stub, f"penguin-{i}", "Penguin")
    page = stub.ListBooks(books_pb2.ListBooksRequest(filter='publisher = "Penguin"', page_size=1))
    assert page.next_page_token
    assert_code(
        lambda: stub.ListBooks(books_pb2.ListBooksRequest(filter='publisher = "Vintage"', page_token=page.next_page_token)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
