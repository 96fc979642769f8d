"""Tests for xmpl.tc.services.frontend.v1.FrontendService: the whole platform, end to end.

The frontend runs in this process; the authentication and management neurons run as their
own servers on 127.0.0.1 (conftest.py), all on the Firestore emulator. Created by scaffold,
then written by hand for the example.
"""

from __future__ import annotations

import datetime

import grpc
import pytest
from conftest import AUTH, FRONTEND, FRONTEND_SA, MANAGEMENT, audience
from xmpl.tc.resources.functions.v1 import functions_pb2, functions_pb2_grpc
from xmpl.tc.services.authentication.v1 import authentication_pb2, authentication_pb2_grpc
from xmpl.tc.services.frontend.v1 import frontend_pb2 as pb
from xmpl.tc.services.frontend.v1 import frontend_pb2_grpc

PASSWORD = "correct horse battery"
NO_TOKEN = "send your user id and token as x-teaclave-user-id and x-teaclave-token metadata (UserLogin gives a token)"


@pytest.fixture
def stub(channel):
    return frontend_pb2_grpc.FrontendServiceStub(channel)


def assert_code(call, code: grpc.StatusCode) -> grpc.RpcError:
    """Run ``call``; it must fail with ``code``. Returns the error (for its details)."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value


def login(stub, name: str = "alice") -> tuple[tuple[str, str], ...]:
    """Log ``name`` in; the metadata for their calls."""
    token = stub.UserLogin(pb.UserLoginRequest(id=name, password=PASSWORD), timeout=30).token
    return (("x-teaclave-user-id", name), ("x-teaclave-token", token))


def user(stub, name: str = "alice") -> tuple[tuple[str, str], ...]:
    """Register and log ``name`` in; the metadata for their calls."""
    stub.UserRegister(pb.UserRegisterRequest(id=name, password=PASSWORD), timeout=30)
    return login(stub, name)


def echo(function_id: str = "echo", public: bool = False) -> pb.RegisterFunctionRequest:
    return pb.RegisterFunctionRequest(
        function_id=function_id,
        function=pb.Function(display_name="Echo", executor_type="builtin", arguments=["message"], public=public),
    )


def test_register_login_and_forwarded_calls(stub):
    alice = user(stub)
    made = stub.RegisterFunction(echo(), metadata=alice)
    assert (made.name, made.owner, made.display_name, list(made.arguments)) == (
        "users/alice/functions/echo",
        "alice",
        "Echo",
        ["message"],
    )
    assert made.create_time.seconds > 0
    assert stub.GetFunction(pb.GetFunctionRequest(name="users/alice/functions/echo"), metadata=alice) == made
    assert list(stub.ListFunctions(pb.ListFunctionsRequest(), metadata=alice).functions) == [made]


def test_the_owner_is_the_caller_whatever_the_request_says(stub):
    alice = user(stub)
    request = echo()
    request.function.owner = "bob"
    request.function.name = "users/bob/functions/echo"
    made = stub.RegisterFunction(request, metadata=alice)
    assert (made.name, made.owner) == ("users/alice/functions/echo", "alice")


@pytest.mark.parametrize("metadata", [(), (("x-teaclave-user-id", "alice"),), (("x-teaclave-token", "t"),)])
def test_a_missing_token_is_unauthenticated(stub, metadata):
    user(stub)
    for call in (
        lambda: stub.RegisterFunction(echo(), metadata=metadata),
        lambda: stub.GetFunction(pb.GetFunctionRequest(name="users/alice/functions/echo"), metadata=metadata),
        lambda: stub.ListFunctions(pb.ListFunctionsRequest(), metadata=metadata),
    ):
        assert assert_code(call, grpc.StatusCode.UNAUTHENTICATED).details() == NO_TOKEN


@pytest.mark.parametrize("name, password", [("alice", "not the password"), ("mallory", PASSWORD)])
def test_bad_credentials_are_unauthenticated(stub, name, password):
    user(stub)
    err = assert_code(
        lambda: stub.UserLogin(pb.UserLoginRequest(id=name, password=password)), grpc.StatusCode.UNAUTHENTICATED
    )
    assert err.details() == "wrong user id or password"


def test_a_forged_token_or_someone_elses_is_unauthenticated(stub):
    alice = dict(user(stub))
    bob = dict(user(stub, "bob"))
    for metadata in (
        (("x-teaclave-user-id", "alice"), ("x-teaclave-token", "forged")),
        (("x-teaclave-user-id", "alice"), ("x-teaclave-token", bob["x-teaclave-token"])),
        (("x-teaclave-user-id", "carol"), ("x-teaclave-token", alice["x-teaclave-token"])),
    ):
        err = assert_code(lambda m=metadata: stub.RegisterFunction(echo(), metadata=m), grpc.StatusCode.UNAUTHENTICATED)
        assert err.details() == "the token is not valid; log in again"


def test_an_expired_token_is_unauthenticated_and_says_so(stub, emulator):
    from google.cloud import firestore

    alice = user(stub)
    tokens = firestore.Client(project=emulator.project, database=AUTH).collection("tokens")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    for doc in tokens.stream():  # the clock moves on: as if TOKEN_TTL_SECONDS had passed
        doc.reference.update({"expire_time": past})
    err = assert_code(
        lambda: stub.ListFunctions(pb.ListFunctionsRequest(), metadata=alice), grpc.StatusCode.UNAUTHENTICATED
    )
    assert err.details() == "the token has expired; log in again"
    assert stub.ListFunctions(pb.ListFunctionsRequest(), metadata=login(stub)).functions == []  # log in again


def test_not_found_from_management_is_a_clean_not_found(stub):
    alice, bob = user(stub), user(stub, "bob")
    stub.RegisterFunction(echo("private"), metadata=bob)
    stub.RegisterFunction(echo("shared", public=True), metadata=bob)
    for name in ("users/alice/functions/nothing-here", "users/bob/functions/private"):  # missing, or bob's private
        err = assert_code(
            lambda n=name: stub.GetFunction(pb.GetFunctionRequest(name=n), metadata=alice), grpc.StatusCode.NOT_FOUND
        )
        assert err.details() == f"{name!r} not found"
    assert stub.GetFunction(pb.GetFunctionRequest(name="users/bob/functions/shared"), metadata=alice).owner == "bob"
    assert stub.GetFunction(pb.GetFunctionRequest(name="users/bob/functions/private"), metadata=bob).owner == "bob"


def test_bad_input_keeps_managements_code_and_message(stub):
    alice = user(stub)
    request = echo()
    request.function.ClearField("executor_type")
    err = assert_code(lambda: stub.RegisterFunction(request, metadata=alice), grpc.StatusCode.INVALID_ARGUMENT)
    assert "executor_type" in err.details()
    stub.RegisterFunction(echo(), metadata=alice)
    err = assert_code(lambda: stub.RegisterFunction(echo(), metadata=alice), grpc.StatusCode.ALREADY_EXISTS)
    assert err.details() == "'users/alice/functions/echo' already exists"
    err = assert_code(
        lambda: stub.RegisterFunction(echo("Not An Id"), metadata=alice), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "function_id" in err.details()
    err = assert_code(
        lambda: stub.GetFunction(pb.GetFunctionRequest(), metadata=alice), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert err.details() == "name is required: users/{user}/functions/{function}"
    err = assert_code(
        lambda: stub.GetFunction(pb.GetFunctionRequest(name="functions/echo"), metadata=alice),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "users/{user}/functions/{function}" in err.details()
    err = assert_code(
        lambda: stub.UserRegister(pb.UserRegisterRequest(id="alice", password=PASSWORD)), grpc.StatusCode.ALREADY_EXISTS
    )
    assert err.details() == "user 'alice' already exists"


def test_list_shows_only_the_callers_functions_a_page_at_a_time(stub):
    alice, bob = user(stub), user(stub, "bob")
    for name in ("a", "b", "c"):
        stub.RegisterFunction(echo(name), metadata=alice)
    stub.RegisterFunction(echo("d", public=True), metadata=bob)
    first = stub.ListFunctions(pb.ListFunctionsRequest(page_size=2), metadata=alice)
    assert [f.name for f in first.functions] == [
        "users/alice/functions/a",
        "users/alice/functions/b",
    ] and first.next_page_token
    rest = stub.ListFunctions(pb.ListFunctionsRequest(page_size=2, page_token=first.next_page_token), metadata=alice)
    assert [f.name for f in rest.functions] == ["users/alice/functions/c"] and not rest.next_page_token
    assert [f.name for f in stub.ListFunctions(pb.ListFunctionsRequest(), metadata=bob).functions] == [
        "users/bob/functions/d"
    ]
    # alice's page token shows bob nothing of hers: it is bound to her collection
    assert_code(
        lambda: stub.ListFunctions(pb.ListFunctionsRequest(page_token=first.next_page_token), metadata=bob),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_an_unreachable_dependency_is_unavailable(stub, start):
    alice = user(stub)
    lonely = start(FRONTEND, DEP_MANAGEMENT_TARGET="127.0.0.1:1", DEP_MANAGEMENT_TIMEOUT="5")
    with grpc.insecure_channel(lonely.target) as channel:
        front = frontend_pb2_grpc.FrontendServiceStub(channel)
        err = assert_code(
            lambda: front.RegisterFunction(echo(), metadata=alice, timeout=60), grpc.StatusCode.UNAVAILABLE
        )
    assert err.details() == "the management service is unavailable; retry later"


# As on Cloud Run: the authentication and management neurons admit only the frontend.


def test_with_id_tokens_the_frontend_is_let_through(platform):
    with grpc.insecure_channel(platform[FRONTEND].target) as channel:
        front = frontend_pb2_grpc.FrontendServiceStub(channel)
        alice = user(front)
        made = front.RegisterFunction(echo(), metadata=alice, timeout=30)
        assert (
            front.GetFunction(pb.GetFunctionRequest(name="users/alice/functions/echo"), metadata=alice, timeout=30)
            == made
        )


def test_a_caller_that_is_not_the_frontend_is_refused(platform, google):
    register = authentication_pb2.UserRegisterRequest(id="mallory", password=PASSWORD)
    listing = functions_pb2.ListFunctionsRequest(parent="users/mallory")
    with grpc.insecure_channel(platform[AUTH].target) as a, grpc.insecure_channel(platform[MANAGEMENT].target) as m:
        auth = authentication_pb2_grpc.AuthenticationServiceStub(a)
        management = functions_pb2_grpc.FunctionsServiceStub(m)
        intruder = "intruder@xmpl-tc-dev.iam.gserviceaccount.com"
        for call, folder in (
            (lambda md: auth.UserRegister(register, metadata=md), AUTH),
            (lambda md: management.ListFunctions(listing, metadata=md), MANAGEMENT),
        ):
            token = google.token(intruder, audience(folder))
            err = assert_code(
                lambda c=call, t=token: c((("authorization", f"Bearer {t}"),)), grpc.StatusCode.PERMISSION_DENIED
            )
            assert intruder not in err.details()
            assert_code(lambda c=call: c(()), grpc.StatusCode.UNAUTHENTICATED)
            # the frontend's own identity, but a token minted for another service: refused too
            other = AUTH if folder == MANAGEMENT else MANAGEMENT
            wrong_audience = google.token(FRONTEND_SA, audience(other))
            assert_code(
                lambda c=call, t=wrong_audience: c((("authorization", f"Bearer {t}"),)),
                grpc.StatusCode.PERMISSION_DENIED,
            )
            call((("authorization", f"Bearer {google.token(FRONTEND_SA, audience(folder))}"),))


def test_a_frontend_running_as_another_identity_fails_cleanly(platform, google, start):
    impostor = start(
        FRONTEND,
        GCE_METADATA_HOST=google.metadata("impostor@xmpl-tc-dev.iam.gserviceaccount.com"),
        DEP_AUTH_TARGET=platform[AUTH].target,
        DEP_AUTH_AUDIENCE=audience(AUTH),
        DEP_MANAGEMENT_TARGET=platform[MANAGEMENT].target,
        DEP_MANAGEMENT_AUDIENCE=audience(MANAGEMENT),
    )
    with grpc.insecure_channel(impostor.target) as channel:
        front = frontend_pb2_grpc.FrontendServiceStub(channel)
        err = assert_code(
            lambda: front.UserRegister(pb.UserRegisterRequest(id="alice", password=PASSWORD), timeout=30),
            grpc.StatusCode.INTERNAL,
        )
    assert err.details() == "the authentication service failed"
    assert "PERMISSION_DENIED" in impostor.output()  # its log says why; the caller is not told
