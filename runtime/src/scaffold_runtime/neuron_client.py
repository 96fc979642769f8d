"""Calls from one neuron to another: the reusable part of a neuron's generated ``deps_clients.py``.

A dependency named ALIAS (``scaffold neuron depend A B`` chooses it, e.g. ``books``) is
configured by environment, which Terraform sets on Cloud Run and ``scaffold neuron run A B``
sets locally:

- ``DEP_<ALIAS>_TARGET``: ``host:port`` of the other neuron (required).
- ``DEP_<ALIAS>_AUDIENCE``: when set, every call carries ``authorization: Bearer <ID token>``
  for this audience (the other service's URL), fetched from the metadata server
  (``GCE_METADATA_HOST``, default ``metadata.google.internal``, the variable google-auth
  honours too), cached and refreshed ``DEP_TOKEN_REFRESH_SECONDS`` (300) before it expires.
- ``DEP_<ALIAS>_TLS=true``: TLS with the system's roots (Cloud Run: ``*.run.app:443``);
  ``DEP_<ALIAS>_TLS_CA``: TLS trusting this CA file; with ``DEP_<ALIAS>_TLS_CERT`` and
  ``DEP_<ALIAS>_TLS_KEY`` too: mutual TLS (``scaffold certs create --client`` files).
  None of them: plaintext (local runs).
- ``DEP_<ALIAS>_TIMEOUT``: the deadline of a call that sets none (10 s).

Methods that are safe to repeat (Get and List, and any whose request carries a
``request_id``) are retried on UNAVAILABLE by gRPC itself through a service config; others
never are, so a Create cannot happen twice. Extra client interceptors (e.g. tracing) go in
``interceptors=``; they see every call with its deadline and credentials already set.

A method that calls another neuron ends its own call with ``abort_from(context, error,
"books")`` when that call fails: the caller's mistakes (NOT_FOUND, INVALID_ARGUMENT, ...) keep
their code and message, an unreachable dependency becomes UNAVAILABLE, anything else INTERNAL,
never UNKNOWN and never the dependency's internals.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import NoReturn

import grpc

log = logging.getLogger("scaffold_runtime.neuron_client")

DEFAULT_TIMEOUT = 10.0
DEFAULT_METADATA_HOST = "metadata.google.internal"
IDENTITY_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


# Codes a dependency answers about the request itself: the caller can act on them, so
# abort_from passes them on with their message.
CALLER_ERRORS = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
})
MAX_DETAILS = 500


class ConfigError(RuntimeError):
    """A dependency setting that cannot work; the message names the variable and the fix."""


class TokenError(Exception):
    """No ID token could be had from the metadata server."""


class IdTokenSource:
    """Google ID tokens for one audience from the metadata server, cached until
    ``refresh_before`` seconds before they expire.

    ``format=full`` asks for the ``email`` claim, which the called neuron's allow-list
    (AUTH_ALLOWED_CALLERS) checks. A refresh that fails while the cached token is still valid
    keeps using it; ``token()`` raises TokenError only when there is no valid token at all.
    """

    def __init__(self, audience: str, metadata_host: str | None = None, refresh_before: float = 300.0,
                 timeout: float = 2.0) -> None:
        self.audience = audience
        host = metadata_host or os.environ.get("GCE_METADATA_HOST") or DEFAULT_METADATA_HOST
        query = urllib.parse.urlencode({"audience": audience, "format": "full"})
        self.url = f"http://{host}{IDENTITY_PATH}?{query}"
        self.refresh_before = refresh_before
        self.timeout = timeout
        self.fetches = 0
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def token(self) -> str:
        """A valid ID token; raises TokenError when the metadata server gives none."""
        if time.time() < self._expires - self.refresh_before:
            return self._token
        with self._lock:
            if time.time() < self._expires - self.refresh_before:
                return self._token
            try:
                self._token, self._expires = self._fetch()
            except TokenError:
                if time.time() < self._expires - 10:  # the old one still works: use it
                    return self._token
                raise
            return self._token

    def _fetch(self) -> tuple[str, float]:
        """(token, expiry as a Unix time); raises TokenError."""
        self.fetches += 1
        request = urllib.request.Request(self.url, headers={"Metadata-Flavor": "Google"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # plain http: the metadata server
                token = response.read(65536).decode("ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"metadata server {self.url.split('/computeMetadata')[0]}: {type(exc).__name__}") from None
        return token, _expiry(token)


def _expiry(token: str) -> float:
    """The ``exp`` claim of a JWT (not verified: the called service does that); raises TokenError."""
    try:
        payload = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
        return float(exp)
    except (IndexError, ValueError, KeyError, TypeError):
        raise TokenError("the metadata server answered something that is not an ID token") from None


class _CallDefaults(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Gives each call the default deadline (when it has none) and the ID token (when configured)."""

    def __init__(self, timeout: float, tokens: IdTokenSource | None) -> None:
        self.timeout = timeout
        self.tokens = tokens

    def _details(self, details):
        metadata = list(details.metadata or ())
        if self.tokens is not None:
            try:
                metadata.append(("authorization", f"Bearer {self.tokens.token()}"))
            except TokenError as exc:
                raise _unavailable(str(exc)) from None
        return _Details(details, details.timeout if details.timeout is not None else self.timeout, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


class _Details(grpc.ClientCallDetails):
    def __init__(self, base, timeout, metadata) -> None:
        self.method = base.method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _Unavailable(grpc.RpcError):
    """Raised before a call is sent when no ID token can be had: the caller sees UNAVAILABLE."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


def _unavailable(details: str) -> _Unavailable:
    return _Unavailable(f"no ID token for the call: {details}")


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, details) of a failed call; UNKNOWN and "" for an error that carries no status."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else ""
    if not isinstance(code, grpc.StatusCode):
        return grpc.StatusCode.UNKNOWN, ""
    return code, details if isinstance(details, str) else ""


def abort_from(context: grpc.ServicerContext, error: BaseException, dependency: str,
               passthrough: Collection[grpc.StatusCode] = CALLER_ERRORS) -> NoReturn:
    """End the call being served because a call to the ``dependency`` neuron failed with ``error``.

    A code in ``passthrough`` (default CALLER_ERRORS; add UNAUTHENTICATED where the dependency
    judges the end user's credentials) is answered with the dependency's message, cut to
    MAX_DETAILS characters. UNAVAILABLE, DEADLINE_EXCEEDED and CANCELLED become UNAVAILABLE
    "the DEPENDENCY service is unavailable; retry later" (gRPC's own details name addresses).
    Anything else (UNKNOWN, INTERNAL, UNIMPLEMENTED, and UNAUTHENTICATED or PERMISSION_DENIED,
    which mean this neuron's own credentials were refused) becomes INTERNAL "the DEPENDENCY
    service failed", logged with the dependency's code and message. Never returns: raises
    what ``context.abort`` raises.
    """
    code, details = status_of(error)
    if code in passthrough:
        context.abort(code, details[:MAX_DETAILS] or f"the {dependency} service answered {code.name}")
    log.warning("call to %s failed: %s %s", dependency, code.name, details[:MAX_DETAILS])
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        context.abort(grpc.StatusCode.UNAVAILABLE, f"the {dependency} service is unavailable; retry later")
    context.abort(grpc.StatusCode.INTERNAL, f"the {dependency} service failed")


def service_config(retryable: Iterable[str]) -> str:
    """The gRPC service config (JSON) retrying ``retryable`` methods (``/pkg.Service/Method``)
    on UNAVAILABLE; the other methods get no retry policy."""
    names = []
    for path in sorted(set(retryable)):
        service, _, method = path.lstrip("/").partition("/")
        names.append({"service": service, "method": method})
    configs = [{"name": names, "retryPolicy": RETRY_POLICY}] if names else []
    return json.dumps({"methodConfig": configs})


def _env(alias: str, key: str) -> str:
    return os.environ.get(f"DEP_{alias.upper()}_{key}", "").strip()


def _read(variable: str, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"{variable}={path}: cannot read it ({exc.strerror or exc})") from None


def _credentials(alias: str) -> grpc.ChannelCredentials | None:
    """TLS credentials from DEP_<ALIAS>_TLS / _TLS_CA / _TLS_CERT / _TLS_KEY; None: plaintext."""
    prefix = f"DEP_{alias.upper()}_TLS"
    ca, cert, key = _env(alias, "TLS_CA"), _env(alias, "TLS_CERT"), _env(alias, "TLS_KEY")
    system = _env(alias, "TLS").lower() in ("1", "true", "yes", "on")
    if bool(cert) != bool(key):
        raise ConfigError(f"set both {prefix}_CERT and {prefix}_KEY (mutual TLS), or neither")
    if not (system or ca or cert):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(f"{prefix}_CA", ca) if ca else None,
        private_key=_read(f"{prefix}_KEY", key) if key else None,
        certificate_chain=_read(f"{prefix}_CERT", cert) if cert else None,
    )


class NeuronClient:
    """A channel to another neuron with its credentials, default deadline and retry policy.

    ``stubs``: {attribute: stub class}, set as attributes (``client.books_service``);
    ``retryable``: methods safe to repeat (``/pkg.Service/Method``). Raises ConfigError when
    the environment does not say where the other neuron is or names unreadable files.
    """

    def __init__(self, alias: str, stubs: dict[str, Callable], retryable: Sequence[str] = (), *,
                 interceptors: Sequence = (), target: str | None = None) -> None:
        self.alias = alias
        self.target = target or _env(alias, "TARGET")
        if not self.target:
            raise ConfigError(f"DEP_{alias.upper()}_TARGET is not set: it says where the {alias} neuron listens "
                              f"(host:port); `scaffold neuron run` and Terraform set it")
        timeout_text = _env(alias, "TIMEOUT")
        try:
            self.timeout = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT
        except ValueError:
            raise ConfigError(f"DEP_{alias.upper()}_TIMEOUT={timeout_text!r} is not a number of seconds") from None
        if self.timeout <= 0:
            raise ConfigError(f"DEP_{alias.upper()}_TIMEOUT must be above 0 seconds")
        audience = _env(alias, "AUDIENCE")
        refresh = float(os.environ.get("DEP_TOKEN_REFRESH_SECONDS", "300") or 300)
        self.tokens = IdTokenSource(audience, refresh_before=refresh) if audience else None
        options = [("grpc.enable_retries", 1), ("grpc.service_config", service_config(retryable)),
                   ("grpc.max_receive_message_length", 4 * 1024 * 1024)]
        credentials = _credentials(alias)
        if credentials is None:
            self._raw = grpc.insecure_channel(self.target, options=options)
        else:
            self._raw = grpc.secure_channel(self.target, credentials, options=options)
        self.channel = grpc.intercept_channel(self._raw, _CallDefaults(self.timeout, self.tokens), *interceptors)
        for attr, stub in stubs.items():
            setattr(self, attr, stub(self.channel))

    def close(self) -> None:
        self._raw.close()


class Clients:
    """The clients of every dependency of a neuron, each made on first use (``clients.books``).

    ``factories``: {alias: callable(interceptors) -> NeuronClient}; the generated
    ``deps_clients.py`` supplies them. Unknown aliases raise AttributeError.
    """

    def __init__(self, factories: dict[str, Callable], interceptors: Sequence = ()) -> None:
        self._factories = dict(factories)
        self._interceptors = tuple(interceptors)
        self._made: dict[str, NeuronClient] = {}
        self._lock = threading.Lock()

    def __getattr__(self, alias: str) -> NeuronClient:
        if alias.startswith("_") or alias not in self._factories:
            raise AttributeError(f"this neuron has no dependency {alias!r} (`scaffold neuron depend` adds one)")
        with self._lock:
            if alias not in self._made:
                self._made[alias] = self._factories[alias](self._interceptors)
            return self._made[alias]

    def close(self) -> None:
        with self._lock:
            for client in self._made.values():
                client.close()
            self._made.clear()
