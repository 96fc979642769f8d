"""Tracing (issue 15) end to end, over real sockets on 127.0.0.1 and the real Firestore emulator.

Neuron A ("relay", with a gateway route) runs in this process with its gateway (spans to an
in-memory exporter); its hand-written Relay method calls neuron B (Books, on the emulator) over
a plain gRPC channel wrapped with ``tracing.client_interceptors()``. B runs as its own process
with TRACING=console and LOG_EVERY_CALL=true: its spans and log lines are JSON lines on its
stdout. The spans of both processes are merged and their parent links checked: gateway ->
A server -> A client -> B server -> B firestore.create, one trace.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import uuid

import grpc
import httpx
import pytest

from tests.conftest import REPO
from tests.helpers import ServerProcess, forget_package
from tests.test_gateway import generate

BOOKS_PROTO = REPO / "examples/books/proto"
B_PROJECT = "demo-tracing"
RELAY_PROTO = """syntax = "proto3";
package relay.v1;
import "google/api/annotations.proto";
message RelayRequest { string id = 1; }
message RelayReply { string name = 1; }
service RelayService {
  rpc Relay(RelayRequest) returns (RelayReply) { option (google.api.http) = { post: "/v1/relay/{id}" body: "*" }; }
}
"""
RELAY_METHODS = '''"""Relay: creates a book in neuron B (BOOKS_TARGET) and returns its name."""

from __future__ import annotations

import logging
import os

import grpc
import relay_pb2
import relay_pb2_grpc
from tracebooks.v1 import books_pb2, books_pb2_grpc

from scaffold_runtime import tracing

log = logging.getLogger("relay")


class RelayService(relay_pb2_grpc.RelayServiceServicer):
    def __init__(self, deps) -> None:
        channel = grpc.insecure_channel(os.environ["BOOKS_TARGET"])
        self.books = books_pb2_grpc.BooksServiceStub(grpc.intercept_channel(channel, *tracing.client_interceptors()))

    def Relay(self, request, context):
        log.info("relaying %s", request.id)
        book = books_pb2.Book(display_name="Traced", authors=["A"], publisher="P")
        created = self.books.CreateBook(books_pb2.CreateBookRequest(book_id=request.id, book=book), timeout=20)
        return relay_pb2.RelayReply(name=created.name)
'''


@pytest.fixture(scope="module")
def neurons(tmp_path_factory, emulator):
    """(A's root, B's server process): B generated from the Books proto, A from RELAY_PROTO."""
    # The example's Books proto under a package of its own: other tests of this session load
    # other protos named xmpl/br/resources/books/v1/books.proto into the same descriptor pool.
    protos = tmp_path_factory.mktemp("protos")
    (protos / "tracebooks/v1").mkdir(parents=True)
    text = (BOOKS_PROTO / "xmpl/br/resources/books/v1/books.proto").read_text()
    (protos / "tracebooks/v1/books.proto").write_text(text.replace("package xmpl.br.resources.books.v1;", "package tracebooks.v1;"))
    books = generate(tmp_path_factory.mktemp("b"), protos / "tracebooks/v1/books.proto", "books", protos)
    base = tmp_path_factory.mktemp("a")
    (base / "relay.proto").write_text(RELAY_PROTO)
    relay = generate(base, base / "relay.proto", "relay")
    (relay / "methods.py").write_text(RELAY_METHODS)
    b = ServerProcess(books, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": B_PROJECT,
                              "TRACING": "console", "LOG_EVERY_CALL": "true",
                              "FIRESTORE_TIMEOUT_SECONDS": "30"})  # a cold emulator under load
    try:
        yield relay, books, b
    finally:
        b.stop()


@pytest.fixture(scope="module", params=["proxy", "in-process"])
def traced_a(neurons, request):
    """Neuron A's gateway app in this process, tracing to an in-memory exporter: in front of A's
    server (proxy), or serving A's servicers itself (in-process)."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from scaffold_runtime import tracing
    from scaffold_runtime.gateway import create_app

    relay, books, b = neurons
    exporter = InMemorySpanExporter()
    assert tracing.setup("relay", exporter=exporter)
    mp = pytest.MonkeyPatch()
    mp.setenv("BOOKS_TARGET", b.target)
    for name in ("server", "methods", "base", "gateway", "relay_pb2", "relay_pb2_grpc", "tracebooks"):
        forget_package(name)
    paths = [str(relay), str(books / "protobuf")]
    sys.path[:0] = paths
    neuron = None
    try:
        import gateway
        import server

        if request.param == "proxy":
            neuron = server.Neuron("127.0.0.1", 0)
            neuron.start()
            app = create_app(gateway.RULES, f"127.0.0.1:{neuron.port}")
        else:
            app = create_app(gateway.RULES, wiring=server.wiring)
        yield app, exporter, b
    finally:
        if neuron is not None:
            neuron.drain(grace=1.0)
        elif "app" in locals():
            asyncio.run(app.aclose())  # in-process: drains its calls
        tracing.shutdown()
        mp.undo()
        for p in paths:
            sys.path.remove(p)
        for name in ("server", "methods", "base", "gateway", "relay_pb2", "relay_pb2_grpc", "tracebooks"):
            forget_package(name)


