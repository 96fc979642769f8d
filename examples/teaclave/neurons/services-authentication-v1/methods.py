"""Servicers for xmpl.tc.services-authentication-v1: your code.

Created by scaffold; from now on this file is yours. `scaffold neuron update` only adds a
stub for each new RPC and never changes what you wrote.

Teaclave's authentication service in miniature, on Firestore (this neuron's own database):
- ``users/{id}``: the password as an scrypt hash with a random salt of its own (never the
  password), and the scrypt cost it was hashed with, so the cost can rise later;
- ``tokens/{sha256 of the token}``: the user and ``expire_time`` of each login. Only the hash
  is stored, so whoever reads the database cannot use the tokens; a Firestore TTL policy on
  ``expire_time`` can purge old ones.
Secrets are compared in constant time, and a login for an unknown id costs the same scrypt
work as one with a wrong password, so neither timing nor message tells which ids exist.
Setting: ``TOKEN_TTL_SECONDS`` (3600), how long a token is accepted after the login.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import os
import re
import secrets

import grpc
from google.api_core import exceptions as gexc
from xmpl.tc.services.authentication.v1 import authentication_pb2

import base

log = logging.getLogger("authentication")
USERS, TOKENS = "users", "tokens"
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
MIN_PASSWORD, MAX_PASSWORD = 8, 256
MAX_TOKEN = 128
SCRYPT = {"n": 2**14, "r": 8, "p": 1}  # 16 MiB of memory per hash (RFC 7914's interactive cost)
WRONG_CREDENTIALS = "wrong user id or password"


def hash_password(
    password: str, salt: bytes | None = None, n: int = SCRYPT["n"], r: int = SCRYPT["r"], p: int = SCRYPT["p"]
) -> dict:
    """The record stored for ``password``: scrypt parameters, salt (16 random bytes unless
    given) and the 32-byte hash."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=2 * 128 * r * n, dklen=32)
    return {"scheme": "scrypt", "n": n, "r": r, "p": p, "salt": salt, "hash": digest}


def verify_password(password: str, record: dict) -> bool:
    """Whether ``password`` hashes to ``record["hash"]`` with the record's salt and cost;
    compared in constant time."""
    again = hash_password(password, record["salt"], record["n"], record["r"], record["p"])
    return hmac.compare_digest(again["hash"], record["hash"])


# Checked on logins for ids that do not exist, so they take as long as a wrong password.
_NOBODY = hash_password(secrets.token_urlsafe(16))


def token_key(token: str) -> str:
    """The document id of a token: its SHA-256, so the database never holds a usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_ttl() -> float:
    """TOKEN_TTL_SECONDS (default 3600); raises RuntimeError for anything but a positive number."""
    text = os.environ.get("TOKEN_TTL_SECONDS", "").strip() or "3600"
    try:
        ttl = float(text)
    except ValueError:
        ttl = 0.0
    if not ttl > 0 or ttl == float("inf"):
        raise RuntimeError(f"TOKEN_TTL_SECONDS={text!r}: use a number of seconds above 0, e.g. 3600")
    return ttl


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class AuthenticationService(base.AuthenticationServiceBase):
    """Users, passwords and login tokens."""

    def __init__(self, deps) -> None:
        super().__init__(deps)
        self.ttl = token_ttl()
        self.db = deps.firestore

    def _firestore(self, context: grpc.ServicerContext, op, *args):
        """``op(*args)``; a Firestore failure other than AlreadyExists ends the call UNAVAILABLE."""
        try:
            return op(*args)
        except gexc.AlreadyExists:
            raise
        except gexc.GoogleAPICallError as exc:
            log.warning("firestore unavailable: %s", type(exc).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the user store is unavailable; retry later")

    def UserRegister(
        self, request: authentication_pb2.UserRegisterRequest, context: grpc.ServicerContext
    ) -> authentication_pb2.UserRegisterResponse:
        """Registers a user. INVALID_ARGUMENT for a bad id or password; ALREADY_EXISTS when the id is taken."""
        if not USER_ID.fullmatch(request.id):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "id must be 1-64 letters, digits and . _ @ + -, starting with a letter or a digit",
            )
        if not MIN_PASSWORD <= len(request.password) <= MAX_PASSWORD:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters long"
            )
        record = {"id": request.id, "password": hash_password(request.password), "create_time": now()}
        try:
            self._firestore(context, self.db.collection(USERS).document(request.id).create, record)
        except gexc.AlreadyExists:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"user {request.id!r} already exists")
        return authentication_pb2.UserRegisterResponse()

    def UserLogin(
        self, request: authentication_pb2.UserLoginRequest, context: grpc.ServicerContext
    ) -> authentication_pb2.UserLoginResponse:
        """A new token for the user. UNAUTHENTICATED for an unknown id or a wrong password (one message for both)."""
        record = None
        if USER_ID.fullmatch(request.id) and len(request.password) <= MAX_PASSWORD:
            snap = self._firestore(context, self.db.collection(USERS).document(request.id).get)
            record = snap.to_dict()["password"] if snap.exists else None
        if not verify_password(request.password[:MAX_PASSWORD], record or _NOBODY) or record is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, WRONG_CREDENTIALS)
        token = secrets.token_urlsafe(32)
        expires = now() + datetime.timedelta(seconds=self.ttl)
        self._firestore(
            context,
            self.db.collection(TOKENS).document(token_key(token)).set,
            {"user": request.id, "expire_time": expires},
        )
        response = authentication_pb2.UserLoginResponse(token=token)
        response.expire_time.FromDatetime(expires)
        return response

    def UserAuthenticate(
        self, request: authentication_pb2.UserAuthenticateRequest, context: grpc.ServicerContext
    ) -> authentication_pb2.UserAuthenticateResponse:
        """accept=true when ``token`` is ``id``'s and has not expired; otherwise accept=false and
        the reason. INVALID_ARGUMENT when id or token is missing."""
        if not request.id or not request.token:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id and token are both required")
        refused = authentication_pb2.UserAuthenticateResponse(
            accept=False, reason="the token is not valid; log in again"
        )
        if len(request.token) > MAX_TOKEN:
            return refused
        ref = self.db.collection(TOKENS).document(token_key(request.token))
        snap = self._firestore(context, ref.get)
        if not snap.exists or not hmac.compare_digest(snap.get("user").encode(), request.id.encode()):
            return refused
        if snap.get("expire_time") <= now():
            self._firestore(context, ref.delete)
            return authentication_pb2.UserAuthenticateResponse(
                accept=False, reason="the token has expired; log in again"
            )
        return authentication_pb2.UserAuthenticateResponse(accept=True)
