"""Tests for xmpl.tc.services.authentication.v1.AuthenticationService, over a real channel
against the Firestore emulator.

Created by scaffold, then written by hand for the example.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from xmpl.tc.services.authentication.v1 import authentication_pb2 as pb
from xmpl.tc.services.authentication.v1 import authentication_pb2_grpc

import methods

NEURON = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


@pytest.fixture
def stub(channel):
    return authentication_pb2_grpc.AuthenticationServiceStub(channel)


@pytest.fixture
def db(emulator):
    """The neuron's own database on the emulator, as the server sees it."""
    from google.cloud import firestore

    import server

    database = os.environ.get("FIRESTORE_DATABASE") or server.DATABASE
    return firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"], database=database)


def assert_code(call, code: grpc.StatusCode) -> grpc.RpcError:
    """Run ``call``; it must fail with ``code``. Returns the error (for its details)."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value


def register(stub, user: str = "alice", password: str = PASSWORD) -> None:
    stub.UserRegister(pb.UserRegisterRequest(id=user, password=password))


def login(stub, user: str = "alice", password: str = PASSWORD) -> pb.UserLoginResponse:
    return stub.UserLogin(pb.UserLoginRequest(id=user, password=password))


def authenticate(stub, user: str, token: str) -> pb.UserAuthenticateResponse:
    return stub.UserAuthenticate(pb.UserAuthenticateRequest(id=user, token=token))


def test_register_login_authenticate(stub):
    register(stub)
    before = datetime.datetime.now(datetime.UTC)
    reply = login(stub)
    after = datetime.datetime.now(datetime.UTC)
    assert len(reply.token) >= 40
    ttl = datetime.timedelta(seconds=3600)
    assert before + ttl <= reply.expire_time.ToDatetime(datetime.UTC) <= after + ttl
    assert authenticate(stub, "alice", reply.token) == pb.UserAuthenticateResponse(accept=True)
    assert login(stub).token != reply.token  # every login has its own token


def test_wrong_password_and_unknown_user_get_the_same_answer(stub):
    register(stub)
    wrong = assert_code(lambda: login(stub, password="not the password"), grpc.StatusCode.UNAUTHENTICATED)
    unknown = assert_code(lambda: login(stub, user="mallory"), grpc.StatusCode.UNAUTHENTICATED)
    invalid = assert_code(lambda: login(stub, user="../users"), grpc.StatusCode.UNAUTHENTICATED)
    assert wrong.details() == unknown.details() == invalid.details() == "wrong user id or password"


@pytest.mark.parametrize("user, token", [("bob", "real"), ("alice", "forged-token"), ("alice", "x" * 5000)])
def test_a_token_of_someone_else_or_made_up_is_refused(stub, user, token):
    register(stub)
    register(stub, "bob")
    real = login(stub).token
    reply = authenticate(stub, user, real if token == "real" else token)
    assert reply == pb.UserAuthenticateResponse(accept=False, reason="the token is not valid; log in again")


def test_an_expired_token_is_refused_and_removed(stub, db):
    register(stub)
    token = login(stub).token
    doc = db.collection(methods.TOKENS).document(methods.token_key(token))
    doc.update({"expire_time": datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)})
    reply = authenticate(stub, "alice", token)
    assert reply == pb.UserAuthenticateResponse(accept=False, reason="the token has expired; log in again")
    assert not doc.get().exists
    assert authenticate(stub, "alice", token).reason == "the token is not valid; log in again"


def test_token_ttl_seconds_sets_the_expiry(emulator, monkeypatch):
    from scaffold_runtime.testing import serve_in_process

    monkeypatch.setenv("TOKEN_TTL_SECONDS", "90")
    with serve_in_process() as (target, _neuron), grpc.insecure_channel(target) as ch:
        stub = authentication_pb2_grpc.AuthenticationServiceStub(ch)
        register(stub)
        before = datetime.datetime.now(datetime.UTC)
        expires = login(stub).expire_time.ToDatetime(datetime.UTC)
        assert before + datetime.timedelta(seconds=90) <= expires <= before + datetime.timedelta(seconds=95)


def test_the_database_holds_no_password_and_no_token(stub, db):
    register(stub)
    register(stub, "bob")  # the same password
    token = login(stub).token
    alice = db.collection(methods.USERS).document("alice").get().to_dict()
    bob = db.collection(methods.USERS).document("bob").get().to_dict()
    assert PASSWORD not in repr(alice) and PASSWORD.encode() not in repr(alice).encode()
    record = alice["password"]
    assert (record["scheme"], record["n"], record["r"], record["p"]) == ("scrypt", 2**14, 8, 1)
    assert len(record["salt"]) == 16 and len(record["hash"]) == 32
    assert record["salt"] != bob["password"]["salt"] and record["hash"] != bob["password"]["hash"]
    assert methods.verify_password(PASSWORD, record) and not methods.verify_password(PASSWORD + "!", record)
    tokens = list(db.collection(methods.TOKENS).stream())
    assert [t.id for t in tokens] == [methods.token_key(token)]
    assert token not in repr(tokens[0].to_dict())


def test_registering_a_taken_id_is_already_exists(stub):
    register(stub)
    err = assert_code(lambda: register(stub, password="another password"), grpc.StatusCode.ALREADY_EXISTS)
    assert err.details() == "user 'alice' already exists"
    assert login(stub).token  # the first password still works


@pytest.mark.parametrize(
    "user, password, message",
    [
        ("", PASSWORD, "id must be"),
        ("a/b", PASSWORD, "id must be"),
        ("__name__", PASSWORD, "id must be"),
        ("x" * 65, PASSWORD, "id must be"),
        ("alice", "short", "password must be 8-256 characters long"),
        ("alice", "p" * 257, "password must be 8-256 characters long"),
    ],
)
def test_bad_registrations_say_what_is_wrong(stub, user, password, message):
    err = assert_code(lambda: register(stub, user, password), grpc.StatusCode.INVALID_ARGUMENT)
    assert message in err.details()


def test_authenticate_needs_both_id_and_token(stub):
    err = assert_code(lambda: authenticate(stub, "alice", ""), grpc.StatusCode.INVALID_ARGUMENT)
    assert err.details() == "id and token are both required"


@pytest.mark.parametrize("value", ["soon", "0", "-5", "inf"])
def test_a_bad_token_ttl_stops_start_up_with_one_line(value):
    env = {**os.environ, "TOKEN_TTL_SECONDS": value, "PORT": "0", "HOST": "127.0.0.1"}
    r = subprocess.run(
        [sys.executable, "server.py"], check=False, cwd=NEURON, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "TOKEN_TTL_SECONDS" in r.stderr + r.stdout and "Traceback" not in r.stderr + r.stdout