def post(app, path: str, headers: dict | None = None) -> httpx.Response:
    """POST ``path`` to the gateway app in this process (a proxy's gRPC channel is closed after)."""
    from scaffold_runtime.gateway import Channel

    async def go():
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
                return await http.post(path, json={}, headers=headers or {}, timeout=30)
        finally:
            if isinstance(app.upstream, Channel):  # its channel belongs to this event loop
                await app.aclose()

    return asyncio.run(go())


def b_output(b: ServerProcess, trace_id: str, wait: float = 10.0) -> tuple[list[dict], list[dict]]:
    """(spans, log lines) B printed for ``trace_id`` so far (waiting for its spans to appear)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        records = []
        for line in list(b.output):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        spans = [r for r in records if "context" in r and r["context"].get("trace_id") == f"0x{trace_id}"]
        logs = [r for r in records if "severity" in r and trace_id in r.get("logging.googleapis.com/trace", "")]
        if len(spans) >= 2 or time.monotonic() > deadline:
            return spans, logs
        time.sleep(0.05)


def in_memory(exporter, trace_id: str) -> dict[str, object]:
    """This process's finished spans of ``trace_id``, by name."""
    return {s.name: s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id}


def test_one_trace_from_the_gateway_through_a_to_b_and_its_store(traced_a):
    app, exporter, b = traced_a
    records: list[str] = []
    handler = logging.Handler()
    from scaffold_runtime.logs import JsonFormatter

    handler.format = JsonFormatter().format
    handler.emit = lambda record: records.append(handler.format(record))
    logging.getLogger("relay").addHandler(handler)
    logging.getLogger("relay").setLevel(logging.INFO)
    try:
        book = f"t{uuid.uuid4().hex[:10]}"
        r = post(app, f"/v1/relay/{book}")
    finally:
        logging.getLogger("relay").removeHandler(handler)
    assert r.status_code == 200, r.text
    assert r.json() == {"name": f"books/{book}"}

    gateway = next(s for s in exporter.get_finished_spans() if s.name == f"POST /v1/relay/{book}")
    trace_id = f"{gateway.context.trace_id:032x}"
    mine = in_memory(exporter, trace_id)
    a_server, a_client = mine["relay.v1.RelayService/Relay"], mine["tracebooks.v1.BooksService/CreateBook"]
    assert gateway.parent is None  # the request carried no trace: the gateway starts it
    assert gateway.attributes["http.response.status_code"] == 200
    assert a_server.parent.span_id == gateway.context.span_id and a_server.kind.name == "SERVER"
    assert a_client.parent.span_id == a_server.context.span_id and a_client.kind.name == "CLIENT"
    assert a_server.attributes["rpc.grpc.status_code"] == 0 and a_client.attributes["rpc.method"] == "CreateBook"

    spans, logs = b_output(b, trace_id)
    by_name = {s["name"]: s for s in spans}
    b_server, b_store = by_name["tracebooks.v1.BooksService/CreateBook"], by_name["firestore.create"]
    assert b_server["kind"] == "SpanKind.SERVER" and b_server["parent_id"] == f"0x{a_client.context.span_id:016x}"
    assert b_store["parent_id"] == b_server["context"]["span_id"]
    assert b_store["attributes"]["db.collection.name"] == "books"
    # Log lines carry the trace: A's own line during the call, B's call log line.
    relayed = [json.loads(line) for line in records if "relaying" in line]
    assert relayed and relayed[0]["logging.googleapis.com/trace"] == trace_id  # no GOOGLE_CLOUD_PROJECT here
    assert relayed[0]["logging.googleapis.com/spanId"] == f"{a_server.context.span_id:016x}"
    call_log = [line for line in logs if line.get("grpc.method", "").endswith("/CreateBook")]
    assert call_log and call_log[0]["logging.googleapis.com/trace"] == f"projects/{B_PROJECT}/traces/{trace_id}"


