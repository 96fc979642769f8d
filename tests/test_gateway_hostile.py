"""Hostile HTTP callers against the gateway (issue 11: items 5, 6, 14, 15), over real sockets on
127.0.0.1, in front of real generated neuron servers (Books on the Firestore emulator; an echo
service that reports the metadata it received). Figures are printed as ``RELIABILITY …`` lines
(run with -s) and summarised in RELIABILITY.md."""

from __future__ import annotations

import json
import select
import socket
import time

import httpx
import pytest

from tests.conftest import REPO
from tests.helpers import ServerProcess
from tests.test_gateway import MODES, Gateway, generate, run_schemathesis

BOOKS_PROTO = REPO / "examples/books/proto"

ECHO_PROTO = """syntax = "proto3";
package echo.v1;
import "google/api/annotations.proto";
import "google/protobuf/struct.proto";
message Inner { string note = 1; }
message Msg {
  string id = 1; string text = 2; int32 times = 3; Inner inner = 4; google.protobuf.Struct extra = 5;
  repeated string metadata = 6;
}
service EchoService {
  rpc Say(Msg) returns (Msg) {
    option (google.api.http) = {
      post: "/v1/say" body: "*"
      additional_bindings { get: "/v1/say/{id}" }
      additional_bindings { put: "/v1/say/{id}/inner" body: "inner" }
    };
  }
  rpc Count(Msg) returns (stream Msg) { option (google.api.http) = { get: "/v1/count/{id}" }; }
  rpc Collect(stream Msg) returns (Msg) { option (google.api.http) = { post: "/v1/collect" body: "*" }; }
  rpc Chat(stream Msg) returns (stream Msg) { option (google.api.http) = { post: "/v1/chat" body: "*" }; }
}
"""

ECHO_METHODS = '''"""Echo servicer for the gateway tests: Say returns the request and the metadata it got."""

from __future__ import annotations

import time

import echo_pb2
import echo_pb2_grpc
import grpc
from scaffold_runtime import status


class EchoService(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self, deps) -> None:
        self.deps = deps

    def Say(self, request, context):
        if request.text == "boom":  # an exception escapes: never its text, never UNKNOWN
            raise RuntimeError("secret at /srv/app/methods.py line 12")
        if request.text == "code-then-boom":  # a code set, then an exception: the code stands
            context.set_code(grpc.StatusCode.NOT_FOUND)
            raise RuntimeError("secret at /srv/app/methods.py line 15")
        if request.text == "details":  # AIP-193 details in the grpc-status-details-bin trailer
            status.abort(context, grpc.StatusCode.INVALID_ARGUMENT, "id is bad", reason="BAD_ID", domain="echo.test",
                         metadata={"id": request.id}, violations=[("id", "must be a number")])
        if request.text.startswith("sleep:"):  # holds its admission slot, bounded
            time.sleep(min(5.0, float(request.text[6:])))
        request.metadata.extend(f"{k}={v if isinstance(v, str) else v.hex()}" for k, v in context.invocation_metadata()
                                if not k.startswith(("grpc-", ":")) and k != "user-agent")
        return request

    def Count(self, request, context):
        for i in range(min(request.times, 50)):  # bounded whatever a caller asks
            if request.text == "fail" and i == 2:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "stopped at 2")
            yield echo_pb2.Msg(id=request.id, times=i)

    def Collect(self, request_iterator, context):
        return echo_pb2.Msg(times=sum(1 for _ in request_iterator))

    def Chat(self, request_iterator, context):
        yield from request_iterator
'''


def figure(name: str, figures: dict) -> None:
    print(f"\nRELIABILITY gateway {name}: {json.dumps(figures)}")


@pytest.fixture(scope="module")
def echo_neuron(tmp_path_factory, emulator):
    base = tmp_path_factory.mktemp("echo")
    (base / "echo.proto").write_text(ECHO_PROTO)
    root = generate(base, base / "echo.proto", "echo")
    (root / "methods.py").write_text(ECHO_METHODS)
    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
    yield root, server
    server.stop()


