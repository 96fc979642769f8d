"""Issue 12 (real protos): google.api.http path matching (custom verbs, ``**``, literal beats
variable, percent-encoding) and streaming methods over the gateway. Unit tests of the matcher,
then real sockets on 127.0.0.1: googleapis' Secret Manager on the Firestore emulator, and the
echo service of test_gateway_hostile for the streaming kinds."""

from __future__ import annotations

import importlib.util
import json

import httpx
import pytest

from tests.helpers import ServerProcess
from tests.test_gateway import Gateway, generate
from tests.test_gateway_hostile import echo, echo_neuron, figure, google_error  # noqa: F401 - fixtures

gw = importlib.import_module("scaffold_runtime.gateway")


def rule(verb: str, path: str, name: str):
    return gw.Rule(verb, path, "", "", f"/s.S/{name}", object, object)


def route(router, path: str, verb: str = "get"):
    """(method name, variables) of the rule that serves ``verb path``, or None."""
    found = [(r.method.split("/")[-1], v) for r, v in router.lookup(path) if r.verb == verb]
    return found[0] if found else None


SECRETS = [
    rule("get", "/v1/{name=projects/*/secrets/*/versions/*}", "GetSecretVersion"),
    rule("get", "/v1/{name=projects/*/secrets/*/versions/*}:access", "AccessSecretVersion"),
    rule("post", "/v1/{name=projects/*/secrets/*/versions/*}:disable", "DisableSecretVersion"),
]


def test_custom_verbs():
    router = gw.Router(SECRETS)
    name = "projects/p/secrets/s/versions/1"
    assert route(router, f"/v1/{name}:access") == ("AccessSecretVersion", {"name": name})
    assert route(router, f"/v1/{name}") == ("GetSecretVersion", {"name": name})
    assert route(router, f"/v1/{name}:disable", "post") == ("DisableSecretVersion", {"name": name})
    assert route(router, f"/v1/{name}:disable") is None  # GET has no :disable
    # A verb no rule has is part of the segment (an id with ':'), never a different method.
    assert route(router, f"/v1/{name}:other") == ("GetSecretVersion", {"name": name + ":other"})
    assert route(router, "/v1/projects/p/secrets/s/versions:access") is None


def test_template_grammar():
    t = gw.parse_template("/v1/{name=shelves/*/books/*}:move")
    assert t.verb == "move" and [k for k, _ in t.ops] == [gw.LITERAL, gw.LITERAL, gw.ONE, gw.LITERAL, gw.ONE]
    assert gw.parse_template("/v1/{book.name=books/*}").variables == (("book.name", 1, 3),)
    assert gw.parse_template("/v1/a:b:c").verb == "c"  # the verb follows the last ':' of the last segment
    for bad in ("v1/x", "/", "/v1/{name=**}/x/**", "/v1/{name", "/v1/x:", "/v1//x", "/v1/a*b"):
        with pytest.raises(ValueError):
            gw.parse_template(bad)


def test_double_wildcard():
    router = gw.Router([rule("get", "/v1/{path=files/**}", "Files"), rule("get", "/v1/{name=files/**}/meta", "Meta"),
                        rule("get", "/v2/**", "Any")])
    assert route(router, "/v1/files/a/b/c") == ("Files", {"path": "files/a/b/c"})
    assert route(router, "/v1/files/a") == ("Files", {"path": "files/a"})
    assert route(router, "/v1/files/a/b/meta") == ("Meta", {"name": "files/a/b"})
    assert route(router, "/v1/files") is None  # ** takes at least one segment
    assert route(router, "/v2/x/y") == ("Any", {})
    assert route(router, "/v1/files/a//b") is None  # no empty segments


def test_literal_beats_variable_whatever_the_proto_order():
    router = gw.Router([rule("get", "/v1/{name=shelves/*}", "GetShelf"), rule("get", "/v1/shelves/default", "Default"),
                        rule("get", "/v1/{name=**}", "Anything")])
    assert route(router, "/v1/shelves/default") == ("Default", {})
    assert route(router, "/v1/shelves/s1") == ("GetShelf", {"name": "shelves/s1"})
    assert route(router, "/v1/shelves/s1/more") == ("Anything", {"name": "shelves/s1/more"})