@pytest.mark.parametrize("header", ["x-cloud-trace-context", "traceparent"])
def test_either_incoming_header_continues_the_callers_trace(traced_a, header):
    app, exporter, b = traced_a
    trace_id, parent = uuid.uuid4().hex, 1234567890123
    value = f"{trace_id}/{parent};o=1" if header == "x-cloud-trace-context" else f"00-{trace_id}-{parent:016x}-01"
    r = post(app, f"/v1/relay/x{uuid.uuid4().hex[:8]}", {header: value})
    assert r.status_code == 200, r.text
    mine = in_memory(exporter, trace_id)
    gateway = next(s for name, s in mine.items() if name.startswith("POST /v1/relay/"))
    assert gateway.parent.span_id == parent and gateway.parent.is_remote
    assert mine["relay.v1.RelayService/Relay"].parent.span_id == gateway.context.span_id
    spans, logs = b_output(b, trace_id)
    assert {s["name"] for s in spans} >= {"tracebooks.v1.BooksService/CreateBook", "firestore.create"}
    assert logs, "B's call log line carries the caller's trace"


def test_x_cloud_trace_context_alone_reaches_a_server(neurons):
    """A plain gRPC caller with Google's header only: B's span continues that trace."""
    _relay, books, b = neurons
    from tests.helpers import import_stubs

    stubs = import_stubs(books, "tracebooks.v1.books_pb2_grpc")
    pb2 = sys.modules["tracebooks.v1.books_pb2"]
    trace_id, parent = uuid.uuid4().hex, 987654321
    with grpc.insecure_channel(b.target) as channel, pytest.raises(grpc.RpcError) as missing:
        stubs.BooksServiceStub(channel).GetBook(pb2.GetBookRequest(name="books/absent"), timeout=20,
                                                metadata=[("x-cloud-trace-context", f"{trace_id}/{parent};o=1")])
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    spans, logs = b_output(b, trace_id)
    server = next(s for s in spans if s["name"].endswith("/GetBook"))
    assert server["parent_id"] == f"0x{parent:016x}"
    assert server["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert server["status"]["status_code"] == "UNSET"  # NOT_FOUND is an answer, not a failure
    store = next(s for s in spans if s["name"] == "firestore.get")
    assert store["parent_id"] == server["context"]["span_id"]
    assert any(line.get("grpc.code") == "NOT_FOUND" for line in logs)


def test_off_imports_no_opentelemetry_and_a_bad_setting_stops_start_up(neurons):
    code = ("import sys, scaffold_runtime.server, scaffold_runtime.store, scaffold_runtime.gateway\n"
            "from scaffold_runtime import tracing\n"
            "assert tracing.setup() is False\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    env = {"PATH": "/usr/bin:/bin", "TRACING": "off"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    _relay, books, _b = neurons
    for setting, expected in ((("TRACING", "yes"), "TRACING='yes': use off, console or cloud-trace"),
                              (("TRACE_SAMPLE_RATIO", "1.5"), "TRACE_SAMPLE_RATIO='1.5': use a number from 0 to 1")):
        env = {"PATH": "/usr/bin:/bin", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:1", "PORT": "0", "HOST": "127.0.0.1",
               setting[0]: setting[1]}
        r = subprocess.run([sys.executable, "server.py"], cwd=books, capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 2, r.stdout + r.stderr
        assert expected in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_tracing_extra_is_in_every_neurons_requirements(neurons):
    _relay, books, _b = neurons
    pinned = (books / "requirements.txt").read_text()
    for name in ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-gcp-trace"):
        assert f"\n{name}==" in pinned
    assert "tracing" in (books / "requirements-runtime.txt").read_text()


def test_terraform_exports_to_cloud_trace_with_the_agent_role():
    """Every service the shared module deploys sets TRACING=cloud-trace and may write spans
    (roles/cloudtrace.agent), unless var.tracing is false."""
    from tests.test_terraform import blocks, parse, unq

    module = REPO / "terraform/modules/grpc-service"
    main = parse(module / "main.tf")
    agent = blocks(main, "resource")["google_project_iam_member.trace_agent"]
    assert unq(agent["role"]) == "roles/cloudtrace.agent" and agent["count"] == "${var.tracing ? 1 : 0}"
    assert unq(agent["member"]) == "serviceAccount:${google_service_account.service.email}"
    assert main["locals"][0]["tracing_env"] == '${var.tracing ? {TRACING = "cloud-trace"} : {}}'
    assert "local.tracing_env, var.env)" in (module / "main.tf").read_text()  # var.env may override it
    assert blocks(parse(module / "variables.tf"), "variable")["tracing"]["default"] is True
