"""Servicers for nested: your code.

Created by scaffold; from now on this file is yours. Each class subclasses the generated base
in base.py, which implements the standard methods on Firestore with the proto's current
patterns and fields (regenerated with the proto) and answers UNIMPLEMENTED for the rest.
Override a method here only to customise it. `scaffold neuron update` adds a stub for each new
custom RPC and never changes what you wrote.
"""

from __future__ import annotations

import grpc
from nested.v1 import nested_pb2

import base


class LibraryService(base.LibraryServiceBase):
    """Shelves and their books."""

    def MoveBook(self, request: nested_pb2.MoveBookRequest, context: grpc.ServicerContext) -> nested_pb2.Book:
        """Moves a book to another shelf (custom method)."""
        # TODO: implement MoveBook.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MoveBook is not implemented yet")