@pytest.fixture(scope="module", params=MODES)
def echo(echo_neuron, request):
    """The echo neuron's gateway, proxy (to the module's server) or in-process."""
    root, server = echo_neuron
    gateway = Gateway(root, server.target if request.param == "proxy" else None,
                      {"GATEWAY_HEADER_TIMEOUT_SECONDS": "2", "GATEWAY_BODY_TIMEOUT_SECONDS": "2"})
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module", params=MODES)
def books(tmp_path_factory, emulator, request):
    base = tmp_path_factory.mktemp("books")
    root = generate(base, BOOKS_PROTO / "xmpl/br/resources/books/v1/books.proto", "books", BOOKS_PROTO)
    env = {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local",
           "AUTH_MODE": "api-key", "API_KEYS": "k1"}
    server = ServerProcess(root, env) if request.param == "proxy" else None
    gateway = Gateway(root, server.target if server else None, env)
    yield gateway
    gateway.stop()
    if server:
        server.stop()


def google_error(r: httpx.Response, code: int) -> dict:
    """The body of ``r`` if it is a Google-style error with HTTP ``code``; fails the test otherwise."""
    assert r.status_code == code, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "status"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body
    assert "Traceback" not in body["error"]["message"] and "/" not in body["error"]["status"]
    return body["error"]


def raw_exchange(port: int, head: bytes, chunks=(), delay: float = 0.0, deadline: float = 10.0) -> dict:
    """Send ``head`` then each chunk (``delay`` apart) on a raw socket, stopping early when the
    gateway answers or closes. Returns {"status": int or None, "body": bytes, "seconds": float,
    "closed": bool, "sent": int}; None and closed False mean no answer within ``deadline``."""
    start = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline)
    sent, data, closed = 0, b"", False
    try:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], delay)[0] or time.monotonic() - start > deadline:
                break
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except OSError:
                break
        while time.monotonic() - start < deadline:
            if not select.select([sock], [], [], max(0.0, deadline - (time.monotonic() - start)))[0]:
                break
            try:
                piece = sock.recv(65536)
            except OSError:
                closed = True
                break
            if not piece:
                closed = True
                break
            data += piece
            head_, sep, rest = data.partition(b"\r\n\r\n")
            length = [int(h.split(b":")[1]) for h in head_.lower().split(b"\r\n") if h.startswith(b"content-length:")]
            if sep and length and len(rest) >= length[0]:
                break
    finally:
        sock.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return {"status": status, "body": data.partition(b"\r\n\r\n")[2], "seconds": round(time.monotonic() - start, 2),
            "closed": closed, "sent": sent}


