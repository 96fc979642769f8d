"""Servicers for xmpl.br.services-translator-v1: your code.

Created by scaffold; from now on this file is yours. Each class subclasses the generated base
in base.py, which implements the standard methods on Firestore with the proto's current
patterns and fields (regenerated with the proto) and answers UNIMPLEMENTED for the rest.
Override a method here only to customise it. `scaffold neuron update` adds a stub for each new
custom RPC and never changes what you wrote.
"""

from __future__ import annotations

import grpc
from xmpl.br.services.translator.v1 import translator_pb2

import base


class TranslatorService(base.TranslatorServiceBase):
    """The translator service."""

    def Echo(self, request: translator_pb2.EchoRequest, context: grpc.ServicerContext) -> translator_pb2.EchoResponse:
        """An example method: replace it with your own."""
        # TODO: implement Echo.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Echo is not implemented yet")
