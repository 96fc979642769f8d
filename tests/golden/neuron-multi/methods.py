"""Servicers for multi: your code.

Created by scaffold; from now on this file is yours. Each class subclasses the generated base
in base.py, which implements the standard methods on Firestore with the proto's current
patterns and fields (regenerated with the proto) and answers UNIMPLEMENTED for the rest.
Override a method here only to customise it. `scaffold neuron update` adds a stub for each new
custom RPC and never changes what you wrote.
"""

from __future__ import annotations

import grpc
from multi.v1 import multi_pb2

import base


class GreeterService(base.GreeterServiceBase):
    """Says hello."""

    def Greet(self, request: multi_pb2.GreetRequest, context: grpc.ServicerContext) -> multi_pb2.GreetResponse:
        """Greets."""
        # TODO: implement Greet.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Greet is not implemented yet")


class FarewellService(base.FarewellServiceBase):
    """Says goodbye."""

    def Farewell(self, request: multi_pb2.GreetRequest, context: grpc.ServicerContext) -> multi_pb2.GreetResponse:
        """Says goodbye."""
        # TODO: implement Farewell.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Farewell is not implemented yet")
