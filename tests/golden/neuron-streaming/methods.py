"""Servicers for streaming: your code.

Created by scaffold; from now on this file is yours. Each class subclasses the generated base
in base.py, which implements the standard methods on Firestore with the proto's current
patterns and fields (regenerated with the proto) and answers UNIMPLEMENTED for the rest.
Override a method here only to customise it. `scaffold neuron update` adds a stub for each new
custom RPC and never changes what you wrote.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from streaming.v1 import streaming_pb2

import base


class TickService(base.TickServiceBase):
    """Ticks in every cardinality."""

    def Tick(self, request: streaming_pb2.TickRequest, context: grpc.ServicerContext) -> streaming_pb2.TickResponse:
        """One tick."""
        # TODO: implement Tick.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Tick is not implemented yet")

    def WatchTicks(
        self, request: streaming_pb2.TickRequest, context: grpc.ServicerContext
    ) -> Iterator[streaming_pb2.TickResponse]:
        """Ticks as they come (server streaming; NDJSON through the gateway)."""
        # TODO: implement WatchTicks.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "WatchTicks is not implemented yet")

    def SumTicks(
        self, request_iterator: Iterator[streaming_pb2.TickRequest], context: grpc.ServicerContext
    ) -> streaming_pb2.TickResponse:
        """Many ticks in, one total out."""
        # TODO: implement SumTicks.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "SumTicks is not implemented yet")

    def EchoTicks(
        self, request_iterator: Iterator[streaming_pb2.TickRequest], context: grpc.ServicerContext
    ) -> Iterator[streaming_pb2.TickResponse]:
        """Ticks both ways."""
        # TODO: implement EchoTicks.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "EchoTicks is not implemented yet")