# Issue 11, item 5: inputs that gave 500.
ATTACKS = {
    "nested JSON [ x 200000": {"method": "POST", "url": "/v1/say", "content": b"[" * 200_000,
                                   "headers": {"content-type": "application/json"}},
    "nested JSON object x 5000": {"method": "POST", "url": "/v1/say",
                                      "content": b'{"extra": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001},
    "null body where a query path needs a message": {"method": "PUT", "url": "/v1/say/1/inner?inner.note=x", "content": b"null"},
    "number body where a query path needs a message": {"method": "PUT", "url": "/v1/say/1/inner?inner.note=x", "content": b"5"},
    "number query where a query path needs a message": {"method": "GET", "url": "/v1/say/1?inner=1&inner.note=x"},
    "Grpc-Metadata-X-Bin: abc": {"method": "GET", "url": "/v1/say/1", "headers": {"Grpc-Metadata-X-Bin": "abc"}},
    "empty Grpc-Metadata- header": {"method": "GET", "url": "/v1/say/1", "headers": {"Grpc-Metadata-": "x"}},
    "non-ASCII x-api-key": {"method": "GET", "url": "/v1/say/1", "headers": {"x-api-key": "clé".encode("latin-1")}},
    "non-ASCII Grpc-Metadata-Note": {"method": "GET", "url": "/v1/say/1", "headers": {"Grpc-Metadata-Note": "ü".encode("latin-1")}},
    "Grpc-Metadata key with a bad character": {"method": "GET", "url": "/v1/say/1", "headers": {"Grpc-Metadata-A%b": "x"}},
}


def test_hostile_inputs_get_400(echo):
    seen = {}
    with httpx.Client(base_url=echo.url, timeout=30) as http:
        for name, request in ATTACKS.items():
            try:
                seen[name] = http.request(**request).status_code
            except httpx.HTTPError as exc:
                seen[name] = type(exc).__name__
        figure("hostile inputs", seen)
        for name, request in ATTACKS.items():
            error = google_error(http.request(**request), 400)
            assert error["status"] == "INVALID_ARGUMENT", (name, error)
        ok = http.get("/v1/say/1", headers={"Grpc-Metadata-X-Bin": "YWJj", "Grpc-Metadata-Note": "plain"}).json()
        assert "x-bin=616263" in ok["metadata"] and "note=plain" in ok["metadata"]


def test_oversized_bodies_are_refused_before_they_are_read(echo, books):
    head = (b"POST /v1/say HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 300000000\r\n\r\n")
    declared = raw_exchange(echo.port, head, [b" " * 65536] * 16, delay=0.05, deadline=15)
    rss_before = echo.rss_mb()
    chunk = b'{"text": "' + b"x" * (1 << 20)
    chunked = raw_exchange(echo.port, b"POST /v1/say HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                           (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(64)), delay=0.01, deadline=30)
    rss_after = echo.rss_mb()
    # Books requires an API key: the size is checked before any credential is.
    unauthenticated = raw_exchange(books.port, b"POST /v1/books HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n",
                                   deadline=15)
    figure("oversized bodies", {
        "declared 300 MB": {k: declared[k] for k in ("status", "seconds", "sent")},
        "chunked 64 MiB": {k: chunked[k] for k in ("status", "seconds", "sent")},
        "rss_mb_before_after": [round(rss_before), round(rss_after)],
        "5 MB without an API key": {k: unauthenticated[k] for k in ("status", "seconds")},
    })
    for answer in (declared, chunked, unauthenticated):
        assert answer["status"] == 413, answer
        assert json.loads(answer["body"])["error"]["status"] == "RESOURCE_EXHAUSTED", answer
    assert declared["sent"] < 16 * 65536  # refused on Content-Length, before the body
    assert chunked["sent"] < 64 * len(chunk)  # refused while streaming, not after the whole body
    assert rss_after - rss_before < 40, (rss_before, rss_after)
    with httpx.Client(base_url=echo.url, timeout=30) as http:  # a body just under the limit still works
        r = http.post("/v1/say", json={"text": "y" * (4 * 1024 * 1024 - 1000)})
        assert r.status_code == 200 and len(r.json()["text"]) == 4 * 1024 * 1024 - 1000


def test_slow_clients_are_cut_off(echo):
    headers = raw_exchange(echo.port, b"GET /v1/say/1 HTTP/1.1\r\n", (b"X-Slow: 1\r\n" for _ in range(40)),
                           delay=0.5, deadline=12)
    body = raw_exchange(echo.port, b"POST /v1/say HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
                        (b" " for _ in range(40)), delay=0.5, deadline=12)
    figure("slow clients", {"trickled headers": {k: headers[k] for k in ("status", "closed", "seconds")},
                            "trickled body": {k: body[k] for k in ("status", "closed", "seconds")}})
    assert headers["closed"] and headers["seconds"] < 10, headers
    assert body["status"] == 408 and json.loads(body["body"])["error"]["status"] == "DEADLINE_EXCEEDED", body


def test_metadata_forwarding(echo):
    """Item 14: reserved and hop-by-hop names are dropped; each credential reaches the server once."""
    sent = {
        "authorization": "Bearer caller", "x-api-key": "k1", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "grpc-metadata-authorization": "Bearer other", "grpc-metadata-x-api-key": "k2",
        "grpc-metadata-x-serverless-authorization": "Bearer forged", "grpc-metadata-grpc-timeout": "1S",
        "grpc-metadata-connection": "x", "grpc-metadata-te": "x", "grpc-metadata-host": "x",
        "grpc-metadata-content-length": "5", "grpc-metadata-transfer-encoding": "x", "grpc-metadata-keep-alive": "x",
        "grpc-metadata-upgrade": "x", "grpc-metadata-proxy-authorization": "x", "grpc-metadata-x-tenant": "t1",
    }
    with httpx.Client(base_url=echo.url, timeout=30) as http:
        r = http.get("/v1/say/1", headers=sent)
        figure("metadata", {"status": r.status_code, "metadata": r.json().get("metadata") if r.status_code == 200 else r.text[:200]})
        assert r.status_code == 200, r.text
        got = sorted(r.json()["metadata"])
    assert got == sorted(["authorization=Bearer caller", "x-api-key=k1", f"traceparent={sent['traceparent']}",
                          "x-tenant=t1"]), got


def test_cors(echo_neuron):
    root, server = echo_neuron
    gateway = Gateway(root, server.target, {"CORS_ALLOWED_ORIGINS": "https://app.example, https://admin.example"})
    origin = "https://app.example"
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            pre = http.options("/v1/say/1", headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                                     "Access-Control-Request-Headers": "x-api-key, content-type"})
            figure("cors", {"preflight": pre.status_code, "headers": {k: v for k, v in pre.headers.items()
                                                                       if k.startswith("access-control")}})
            assert pre.status_code == 204, pre.text
            assert pre.headers["access-control-allow-origin"] == origin
            assert pre.headers["access-control-allow-methods"] == "GET"  # the routes on /v1/say/{id}: GET only
            assert {h.strip() for h in pre.headers["access-control-allow-headers"].split(",")} >= {"x-api-key", "content-type"}
            assert int(pre.headers["access-control-max-age"]) > 0 and "Origin" in pre.headers["vary"]
            put = http.options("/v1/say/1/inner", headers={"Origin": origin, "Access-Control-Request-Method": "PUT"})
            assert put.status_code == 204 and put.headers["access-control-allow-methods"] == "PUT"
            wrong = http.options("/v1/say/1", headers={"Origin": origin, "Access-Control-Request-Method": "DELETE"})
            assert "access-control-allow-origin" not in wrong.headers
            evil = http.options("/v1/say/1", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
            assert not [h for h in evil.headers if h.startswith("access-control")], evil.headers
            get = http.get("/v1/say/1", headers={"Origin": origin})
            assert get.status_code == 200 and get.headers["access-control-allow-origin"] == origin
            assert "Origin" in get.headers["vary"]
            missing = http.get("/v1/nowhere", headers={"Origin": origin})  # errors are readable by the app too
            assert google_error(missing, 404) and missing.headers["access-control-allow-origin"] == origin
            assert "access-control-allow-origin" not in http.get("/v1/say/1", headers={"Origin": "https://evil.example"}).headers
            plain = http.options("/v1/say/1")
            assert plain.status_code == 204 and plain.headers["allow"] == "GET, OPTIONS"
    finally:
        gateway.stop()


def test_no_cors_by_default(echo):
    with httpx.Client(base_url=echo.url, timeout=30) as http:
        pre = http.options("/v1/say/1", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"})
        assert not [h for h in pre.headers if h.startswith("access-control")], pre.headers
        assert "access-control-allow-origin" not in http.get("/v1/say/1", headers={"Origin": "https://app.example"}).headers


def test_schemathesis_finds_no_server_errors(books, echo):
    """Property-based requests from each openapi.json against today's gateway: no 5xx."""
    run_schemathesis(books.root / "openapi.json", books.url, "--header", "x-api-key: k1")
    run_schemathesis(echo.root / "openapi.json", echo.url)


# Review: JSON that does not fit the request got protobuf's and Python's own wording
# ("expected string or bytes-like object, got 'int'", "invalid literal for int()", every field name).
MISFITS = {
    "number for a string": (b'{"text": 5}', "?", "text takes a string"),
    "string for an int": (b'{"times": "x"}', "?", "times takes an integer (32-bit)"),
    "int out of range": (b'{"times": 1e308}', "?", "times is out of range: it takes an integer (32-bit)"),
    "array for a string": (b'{"text": [1]}', "?", "text takes a string"),
    "object for a repeated": (b'{"metadata": {"a": 1}}', "?", "metadata takes a JSON array, each item a string"),
    "unknown field": (b'{"nope": 1}', "?", 'Msg has no field "nope"'),
    "query int": (b"{}", "?times=x", "times takes an integer (32-bit)"),
}


def test_json_that_does_not_fit_says_which_field_and_what_it_takes(echo):
    with httpx.Client(base_url=echo.url, timeout=30) as http:
        for name, (body, query, says) in MISFITS.items():
            if query == "?":
                response = http.post("/v1/say", content=body, headers={"content-type": "application/json"})
            else:
                response = http.get(f"/v1/say/1{query}")
            error = google_error(response, 400)
            assert error["status"] == "INVALID_ARGUMENT" and says in error["message"], (name, error)
            for python in ("bytes-like", "invalid literal", "got '", "Available Fields", "Traceback"):
                assert python not in error["message"], (name, error)
