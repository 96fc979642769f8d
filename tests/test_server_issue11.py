"""Issue 11 (and 12.2) attacks on the generated server, each reproduced against a real
generated neuron on 127.0.0.1 and the real Firestore emulator; every loop is bounded.

Figures (RSS, counts) are measured by bench/server_issue11.py and recorded in RELIABILITY.md;
these tests assert behaviour, never timings.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.conftest import _neuron_testing, need
from tests.helpers import ServerProcess, forget_package, free_port, import_stubs

BOOKS = "srvx.br.resources-books-v1"
C = grpc.StatusCode
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SPLIT_MESSAGES = """syntax = "proto3";
package split.v1;
message PingRequest { string text = 1; }
message PingResponse { string text = 1; }
"""
SPLIT_SERVICE = """syntax = "proto3";
package split.v1;
import "split/v1/messages.proto";
service PingService { rpc Ping(PingRequest) returns (PingResponse); }
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with two neurons whose resources share the pattern books/{book}, and a
    neuron whose service file only imports its messages from another file."""
    from generator import cli

    tmp = tmp_path_factory.mktemp("srv")
    old = os.getcwd()
    protos = tmp / "protos/split/v1"
    protos.mkdir(parents=True)
    (protos / "messages.proto").write_text(SPLIT_MESSAGES)
    (protos / "ping.proto").write_text(SPLIT_SERVICE)
    try:
        os.chdir(tmp)
        assert cli.run(["init", "ws", "--org", "srvx", "--product", "br"]) == 0
        os.chdir(tmp / "ws")
        for name in (BOOKS, "srvx.br.resources-books-v2"):
            assert cli.run(["proto", "create", name]) == 0
            assert cli.run(["neuron", "create", name]) == 0
        assert cli.run(["neuron", "create", "--proto", str(protos / "ping.proto"), "-I", str(tmp / "protos"),
                        "--out", "split"]) == 0
    finally:
        os.chdir(old)
    return tmp / "ws/neurons"


@pytest.fixture(scope="module")
def books(ws):
    return ws / "resources-books-v1"


@pytest.fixture(scope="module")
def pb(books):
    return import_stubs(books, "srvx.br.resources.books.v1.books_pb2")


@pytest.fixture(scope="module")
def pb_grpc(books):
    return import_stubs(books, "srvx.br.resources.books.v1.books_pb2_grpc")


@pytest.fixture
def own_emulator():
    """An emulator of this test's own, which the test may pause (SIGSTOP) and resume."""
    testing = _neuron_testing()
    need(testing.emulator_command() is not None, "the Firestore emulator")
    with testing.firestore_emulator() as emu:
        yield emu


def env_for(emu, **extra) -> dict[str, str]:
    return {"FIRESTORE_EMULATOR_HOST": emu.host, "GOOGLE_CLOUD_PROJECT": "demo-local", **extra}


def code_of(fn) -> grpc.StatusCode:
    try:
        fn()
        return C.OK
    except grpc.RpcError as err:
        return err.code()


def health_status(channel, timeout: float = 5.0) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status


