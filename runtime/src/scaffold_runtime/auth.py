"""Per-call authentication, chosen by AUTH_MODE (unset: none).

- ``api-key``: callers send ``x-api-key`` metadata; valid keys come from API_KEYS
  (comma-separated) or API_KEYS_FILE (one per line, e.g. a Secret Manager secret mounted as a
  file), never from the image. Keys are compared in constant time.
- ``id-token``: callers send ``authorization: Bearer <Google-signed ID token>`` (what Cloud Run
  service-to-service calls use); the token is verified with google-auth against AUTH_AUDIENCE
  (the service URL). AUTH_CERTS_URL overrides where the signing certificates come from.

Missing credentials: UNAUTHENTICATED; wrong ones: PERMISSION_DENIED; neither says why, so a
caller learns nothing about valid keys. Health and reflection stay open (probes need them).
The caller's identity is ``scaffold_runtime.auth.caller()`` inside methods and goes into call logs.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time

import grpc

log = logging.getLogger("scaffold_runtime.auth")
_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
OPEN_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
DEFAULT_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"


class AuthError(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


def caller() -> str:
    """Who is calling: ``api-key:<fingerprint>`` or the ID token's email/subject; "" if no auth."""
    return _CALLER.get()


class ApiKeys:
    """Valid keys from API_KEYS / API_KEYS_FILE; the file is re-read when it changes."""

    def __init__(self, keys: str = "", path: str = "") -> None:
        self._inline = [k.strip() for k in keys.split(",") if k.strip()]
        self._path = path
        self._mtime = -1.0
        self._from_file: list[str] = []
        self._lock = threading.Lock()
        if not self._inline and not path:
            raise RuntimeError("AUTH_MODE=api-key needs API_KEYS or API_KEYS_FILE")
        self._keys()

    def _keys(self) -> list[str]:
        if self._path:
            mtime = os.stat(self._path).st_mtime
            if mtime != self._mtime:
                with self._lock, open(self._path, encoding="utf-8") as fh:
                    self._from_file = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
                    self._mtime = mtime
        return self._inline + self._from_file

    def check(self, metadata: dict[str, str]) -> str:
        import hashlib
        import hmac

        given = metadata.get("x-api-key", "")
        if not given:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED)
        ok = False
        for key in self._keys():  # compare with every key, in constant time, no early exit
            ok |= hmac.compare_digest(given.encode(), key.encode())
        if not ok:
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED)
        return "api-key:" + hashlib.sha256(given.encode()).hexdigest()[:8]


class IdTokens:
    def __init__(self, audience: str, certs_url: str = DEFAULT_CERTS_URL) -> None:
        if not audience:
            raise RuntimeError("AUTH_MODE=id-token needs AUTH_AUDIENCE (the service URL callers ask tokens for)")
        import google.auth.transport.requests
        import requests

        self.audience = audience
        self.certs_url = certs_url
        self._request = google.auth.transport.requests.Request(session=requests.Session())

    def check(self, metadata: dict[str, str]) -> str:
        from google.auth import exceptions as auth_exceptions
        from google.oauth2 import id_token

        header = metadata.get("authorization", "")
        if not header:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED)
        try:
            claims = id_token.verify_token(token, self._request, audience=self.audience, certs_url=self.certs_url,
                                           clock_skew_in_seconds=10)
        except auth_exceptions.TransportError as exc:  # the signing certificates could not be fetched
            log.warning("id token certificates unavailable: %s", exc)
            raise AuthError(grpc.StatusCode.UNAVAILABLE) from None
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:  # bad signature, audience, expiry, format
            log.info("id token refused: %s", type(exc).__name__)
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED) from None
        if claims.get("iss") not in GOOGLE_ISSUERS or claims.get("exp", 0) < time.time() - 10:
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED)
        return str(claims.get("email") or claims.get("sub") or "id-token")


def from_environment():
    """The checker AUTH_MODE asks for, or None."""
    mode = os.environ.get("AUTH_MODE", "").strip().lower()
    if mode in ("", "none"):
        return None
    if mode == "api-key":
        return ApiKeys(os.environ.get("API_KEYS", ""), os.environ.get("API_KEYS_FILE", ""))
    if mode == "id-token":
        return IdTokens(os.environ.get("AUTH_AUDIENCE", ""), os.environ.get("AUTH_CERTS_URL") or DEFAULT_CERTS_URL)
    raise RuntimeError(f"unknown AUTH_MODE {mode!r}: use api-key, id-token or leave it unset")


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks credentials before the method runs; wraps each method's handler once."""

    def __init__(self, checker) -> None:
        self.checker = checker
        self._wrapped: dict[str, grpc.RpcMethodHandler | None] = {}

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method in self._wrapped:
            return self._wrapped[method]
        handler = continuation(handler_call_details)
        if handler is None or method.startswith(OPEN_PREFIXES):
            self._wrapped[method] = handler
            return handler
        wrapped = self._wrap(handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _authenticate(self, context) -> contextvars.Token:
        try:
            identity = self.checker.check(dict(context.invocation_metadata()))
        except AuthError as err:
            log.warning("call refused: %s", err.code.name, extra={"fields": {"grpc.code": err.code.name, "peer": context.peer()}})
            messages = {grpc.StatusCode.UNAUTHENTICATED: "unauthenticated", grpc.StatusCode.UNAVAILABLE: "try again later"}
            context.abort(err.code, messages.get(err.code, "permission denied"))
        return _CALLER.set(identity)

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        authenticate = self._authenticate
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary

            def unary(request, context):
                token = authenticate(context)
                try:
                    return inner(request, context)
                finally:
                    _CALLER.reset(token)

            factory = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
            return factory(unary, handler.request_deserializer, handler.response_serializer)
        inner_stream = handler.unary_stream or handler.stream_stream

        def streaming(request, context):
            token = authenticate(context)
            try:
                yield from inner_stream(request, context)
            finally:
                _CALLER.reset(token)

        factory = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
        return factory(streaming, handler.request_deserializer, handler.response_serializer)
