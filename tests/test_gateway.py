"""The HTTP/JSON gateway and the OpenAPI document, over real HTTP on 127.0.0.1, against the
real Firestore emulator: the Books example and google/example/library/v1/library.proto."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, need
from tests.helpers import ServerProcess, free_port, wait_for_port

BOOKS = REPO / "examples/books/neurons/resources-books-v1"


class Gateway:
    """``python gateway.py`` of a neuron on a free loopback port: in front of ``grpc_target``
    (proxy mode), or serving the neuron's services itself when it is None (in-process mode;
    ``env`` then carries what the server would need: Firestore, AUTH_*)."""

    def __init__(self, root: Path, grpc_target: str | None, env: dict[str, str] | None = None) -> None:
        self.port, self.root = free_port(), root
        self.mode = "proxy" if grpc_target else "in-process"
        env = {**os.environ, **(env or {}), "PORT": str(self.port), "HOST": "127.0.0.1"}
        env.pop("GRPC_TARGET", None)
        if grpc_target:
            env["GRPC_TARGET"] = grpc_target
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen([sys.executable, "gateway.py"], cwd=root, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []  # read as it comes: a full pipe would block the gateway's logging
        self._reader = threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True)
        self._reader.start()
        try:
            wait_for_port(self.port, self.proc, output=self.output)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        """The gateway process's resident memory, in MB (from /proc)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> str:
        """SIGTERM, then SIGKILL after 15 s (and the test fails); the gateway's output."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self._reader.join(timeout=5)
        return "".join(self.output)


def generate(base: Path, proto: Path, out: str, *include: Path) -> Path:
    """A fresh neuron from ``proto`` (today's templates and runtime) in a workspace under ``base``."""
    from generator import cli

    cwd = os.getcwd()
    try:
        os.chdir(base)
        assert cli.run(["init", "ws", "--org", "xmpl", "--product", "br"]) == 0
        os.chdir(base / "ws")
        args = ["neuron", "create", "--proto", str(proto), "--out", out]
        for folder in include:
            args += ["-I", str(folder)]
        assert cli.run(args) == 0
    finally:
        os.chdir(cwd)
    return base / "ws" / "neurons" / out


MODES = ("proxy", "in-process")


@pytest.fixture(params=MODES)
def books_http(emulator, request):
    """(HTTP client with an API key, stop()) for Books behind a gateway in either mode; stop()
    returns the output of the process that served the calls (server or in-process gateway)."""
    emulator.wipe("resources-books-v1")  # the neuron's own database
    env = {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local",
           "AUTH_MODE": "api-key", "API_KEYS": "k1", "LOG_EVERY_CALL": "true"}
    server = ServerProcess(BOOKS, env) if request.param == "proxy" else None
    gateway = Gateway(BOOKS, server.target, env) if server else Gateway(BOOKS, None, env)
    stopped: dict[str, str] = {}

    def stop() -> str:
        if not stopped:
            stopped["out"] = server.stop() if server else gateway.stop()
        return stopped["out"]

    with httpx.Client(base_url=gateway.url, headers={"x-api-key": "k1"}, timeout=30) as http:
        yield http, stop
    if server:
        gateway.stop()
    stop()


def test_books_through_the_gateway(books_http):
    http, stop = books_http
    for i in range(5):
        r = http.post("/v1/books", params={"bookId": f"b{i}"},
                      json={"displayName": f"Book {i}", "authors": ["A"], "publisher": "Penguin" if i % 2 else "Vintage"})
        assert r.status_code == 200, r.text
        assert r.json()["name"] == f"books/b{i}" and "createTime" in r.json()  # lowerCamel JSON
    assert http.get("/v1/books/b1").json()["publisher"] == "Penguin"
    names, token = [], ""
    while True:
        page = http.get("/v1/books", params={"pageSize": 2, **({"pageToken": token} if token else {})}).json()
        names += [b["name"] for b in page.get("books", [])]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert names == [f"books/b{i}" for i in range(5)]
    penguin = http.get("/v1/books", params={"filter": 'publisher = "Penguin"'}).json()["books"]
    assert [b["name"] for b in penguin] == ["books/b1", "books/b3"]
    r = http.patch("/v1/books/b0", params={"updateMask": "publisher"}, json={"publisher": "Faber", "displayName": "ignored"})
    assert r.status_code == 200 and r.json()["publisher"] == "Faber" and r.json()["displayName"] == "Book 0"
    assert http.delete("/v1/books/b0").status_code == 200
    missing = http.get("/v1/books/b0")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert (error["code"], error["message"], error["status"]) == (404, "'books/b0' not found", "NOT_FOUND")
    # AIP-193: the ErrorInfo the store attached, rendered as Google APIs do.
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RESOURCE_NOT_FOUND",
                                 "domain": "books.br.xmpl", "metadata": {"type": "books.br.xmpl/Book", "resource": "books/b0"}}]
    assert http.post("/v1/books", params={"bookId": "b1"}, json={"displayName": "x", "authors": ["a"], "publisher": "p"}).status_code == 409
    bad = http.get("/v1/books", params={"filter": "author = 1"})
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert http.post("/v1/books", content=b"{not json").status_code == 400
    assert http.get("/v1/books", params={"nope": "1"}).status_code == 400
    assert http.get("/v2/elsewhere").status_code == 404
    # Credentials travel as gRPC metadata: without the key the server says UNAUTHENTICATED.
    assert http.get("/v1/books/b1", headers={"x-api-key": ""}).status_code == 401
    assert http.get("/v1/books/b1", headers={"x-api-key": "wrong"}).status_code == 403
    # The trace header reaches the call log of whichever process ran the method.
    http.get("/v1/books/b1", headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    out = stop()
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in out


def test_books_openapi_document(tmp_path):
    from openapi_spec_validator import validate

    doc = json.loads((BOOKS / "openapi.json").read_text())
    validate(doc)
    assert set(doc["paths"]) == {"/v1/books", "/v1/books/{book}"}
    book = doc["components"]["schemas"]["xmpl.br.resources.books.v1.Book"]
    assert set(book["required"]) == {"displayName", "authors", "publisher"}
    assert book["properties"]["name"]["readOnly"] is True
    assert book["properties"]["authors"] == {"type": "array", "items": {"type": "string"}}
    create = doc["paths"]["/v1/books"]["post"]
    assert [p["name"] for p in create["parameters"]] == ["bookId"]
    assert doc["paths"]["/v1/books/{book}"]["patch"]["parameters"][0]["name"] == "book"


@pytest.fixture
def library(workspace, scaffold, corpus, emulator):
    emulator.wipe("example-library-v1")
    r = scaffold("neuron", "create", "--proto", str(corpus / "google/example/library/v1/library.proto"), "-I", str(corpus))
    assert r.code == 0, r.output
    root = workspace / "neurons/example-library-v1"
    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
    gateway = Gateway(root, server.target)
    yield root, gateway.url
    gateway.stop()
    server.stop()


def test_library_through_the_gateway(library):
    from openapi_spec_validator import validate

    root, url = library
    validate(json.loads((root / "openapi.json").read_text()))
    with httpx.Client(base_url=url, timeout=30) as http:
        shelf = http.post("/v1/shelves", json={"theme": "Poetry"}).json()
        assert shelf["name"].startswith("shelves/") and shelf["theme"] == "Poetry"
        book = http.post(f"/v1/{shelf['name']}/books", json={"author": "Sappho", "title": "Fragments", "read": True}).json()
        assert book["name"].startswith(shelf["name"] + "/books/") and book["read"] is True
        assert http.get(f"/v1/{book['name']}").json() == book
        listed = http.get(f"/v1/{shelf['name']}/books").json()["books"]
        assert listed == [book]
        moved = http.post(f"/v1/{book['name']}:move", json={"otherShelfName": shelf["name"]})
        assert moved.status_code == 501 and moved.json()["error"]["status"] == "UNIMPLEMENTED"
        assert http.delete(f"/v1/{book['name']}").status_code == 200
        assert http.get(f"/v1/{book['name']}").status_code == 404


def test_schemathesis_finds_no_server_errors(books_http, tmp_path):
    """Property-based HTTP requests generated from openapi.json, against the live gateway."""
    exe = Path(sys.executable).parent / "schemathesis"
    need(exe.exists() or shutil.which("schemathesis") is not None, "schemathesis")
    http, _stop = books_http
    r = subprocess.run([str(exe), "run", str(BOOKS / "openapi.json"), "--url", str(http.base_url).rstrip("/"),
                        "--checks", "not_a_server_error", "--max-examples", "25", "--header", "x-api-key: k1"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def run_schemathesis(spec: Path, base_url: str, *extra: str) -> None:
    exe = Path(sys.executable).parent / "schemathesis"
    need(exe.exists(), "schemathesis")
    r = subprocess.run([str(exe), "run", str(spec), "--url", base_url.rstrip("/"), "--checks", "not_a_server_error",
                        "--max-examples", "25", *extra], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "NO_COLOR": "1"})
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_schemathesis_on_library(library):
    """MergeShelves and MoveBook are generated stubs: they answer 501 by design (tested above)."""
    root, url = library
    run_schemathesis(root / "openapi.json", url, "--exclude-path-regex", ":(merge|move)$")


ECHO_PROTO = """syntax = "proto3";
package echo.v1;
import "google/api/annotations.proto";
message Msg { string id = 1; string text = 2; int32 times = 3; }
service EchoService {
  rpc Say(Msg) returns (Msg) {
    option (google.api.http) = {
      post: "/v1/say"
      body: "*"
      additional_bindings { get: "/v1/say/{id}" }
      additional_bindings { put: "/v1/messages/{id}/text" body: "text" }
    };
  }
}
"""


def test_additional_bindings_and_the_openapi_command(workspace, scaffold, tmp_path):
    proto = tmp_path / "echo.proto"
    proto.write_text(ECHO_PROTO)
    assert scaffold("neuron", "create", "--proto", str(proto), "--out", "echo").code == 0
    root = workspace / "neurons/echo"
    methods = root / "methods.py"
    methods.write_text(methods.read_text().replace(
        '        # TODO: implement Say.\n        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Say is not implemented yet")',
        "        return request"))
    r = scaffold("openapi", "--proto", str(proto))
    assert r.code == 0, r.output
    doc = json.loads(r.out)
    assert set(doc["paths"]) == {"/v1/say", "/v1/say/{id}", "/v1/messages/{id}/text"}
    assert json.loads((root / "openapi.json").read_text()) == doc
    server = ServerProcess(root)
    gateway = Gateway(root, server.target)
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            assert http.post("/v1/say", json={"id": "1", "text": "hi", "times": 2}).json() == {"id": "1", "text": "hi", "times": 2}
            assert http.get("/v1/say/7", params={"text": "q", "times": "3"}).json() == {"id": "7", "text": "q", "times": 3}
            assert http.put("/v1/messages/9/text", json="body text").json() == {"id": "9", "text": "body text"}
            assert http.put("/v1/say").status_code == 405
        run_schemathesis(root / "openapi.json", gateway.url)
    finally:
        gateway.stop()
        server.stop()
    nohttp = tmp_path / "nohttp.proto"
    nohttp.write_text('syntax = "proto3";\npackage n.v1;\nmessage M {}\nservice S { rpc A(M) returns (M); }\n')
    r = scaffold("openapi", "--proto", str(nohttp))
    assert r.code == 2 and "google.api.http" in r.err
