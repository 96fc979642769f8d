"""Servicers for xmpl.br.resources-books-v1: your code.

Created by scaffold; from now on this file is yours. BooksService subclasses the generated
base in base.py, which implements Get, List, Create, Update and Delete on Firestore with the
proto's current patterns and fields; this file overrides only what the example customises.
"""

from __future__ import annotations

import re

import grpc
from xmpl.br.resources.books.v1 import books_pb2

import base

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


class BooksService(base.BooksServiceBase):
    """Manages Book resources."""

    def ListBooks(
        self, request: books_pb2.ListBooksRequest, context: grpc.ServicerContext
    ) -> books_pb2.ListBooksResponse:
        """Lists books, in a stable order, a page at a time; ``filter`` by publisher."""
        try:
            where = parse_filter(request.filter)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        items, next_page_token = self.books.list(context, request.page_size, request.page_token, where=where)
        return books_pb2.ListBooksResponse(books=items, next_page_token=next_page_token)