def test_percent_encoded_segments():
    router = gw.Router([rule("get", "/v1/{name=books/*}", "GetBook"), rule("get", "/v1/{name=files/**}", "File"),
                        rule("get", "/v1/caf\u00e9", "Cafe"), rule("get", "/v1/ids/{id}", "Id")])
    assert route(router, "/v1/books/a%20b") == ("GetBook", {"name": "books/a b"})
    # google/api/http.proto: a one-segment variable is fully decoded; a multi-segment one keeps %2F.
    assert route(router, "/v1/ids/a%2Fb") == ("Id", {"id": "a/b"})
    assert route(router, "/v1/books/a%2Fb") == ("GetBook", {"name": "books/a%2Fb"})
    assert route(router, "/v1/books/a%3Aaccess") == ("GetBook", {"name": "books/a:access"})  # encoded ':' is no verb
    assert route(router, "/v1/files/x/a%2Fb") == ("File", {"name": "files/x/a%2Fb"})  # multi-segment: '/' stays encoded
    assert route(router, "/v1/caf%C3%A9") == ("Cafe", {})
    with pytest.raises(gw.HttpError):
        router.lookup("/v1/books/%FF")


@pytest.fixture(scope="module")
def secretmanager(tmp_path_factory, corpus, emulator):
    root = generate(tmp_path_factory.mktemp("sm"), corpus / "google/cloud/secretmanager/v1/service.proto",
                    "secretmanager", corpus)
    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
    gateway = Gateway(root, server.target)
    yield gateway
    gateway.stop()
    server.stop()


def test_secretmanager_custom_verbs(secretmanager):
    name = "projects/p/secrets/s/versions/1"
    with httpx.Client(base_url=secretmanager.url, timeout=30) as http:
        access = http.get(f"/v1/{name}:access")
        plain = http.get(f"/v1/{name}")
        regional = http.get("/v1/projects/p/locations/l/secrets/s/versions/1:access")
        figure("custom verbs", {"GET :access": [access.status_code, access.json()["error"]["message"]],
                                "GET plain": [plain.status_code, plain.json()["error"]["message"]]})
        assert "AccessSecretVersion" in google_error(access, 501)["message"]
        assert "AccessSecretVersion" in google_error(regional, 501)["message"]
        assert "AccessSecretVersion" not in plain.json()["error"]["message"]
        assert "GetSecretVersion" in plain.json()["error"]["message"] or plain.status_code == 404
        disable = http.post(f"/v1/{name}:disable", json={})
        assert "DisableSecretVersion" in google_error(disable, 501)["message"]
        assert google_error(http.get(f"/v1/{name}:disable"), 405)["status"] == "UNIMPLEMENTED"


def test_server_streaming(echo):
    with httpx.Client(base_url=echo.url, timeout=30) as http:
        r = http.get("/v1/count/7", params={"times": 3})
        lines = [json.loads(line) for line in r.text.splitlines()]
        figure("server streaming", {"status": r.status_code, "content-type": r.headers.get("content-type"),
                                    "lines": len(lines)})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        assert lines == [{"result": {"id": "7"}}, {"result": {"id": "7", "times": 1}}, {"result": {"id": "7", "times": 2}}]
        failing = [json.loads(line) for line in http.get("/v1/count/7", params={"times": 5, "text": "fail"}).text.splitlines()]
        assert failing[:2] == lines[:2] and len(failing) == 3
        assert failing[2] == {"error": {"code": 400, "message": "stopped at 2", "status": "FAILED_PRECONDITION"}}
        assert http.get("/v1/count/7").text == ""  # an empty stream
        assert google_error(http.get("/v1/count/7", params={"times": "x"}), 400)["status"] == "INVALID_ARGUMENT"


def test_client_and_bidi_streaming_answer_501(echo):
    with httpx.Client(base_url=echo.url, timeout=30) as http:
        collect = google_error(http.post("/v1/collect", json={}), 501)
        chat = google_error(http.post("/v1/chat", json={}), 501)
        figure("client/bidi streaming", {"collect": collect["message"], "chat": chat["message"]})
        assert "Collect is a client-streaming method" in collect["message"]
        assert "Chat is a bidirectional-streaming method" in chat["message"]


def test_streaming_in_openapi(echo_neuron):
    from openapi_spec_validator import validate

    root, _server = echo_neuron
    doc = json.loads((root / "openapi.json").read_text())
    validate(doc)
    count = doc["paths"]["/v1/count/{id}"]["get"]
    stream = count["responses"]["200"]["content"]["application/x-ndjson"]["schema"]
    assert stream["properties"]["result"] == {"$ref": "#/components/schemas/echo.v1.Msg"}
    assert "/v1/collect" not in doc["paths"] and "/v1/chat" not in doc["paths"]
    assert {(m["method"], m["kind"]) for m in doc["x-grpc-only"]} == {
        ("/echo.v1.EchoService/Collect", "client-streaming"), ("/echo.v1.EchoService/Chat", "bidirectional-streaming")}
