"""Servicers for xmpl.br.resources-books-v1: your code.

Created by scaffold; from now on this file is yours. `scaffold neuron update` only adds a
stub for each new RPC and never changes what you wrote.
Standard methods (AIP-131..135) run on Firestore through runtime.store.ResourceStore, which
checks names, ids, required fields, page tokens and update masks.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import empty_pb2
from xmpl.br.resources.books.v1 import books_pb2, books_pb2_grpc

from runtime.store import ResourceStore

# AIP-160, the one comparison this service supports: publisher = "Penguin".
PUBLISHER_FILTER = re.compile(r'^\s*publisher\s*=\s*"((?:[^"\\]|\\.)*)"\s*$')


def parse_filter(text: str) -> list[tuple[str, str, str]]:
    """``publisher = "X"`` as a Firestore filter; anything else is the caller's mistake."""
    if not text.strip():
        return []
    match = PUBLISHER_FILTER.match(text)
    if match is None:
        raise ValueError(f'unsupported filter {text!r}: the only supported filter is publisher = "NAME"')
    return [("publisher", "==", re.sub(r"\\(.)", r"\1", match.group(1)))]


class BooksService(books_pb2_grpc.BooksServiceServicer):
    """Manages Book resources."""

    def __init__(self, deps) -> None:
        self.books = ResourceStore(deps.firestore, books_pb2.Book, "books/{book}", id_field="book_id")

    def GetBook(self, request: books_pb2.GetBookRequest, context: grpc.ServicerContext) -> books_pb2.Book:
        """Gets a book."""
        return self.books.get(context, request.name)

    def ListBooks(self, request: books_pb2.ListBooksRequest, context: grpc.ServicerContext) -> books_pb2.ListBooksResponse:
        """Lists books, in a stable order, a page at a time."""
        try:
            where = parse_filter(request.filter)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        items, next_page_token = self.books.list(context, request.page_size, request.page_token, where=where)
        return books_pb2.ListBooksResponse(books=items, next_page_token=next_page_token)

    def CreateBook(self, request: books_pb2.CreateBookRequest, context: grpc.ServicerContext) -> books_pb2.Book:
        """Creates a book."""
        return self.books.create(
            context,
            request.book,
            request.book_id,
        )

    def UpdateBook(self, request: books_pb2.UpdateBookRequest, context: grpc.ServicerContext) -> books_pb2.Book:
        """Updates a book; only the fields named in update_mask change."""
        return self.books.update(
            context,
            request.book,
            request.update_mask if request.HasField("update_mask") else None,
        )

    def DeleteBook(self, request: books_pb2.DeleteBookRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        """Deletes a book."""
        self.books.delete(context, request.name)
        return empty_pb2.Empty()
