"""Servicers for xmpl.tc.services-frontend-v1: your code.

Created by scaffold; from now on this file is yours. `scaffold neuron update` only adds a
stub for each new RPC and never changes what you wrote.

Teaclave's frontend service in miniature: the one service users call. It holds clients of the
authentication and management neurons (`scaffold neuron depend`, ``self.deps.clients.auth``
and ``self.deps.clients.management``). Every call but UserRegister and UserLogin carries the
user's id and token as metadata (USER_HEADER, TOKEN_HEADER); the authentication neuron checks
them before the call goes on to the management neuron. A failed call to either ends the
user's call with a clean status (scaffold_runtime.neuron_client.abort_from), never UNKNOWN.
"""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from scaffold_runtime.neuron_client import CALLER_ERRORS, abort_from, status_of
from xmpl.tc.resources.functions.v1 import functions_pb2
from xmpl.tc.services.authentication.v1 import authentication_pb2
from xmpl.tc.services.frontend.v1 import frontend_pb2

import base

USER_HEADER, TOKEN_HEADER = "x-teaclave-user-id", "x-teaclave-token"


def convert(message, cls):
    """``message`` as a ``cls``, field by field name (fields ``cls`` lacks are dropped)."""
    return json_format.ParseDict(
        json_format.MessageToDict(message, preserving_proto_field_name=True), cls(), ignore_unknown_fields=True
    )


def for_users(function: functions_pb2.Function) -> frontend_pb2.Function:
    """The management neuron's Function as users see it: with its owner, from its name."""
    shown = convert(function, frontend_pb2.Function)
    shown.owner = function.name.split("/")[1]
    return shown


class FrontendService(base.FrontendServiceBase):
    """The platform's API for users."""

    def _user(self, context: grpc.ServicerContext) -> str:
        """The calling user's id, once the authentication neuron has accepted their token;
        otherwise the call ends UNAUTHENTICATED with the reason."""
        metadata = dict(context.invocation_metadata())
        user, token = metadata.get(USER_HEADER, ""), metadata.get(TOKEN_HEADER, "")
        if not user or not token:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"send your user id and token as {USER_HEADER} and {TOKEN_HEADER} metadata (UserLogin gives a token)",
            )
        request = authentication_pb2.UserAuthenticateRequest(id=user, token=token)
        try:
            reply = self.deps.clients.auth.authentication_service.UserAuthenticate(request)
        except grpc.RpcError as exc:
            abort_from(context, exc, "authentication")
        if not reply.accept:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, reply.reason)
        return user

    def UserRegister(
        self, request: frontend_pb2.UserRegisterRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.UserRegisterResponse:
        """Registers a user (forwarded to the authentication service)."""
        try:
            self.deps.clients.auth.authentication_service.UserRegister(
                convert(request, authentication_pb2.UserRegisterRequest)
            )
        except grpc.RpcError as exc:
            abort_from(context, exc, "authentication")
        return frontend_pb2.UserRegisterResponse()

    def UserLogin(
        self, request: frontend_pb2.UserLoginRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.UserLoginResponse:
        """Logs a user in (forwarded to the authentication service): UNAUTHENTICATED for a
        wrong id or password."""
        try:
            reply = self.deps.clients.auth.authentication_service.UserLogin(
                convert(request, authentication_pb2.UserLoginRequest)
            )
        except grpc.RpcError as exc:
            abort_from(context, exc, "authentication", CALLER_ERRORS | {grpc.StatusCode.UNAUTHENTICATED})
        return convert(reply, frontend_pb2.UserLoginResponse)

    def RegisterFunction(
        self, request: frontend_pb2.RegisterFunctionRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.Function:
        """Registers a function owned by the calling user: users/{user}/functions/{function_id}."""
        user = self._user(context)
        create = functions_pb2.CreateFunctionRequest(
            parent=f"users/{user}",
            function=convert(request.function, functions_pb2.Function),
            function_id=request.function_id,
        )
        try:
            created = self.deps.clients.management.functions_service.CreateFunction(create)
        except grpc.RpcError as exc:
            abort_from(context, exc, "management")
        return for_users(created)

    def GetFunction(
        self, request: frontend_pb2.GetFunctionRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.Function:
        """The function, if the calling user owns it or it is public. NOT_FOUND otherwise, with
        the same message whether it exists or not, so other users' private functions stay hidden."""
        user = self._user(context)
        if not request.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name is required: users/{user}/functions/{function}")
        not_found = f"{request.name!r} not found"
        try:
            function = self.deps.clients.management.functions_service.GetFunction(
                functions_pb2.GetFunctionRequest(name=request.name)
            )
        except grpc.RpcError as exc:
            if status_of(exc)[0] == grpc.StatusCode.NOT_FOUND:
                context.abort(grpc.StatusCode.NOT_FOUND, not_found)
            abort_from(context, exc, "management")
        if not function.public and not function.name.startswith(f"users/{user}/"):
            context.abort(grpc.StatusCode.NOT_FOUND, not_found)
        return for_users(function)

    def ListFunctions(
        self, request: frontend_pb2.ListFunctionsRequest, context: grpc.ServicerContext
    ) -> frontend_pb2.ListFunctionsResponse:
        """The calling user's functions, a page at a time, in name order."""
        user = self._user(context)
        try:
            page = self.deps.clients.management.functions_service.ListFunctions(
                functions_pb2.ListFunctionsRequest(
                    parent=f"users/{user}", page_size=request.page_size, page_token=request.page_token
                )
            )
        except grpc.RpcError as exc:
            abort_from(context, exc, "management")
        return frontend_pb2.ListFunctionsResponse(
            functions=[for_users(f) for f in page.functions], next_page_token=page.next_page_token
        )