def open_reflection_stream(channel, release: threading.Event, metadata=()):
    """A ServerReflectionInfo stream that asks one question and then stays open until
    ``release`` is set; returns the first answer's status code (OK: the stream is open)."""
    from grpc_reflection.v1alpha import reflection_pb2

    def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        release.wait(60)

    call = channel.stream_stream(REFLECTION, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    responses = call(requests(), metadata=metadata, timeout=60)
    try:
        next(responses)
        return C.OK, responses
    except grpc.RpcError as err:
        return err.code(), responses


# 1. Worker-pool starvation through reflection streams.
def test_streams_cannot_take_every_worker(books, pb, pb_grpc, emulator):
    server = ServerProcess(books, env_for(emulator, AUTH_MODE="api-key", API_KEYS="k1", GRPC_MAX_WORKERS="8"))
    release = threading.Event()
    key = (("x-api-key", "k1"),)
    try:
        with grpc.insecure_channel(server.target) as ch:
            anonymous = [open_reflection_stream(ch, release)[0] for _ in range(16)]
            assert set(anonymous) == {C.UNAUTHENTICATED}  # reflection needs credentials when auth is on
            held = [open_reflection_stream(ch, release, key) for _ in range(16)]
            codes = collections.Counter(code for code, _ in held)
            # The default stream limit is a quarter of the workers: 2 of 8.
            assert codes == {C.OK: 2, C.RESOURCE_EXHAUSTED: 14}, codes
            # Unary calls and health still get a worker while the streams stay open.
            assert health_status(ch) == 1
            stub = pb_grpc.BooksServiceStub(ch)
            for _ in range(5):
                stub.ListBooks(pb.ListBooksRequest(), metadata=key, timeout=10)
            release.set()
            for _, responses in held:
                responses.cancel()
    finally:
        release.set()
        out = server.stop()
    assert "Traceback" not in out


def test_reflection_can_be_made_public(books, emulator):
    server = ServerProcess(books, env_for(emulator, AUTH_MODE="api-key", API_KEYS="k1", REFLECTION_PUBLIC="true"))
    release = threading.Event()
    try:
        with grpc.insecure_channel(server.target) as ch:
            code, responses = open_reflection_stream(ch, release)
            assert code is C.OK
            release.set()
            responses.cancel()
    finally:
        release.set()
        server.stop()


def test_limits_that_leave_no_worker_for_health_refuse_to_start(books):
    env = {**os.environ, "PORT": str(free_port()), "HOST": "127.0.0.1", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:1",
           "GRPC_MAX_WORKERS": "8", "GRPC_MAX_CONCURRENT_RPCS": "8"}
    r = subprocess.run([sys.executable, "server.py"], cwd=books, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "GRPC_MAX_CONCURRENT_RPCS=8 must be below GRPC_MAX_WORKERS=8" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


# 2. Unknown method names must not grow the interceptors' caches.
def load_server(root: Path):
    """The neuron's server module, imported in this process (its own runtime/ and stubs)."""
    for top in ("server", "methods", "runtime", "srvx"):
        forget_package(top)
    sys.path[:0] = [str(root), str(root / "protobuf")]
    try:
        return importlib.import_module("server")
    finally:
        sys.path.remove(str(root))
        sys.path.remove(str(root / "protobuf"))


def test_a_flood_of_made_up_method_names_caches_nothing(books, emulator, monkeypatch):
    monkeypatch.setenv("AUTH_MODE", "api-key")
    monkeypatch.setenv("API_KEYS", "k1")
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", emulator.host)
    server = load_server(books)
    neuron = server.Neuron("127.0.0.1", 0)
    neuron.start(grace=1.0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{neuron.port}") as ch:
            codes = collections.Counter()
            for i in range(2000):
                call = ch.unary_unary(f"/made.up.Service{i}/Method{i}")
                codes[code_of(lambda c=call: c(b"", timeout=10))] += 1
            assert codes == {C.UNIMPLEMENTED: 2000}
            assert health_status(ch) == 1
        caches = {type(i).__name__: len(i._wrapped) for i in neuron.interceptors}
        assert set(caches) == {"Admission", "AuthInterceptor", "CallLogInterceptor"}
        assert all(size <= 2 for size in caches.values()), caches  # health Check at most
    finally:
        neuron.drain(grace=1.0)
        for top in ("server", "methods", "runtime", "srvx"):
            forget_package(top)


# 7. Health answers while every admitted call waits on a stalled database.
def test_health_answers_while_the_database_stalls(books, pb, pb_grpc, own_emulator):
    server = ServerProcess(books, env_for(own_emulator, GRPC_MAX_WORKERS="6", FIRESTORE_TIMEOUT_SECONDS="8"))
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.BooksServiceStub(ch)
            stub.CreateBook(pb.CreateBookRequest(book=pb.Book(display_name="x"), book_id="b1"), timeout=30)
            os.killpg(own_emulator.proc.pid, signal.SIGSTOP)  # the database stops answering
            try:
                with futures.ThreadPoolExecutor(12) as pool:
                    calls = [pool.submit(code_of, lambda: stub.GetBook(pb.GetBookRequest(name="books/b1"), timeout=20))
                             for _ in range(12)]
                    checks = [health_status(ch, timeout=5) for _ in range(5)]
                    codes = collections.Counter(f.result() for f in calls)
            finally:
                os.killpg(own_emulator.proc.pid, signal.SIGCONT)
        assert checks == [1] * 5  # SERVING, every time, while the workers waited
        # 4 admitted (6 workers - 2), the rest refused at once; none UNKNOWN.
        assert codes[C.RESOURCE_EXHAUSTED] >= 6 and set(codes) <= {C.RESOURCE_EXHAUSTED, C.UNAVAILABLE, C.OK}, codes
    finally:
        server.stop()


# 10. SIGTERM: calls accepted before the drain end with their own result.
def sigterm_run(books, pb, pb_grpc, emu, run: int) -> collections.Counter:
    server = ServerProcess(books, env_for(emu, GRPC_MAX_WORKERS="18"))
    codes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.BooksServiceStub(ch)

        def worker(w: int) -> None:
            for i in range(400):
                if stop.is_set():
                    return
                request = pb.CreateBookRequest(book=pb.Book(display_name="d"), book_id=f"r{run}-w{w}-{i}")
                code = code_of(lambda r=request: stub.CreateBook(r, timeout=15))
                with lock:
                    codes[code.name] += 1
                if code is C.UNAVAILABLE:
                    return

        stub.CreateBook(pb.CreateBookRequest(book=pb.Book(display_name="d"), book_id=f"r{run}-warm"), timeout=30)
        threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
        for t in threads:
            t.start()
        threading.Timer(1.5, server.terminate).start()
        for t in threads:
            t.join(timeout=30)
        stop.set()
        server.proc.wait(timeout=20)  # exits by itself after the drain
        out = server.stop(timeout=20)
    assert server.proc.returncode == 0, out[-3000:]
    return codes


def test_sigterm_under_load_never_cancels_an_accepted_call(books, pb, pb_grpc, own_emulator):
    totals: collections.Counter = collections.Counter()
    for run in range(3):
        codes = sigterm_run(books, pb, pb_grpc, own_emulator, run)
        print(f"\nrun {run}: {dict(codes)}")
        assert set(codes) <= {"OK", "UNAVAILABLE"}, (run, codes)
        assert codes["OK"] > 0
        totals.update(codes)
    print(f"\nSIGTERM runs: {json.dumps(totals)}")


# 9. Two neurons with the same resource pattern on one emulator do not share documents.
def test_neurons_with_the_same_pattern_keep_their_own_documents(ws, pb, pb_grpc, emulator):
    v2 = ws / "resources-books-v2"
    pb2 = import_stubs(v2, "srvx.br.resources.books.v2.books_pb2")
    pb2_grpc = import_stubs(v2, "srvx.br.resources.books.v2.books_pb2_grpc")
    one = ServerProcess(ws / "resources-books-v1", env_for(emulator))
    two = ServerProcess(v2, env_for(emulator))
    try:
        with grpc.insecure_channel(one.target) as c1, grpc.insecure_channel(two.target) as c2:
            s1, s2 = pb_grpc.BooksServiceStub(c1), pb2_grpc.BooksServiceStub(c2)
            s1.CreateBook(pb.CreateBookRequest(book=pb.Book(display_name="mine"), book_id="shared-id"), timeout=30)
            assert code_of(lambda: s2.GetBook(pb2.GetBookRequest(name="books/shared-id"), timeout=30)) is C.NOT_FOUND
            assert code_of(lambda: s2.DeleteBook(pb2.DeleteBookRequest(name="books/shared-id"), timeout=30)) is C.NOT_FOUND
            assert not s2.ListBooks(pb2.ListBooksRequest(), timeout=30).books
            assert s1.GetBook(pb.GetBookRequest(name="books/shared-id"), timeout=30).display_name == "mine"
    finally:
        one.stop()
        two.stop()


# 3. PAGE_TOKEN_KEY is required outside the emulator.
def test_no_page_token_key_outside_the_emulator_refuses_to_start(books):
    env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "PAGE_TOKEN_KEY")}
    env.update(PORT=str(free_port()), HOST="127.0.0.1")
    r = subprocess.run([sys.executable, "server.py"], cwd=books, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert line["severity"] == "CRITICAL" and "PAGE_TOKEN_KEY is not set" in line["message"]
    assert "Traceback" not in r.stdout + r.stderr


# 12.2. A service whose file holds no messages is fully describable.
def test_a_service_without_its_own_messages_is_describable(ws):
    root = ws / "split"
    methods = root / "methods.py"
    text = methods.read_text()
    start = text.index("        # TODO: implement Ping.")
    end = text.index("\n", text.index("context.abort", start))
    methods.write_text(text[:start] + '        return messages_pb2.PingResponse(text="pong " + request.text)' + text[end:])
    server = ServerProcess(root)
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    try:
        described = subprocess.run([grpcurl, "-plaintext", server.target, "describe", "split.v1.PingService"],
                                   capture_output=True, text=True, timeout=30)
        assert described.returncode == 0, described.stderr
        assert "rpc Ping ( .split.v1.PingRequest ) returns ( .split.v1.PingResponse )" in described.stdout
        called = subprocess.run([grpcurl, "-plaintext", "-d", '{"text": "hi"}', server.target, "split.v1.PingService/Ping"],
                                capture_output=True, text=True, timeout=30)
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout) == {"text": "pong hi"}
    finally:
        server.stop()
