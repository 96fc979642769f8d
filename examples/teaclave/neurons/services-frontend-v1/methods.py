"""Servicers for xmpl.tc.services-frontend-v1: your code.

Created by scaffold; from now on this file is yours. Each class subclasses the generated base
in base.py, which implements the standard methods on Firestore with the proto's current
patterns and fields (regenerated with the proto) and answers UNIMPLEMENTED for the rest.
Override a method here only to customise it. `scaffold neuron update` adds a stub for each new
custom RPC and never changes what you wrote.
"""

from __future__ import annotations

import grpc
from xmpl.tc.services.frontend.v1 import frontend_pb2

import base


class FrontendService(base.FrontendServiceBase):
    """The platform's API for users."""

    def UserRegister(
        self, request: frontend_pb2.UserRegisterRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.UserRegisterResponse:
        """Registers a user (forwarded to the authentication service)."""
        # TODO: implement UserRegister.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "UserRegister is not implemented yet")

    def UserLogin(
        self, request: frontend_pb2.UserLoginRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.UserLoginResponse:
        """Logs a user in (forwarded to the authentication service)."""
        # TODO: implement UserLogin.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "UserLogin is not implemented yet")

    def RegisterFunction(
        self, request: frontend_pb2.RegisterFunctionRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.Function:
        """Registers a function owned by the calling user."""
        # TODO: implement RegisterFunction.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "RegisterFunction is not implemented yet")

    def GetFunction(
        self, request: frontend_pb2.GetFunctionRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.Function:
        """Gets a function the calling user owns, or a public one. NOT_FOUND for any other. (A custom method forwarding to the management service's standard Get.)"""
        # TODO: implement GetFunction.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "GetFunction is not implemented yet")

    def ListFunctions(
        self, request: frontend_pb2.ListFunctionsRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.ListFunctionsResponse:
        """Lists the calling user's functions, a page at a time. (A custom method forwarding to the management service's standard List.)"""
        # TODO: implement ListFunctions.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "ListFunctions is not implemented yet")
