"""Per-call authentication, chosen by AUTH_MODE (unset: none).

- ``api-key``: callers send ``x-api-key`` metadata; valid keys come from API_KEYS
  (comma-separated) or API_KEYS_FILE (one per line, e.g. a Secret Manager secret mounted as a
  file), never from the image. Keys are compared in constant time.
- ``id-token``: callers send ``authorization: Bearer <Google-signed ID token>`` (what Cloud Run
  service-to-service calls use); the token is verified with google-auth against AUTH_AUDIENCE
  (the service URL). AUTH_CERTS_URL overrides where the signing certificates come from; they
  are cached for their Cache-Control max-age and fetched with an AUTH_CERTS_TIMEOUT (2 s) limit.
  AUTH_ALLOWED_CALLERS (comma-separated service-account emails) admits only those identities:
  a valid token of anyone else is PERMISSION_DENIED. Unset, any valid token for the audience
  is admitted (Cloud Run's IAM invoker check is then the only gate; a warning says so).

Missing credentials: UNAUTHENTICATED; wrong ones: PERMISSION_DENIED; neither says why, so a
caller learns nothing about valid keys. Health stays open (probes need it); reflection needs
credentials too unless REFLECTION_PUBLIC=true (it describes the API, and its streams hold a worker).
The caller's identity is ``scaffold_runtime.auth.caller()`` inside methods and goes into call logs.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time

import grpc

from scaffold_runtime.wrapping import MethodInterceptor, rewrap

log = logging.getLogger("scaffold_runtime.auth")
_CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
HEALTH_PREFIX = "/grpc.health."
REFLECTION_PREFIX = "/grpc.reflection."
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
        """The valid keys. A key file that cannot be read (removed, unreadable) keeps the last
        good keys and logs a warning once; at start-up it raises RuntimeError."""
        if self._path:
            try:
                mtime = os.stat(self._path).st_mtime
                if mtime != self._mtime:
                    with self._lock, open(self._path, encoding="utf-8") as fh:
                        self._from_file = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
                        self._mtime = mtime
            except (OSError, UnicodeDecodeError) as exc:
                if self._mtime == -1.0:
                    raise RuntimeError(f"API_KEYS_FILE={self._path}: cannot read it ({exc})") from None
                if self._mtime != -2.0:
                    log.warning("API_KEYS_FILE %s cannot be read (%s): keeping the last keys read", self._path,
                                type(exc).__name__)
                    self._mtime = -2.0  # warned; a readable file again is re-read (its mtime differs)
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
    """Google-signed ID tokens, verified against certificates fetched from ``certs_url`` and
    cached for their Cache-Control max-age. A token that is not an RS256 JWT whose key id is
    among the cached certificates is refused without a fetch; a fetch that fails (bounded by
    ``timeout`` s) is not retried for ``RETRY_AFTER`` s, so a slow or broken endpoint costs
    callers at most one wait."""

    DEFAULT_MAX_AGE = 300.0
    RETRY_AFTER = 5.0

    def __init__(self, audience: str, certs_url: str = DEFAULT_CERTS_URL, timeout: float = 2.0,
                 allowed_callers: str | None = None) -> None:
        if not audience:
            raise RuntimeError("AUTH_MODE=id-token needs AUTH_AUDIENCE (the service URL callers ask tokens for)")
        import requests

        self.audience = audience
        self.allowed = allowed(allowed_callers)
        self.certs_url = certs_url
        self.timeout = timeout
        self.fetches = 0
        self._session = requests.Session()
        self._certs: dict[str, str] = {}
        self._fresh_until = 0.0  # monotonic time until which _certs (or a failure) stands
        self._lock = threading.Lock()

    def _certificates(self) -> dict[str, str]:
        """{key id: PEM certificate}; raises AuthError(UNAVAILABLE) when none can be had."""
        if time.monotonic() >= self._fresh_until:
            with self._lock:
                if time.monotonic() >= self._fresh_until:
                    self._fetch()
        if not self._certs:
            raise AuthError(grpc.StatusCode.UNAVAILABLE)
        return self._certs

    def _fetch(self) -> None:
        import re

        import requests

        self.fetches += 1
        try:
            response = self._session.get(self.certs_url, timeout=self.timeout)
            response.raise_for_status()
            certs = response.json()
            if not isinstance(certs, dict) or not all(isinstance(v, str) for v in certs.values()):
                raise ValueError("not a {kid: certificate} object")
        except (requests.RequestException, ValueError) as exc:
            log.warning("id token certificates unavailable: %s", type(exc).__name__)
            self._fresh_until = time.monotonic() + self.RETRY_AFTER  # keep any certificates we had
            return
        match = re.search(r"max-age=(\d+)", response.headers.get("Cache-Control", ""))
        self._certs = certs
        self._fresh_until = time.monotonic() + (float(match.group(1)) if match else self.DEFAULT_MAX_AGE)

    @staticmethod
    def _key_id(token: str) -> str:
        """The key id of an RS256 JWT; raises AuthError(PERMISSION_DENIED) for anything else."""
        import base64
        import json

        try:
            head = token.split(".")
            if len(head) != 3:
                raise ValueError("not a JWT")
            header = json.loads(base64.urlsafe_b64decode(head[0] + "=" * (-len(head[0]) % 4)))
            if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
                raise ValueError("not RS256 with a key id")
            return header["kid"]
        except (ValueError, AttributeError, UnicodeDecodeError):
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED) from None

    def check(self, metadata: dict[str, str]) -> str:
        from google.auth import exceptions as auth_exceptions
        from google.auth import jwt

        header = metadata.get("authorization", "")
        if not header:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED)
        kid = self._key_id(token)
        certs = self._certificates()
        if kid not in certs:
            log.info("id token refused: unknown key id")
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED)
        try:
            claims = jwt.decode(token, certs={kid: certs[kid]}, audience=self.audience, clock_skew_in_seconds=10)
        except (ValueError, auth_exceptions.GoogleAuthError) as exc:  # bad signature, audience, expiry, format
            log.info("id token refused: %s", type(exc).__name__)
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED) from None
        if claims.get("iss") not in GOOGLE_ISSUERS or claims.get("exp", 0) < time.time() - 10:
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED)
        email = claims.get("email")
        if self.allowed is not None and not (isinstance(email, str) and claims.get("email_verified") is True
                                             and email.lower() in self.allowed):
            log.info("id token refused: caller not in AUTH_ALLOWED_CALLERS")
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED)
        return str(email or claims.get("sub") or "id-token")


def allowed(callers: str | None) -> frozenset[str] | None:
    """The AUTH_ALLOWED_CALLERS emails (lower-cased), or None when unset (anyone with a valid
    token); raises RuntimeError for a setting that names nobody or something not an email."""
    if callers is None or not callers.strip():
        return None
    emails = frozenset(c.strip().lower() for c in callers.split(",") if c.strip())
    bad = sorted(e for e in emails if "@" not in e or " " in e)
    if not emails or bad:
        raise RuntimeError(f"AUTH_ALLOWED_CALLERS must list service-account emails, comma-separated; "
                           f"not {', '.join(bad) or callers!r}")
    return emails


def from_environment():
    """The checker AUTH_MODE asks for, or None."""
    mode = os.environ.get("AUTH_MODE", "").strip().lower()
    if mode in ("", "none"):
        return None
    if mode == "api-key":
        return ApiKeys(os.environ.get("API_KEYS", ""), os.environ.get("API_KEYS_FILE", ""))
    if mode == "id-token":
        checker = IdTokens(os.environ.get("AUTH_AUDIENCE", ""), os.environ.get("AUTH_CERTS_URL") or DEFAULT_CERTS_URL,
                           float(os.environ.get("AUTH_CERTS_TIMEOUT", "2") or 2), os.environ.get("AUTH_ALLOWED_CALLERS"))
        if checker.allowed is None:
            log.warning("AUTH_ALLOWED_CALLERS is not set: any valid ID token for %s is admitted", checker.audience)
        return checker
    raise RuntimeError(f"unknown AUTH_MODE {mode!r}: use api-key, id-token or leave it unset")


class AuthInterceptor(MethodInterceptor):
    """Checks credentials before the method runs; wraps each method's handler once."""

    def __init__(self, checker, reflection_public: bool | None = None) -> None:
        super().__init__()
        self.checker = checker
        if reflection_public is None:
            reflection_public = os.environ.get("REFLECTION_PUBLIC", "").strip().lower() in ("1", "true", "yes", "on")
        self._open_prefixes = (HEALTH_PREFIX, REFLECTION_PREFIX) if reflection_public else (HEALTH_PREFIX,)

    def _open(self, method: str) -> bool:
        """Whether ``method`` is served without credentials."""
        return method.startswith(self._open_prefixes)

    def _authenticate(self, context) -> contextvars.Token:
        try:
            identity = self.checker.check(dict(context.invocation_metadata()))
        except AuthError as err:
            log.warning("call refused: %s", err.code.name, extra={"fields": {"grpc.code": err.code.name, "peer": context.peer()}})
            messages = {grpc.StatusCode.UNAUTHENTICATED: "unauthenticated", grpc.StatusCode.UNAVAILABLE: "try again later"}
            context.abort(err.code, messages.get(err.code, "permission denied"))
        return _CALLER.set(identity)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if self._open(method):
            return handler
        authenticate = self._authenticate

        def unary(inner):
            def behaviour(request, context):
                token = authenticate(context)
                try:
                    return inner(request, context)
                finally:
                    _CALLER.reset(token)

            return behaviour

        def stream(inner):
            def behaviour(request, context):
                token = authenticate(context)
                try:
                    yield from inner(request, context)
                finally:
                    _CALLER.reset(token)

            return behaviour

        return rewrap(handler, unary, stream)
