"""Servicers for xmpl.tc.services-authentication-v1: your code.

Created by scaffold; from now on this file is yours. Each class subclasses the generated base
in base.py, which implements the standard methods on Firestore with the proto's current
patterns and fields (regenerated with the proto) and answers UNIMPLEMENTED for the rest.
Override a method here only to customise it. `scaffold neuron update` adds a stub for each new
custom RPC and never changes what you wrote.
"""

from __future__ import annotations

import grpc
from xmpl.tc.services.authentication.v1 import authentication_pb2

import base


class AuthenticationService(base.AuthenticationServiceBase):
    """Users, passwords and login tokens."""

    def UserRegister(
        self, request: authentication_pb2.UserRegisterRequest, context: grpc.ServicerContext
    ) -> authentication_pb2.UserRegisterResponse:
        """Registers a user. ALREADY_EXISTS when the id is taken."""
        # TODO: implement UserRegister.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "UserRegister is not implemented yet")

    def UserLogin(
        self, request: authentication_pb2.UserLoginRequest, context: grpc.ServicerContext
    ) -> authentication_pb2.UserLoginResponse:
        """Logs a user in: a token for the frontend's x-teaclave-token header. UNAUTHENTICATED for an unknown id or a wrong password (the same message for both)."""
        # TODO: implement UserLogin.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "UserLogin is not implemented yet")

    def UserAuthenticate(
        self, request: authentication_pb2.UserAuthenticateRequest, context: grpc.ServicerContext
    ) -> authentication_pb2.UserAuthenticateResponse:
        """Checks a token: accept is true when it belongs to the user and has not expired."""
        # TODO: implement UserAuthenticate.
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "UserAuthenticate is not implemented yet")
