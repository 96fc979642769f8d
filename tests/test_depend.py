"""Neurons calling neurons (issue 15): `scaffold neuron depend`, the generated client, ID tokens
from a metadata server, the callee's allow-list, mutual TLS, retries and deadlines.

Everything runs for real on 127.0.0.1: both neurons as processes, the Firestore emulator, an
HTTP metadata server issuing ID tokens signed by a test key whose certificate the callee
fetches (AUTH_CERTS_URL), certificates from `scaffold certs create`.
"""

from __future__ import annotations

import datetime
import http.server
import importlib.util
import json
import os
import shutil
import sys
import threading
import time
import urllib.parse
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.helpers import ServerProcess, forget_package

BOOKS = "xmpl.br.resources-books-v1"
TRANSLATOR = "xmpl.br.services-translator-v1"
EXAMPLE_BOOKS = Path(__file__).resolve().parent.parent / "examples/books/proto/xmpl/br/resources/books/v1/books.proto"
AUDIENCE = "https://books.test.run.app"
CALLER = "run-services-translator-v1@p.iam.gserviceaccount.com"
# Echo("create:ID"), Echo("get:ID"), Echo("list:"): the translator calls books through its
# generated client and answers the book's display name or "error:CODE".
ECHO_IMPL = '''        from xmpl.br.resources.books.v1 import books_pb2

        books = self.deps.clients.books.books_service
        op, _, arg = request.text.partition(":")
        try:
            if op == "create":
                book = books.CreateBook(books_pb2.CreateBookRequest(book_id=arg, book=books_pb2.Book(
                    display_name=arg.upper(), authors=["A"], publisher="P")))
            elif op == "list":
                book = books.ListBooks(books_pb2.ListBooksRequest()).books[0]
            else:
                book = books.GetBook(books_pb2.GetBookRequest(name=f"books/{arg}"))
        except grpc.RpcError as exc:
            return translator_pb2.EchoResponse(text=f"error:{exc.code().name}")
        return translator_pb2.EchoResponse(text=book.display_name)'''


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with books and translator; translator depends on books."""
    from generator import cli

    tmp = tmp_path_factory.mktemp("depend")
    old = os.getcwd()
    try:
        os.chdir(tmp)
        assert cli.run(["init", "ws", "--org", "xmpl", "--product", "br"]) == 0
        os.chdir(tmp / "ws")
        for name in (BOOKS, TRANSLATOR):
            assert cli.run(["proto", "create", name]) == 0
            if name == BOOKS:  # the example's Books proto: the one other tests load in this process
                shutil.copy(EXAMPLE_BOOKS, tmp / "ws/proto/xmpl/br/resources/books/v1/books.proto")
            assert cli.run(["neuron", "create", name]) == 0
        assert cli.run(["neuron", "depend", TRANSLATOR, "resources-books-v1"]) == 0
    finally:
        os.chdir(old)
    root = tmp / "ws"
    methods = root / "neurons/services-translator-v1/methods.py"
    methods.write_text(methods.read_text().replace(
        '        # TODO: implement Echo.\n        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Echo is not implemented yet")',
        ECHO_IMPL))
    return root


def echo(target: str, text: str, ws: Path) -> str:
    """Call the translator's Echo over plaintext (its own client.py's stubs)."""
    path = str(ws / "neurons/services-translator-v1/protobuf")
    forget_package("xmpl")
    sys.path.insert(0, path)
    try:
        from xmpl.br.services.translator.v1 import translator_pb2, translator_pb2_grpc
    finally:
        sys.path.remove(path)
    with grpc.insecure_channel(target) as ch:
        return translator_pb2_grpc.TranslatorServiceStub(ch).Echo(translator_pb2.EchoRequest(text=text), timeout=60).text


@pytest.fixture
def start(ws, emulator):
    """start(folder, **env): a neuron's server.py on a free port; stopped after the test."""
    started: list[ServerProcess] = []
    project = f"demo-{uuid.uuid4().hex[:10]}"

    def run(folder: str, **env) -> ServerProcess:
        # Generous deadlines: the shared machine can make the emulator's first answers slow.
        s = ServerProcess(ws / "neurons" / folder, {"FIRESTORE_EMULATOR_HOST": emulator.host,
                                                     "GOOGLE_CLOUD_PROJECT": project, "FIRESTORE_TIMEOUT_SECONDS": "25",
                                                     "DEP_BOOKS_TIMEOUT": "30", **env})
        started.append(s)
        return s

    yield run
    for s in started:
        if s.proc.poll() is None:
            s.stop()


@pytest.fixture(scope="module")
def google():
    """A stand-in for Google: a signing key whose certificate is served at /certs, and a
    metadata server whose identity endpoint issues tokens for ``state["email"]`` valid for
    ``state["exp_in"]`` s. ``state["fetches"]`` lists the audiences asked for."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.auth import crypt, jwt

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "test signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    certs = json.dumps({"dep-kid": cert.public_bytes(serialization.Encoding.PEM).decode()}).encode()
    signer = crypt.RSASigner.from_string(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        key_id="dep-kid")
    state = {"email": CALLER, "exp_in": 3600, "fetches": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/certs":
                body = certs
            elif url.path == "/computeMetadata/v1/instance/service-accounts/default/identity":
                query = urllib.parse.parse_qs(url.query)
                if self.headers.get("Metadata-Flavor") != "Google" or query.get("format") != ["full"]:
                    self.send_error(403)
                    return
                state["fetches"].append(query["audience"][0])
                t = int(time.time())
                body = jwt.encode(signer, {"iss": "https://accounts.google.com", "aud": query["audience"][0],
                                           "iat": t, "exp": t + state["exp_in"], "sub": "1", "email": state["email"],
                                           "email_verified": True})
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["host"] = f"127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()


def test_depend_records_and_generates(ws, scaffold):
    a = ws / "neurons/services-translator-v1"
    assert (a / "dependencies.toml").read_text().count('folder = "resources-books-v1"') == 1
    assert (a / "protobuf/xmpl/br/resources/books/v1/books_pb2_grpc.py").is_file()
    clients = (a / "deps_clients.py").read_text()
    assert "/xmpl.br.resources.books.v1.BooksService/GetBook" in clients
    assert "CreateBook" not in clients.split("RETRYABLE")[1].split(")")[0]
    # survives update --all, and check sees both up to date
    assert scaffold("neuron", "update", "--all", cwd=ws).code == 0
    assert (a / "dependencies.toml").is_file() and (a / "deps_clients.py").is_file()
    r = scaffold("neuron", "check", "--all", cwd=ws)
    assert r.code == 0, r.output
    # a changed callee proto makes the caller stale
    proto = ws / "proto/xmpl/br/resources/books/v1/books.proto"
    original = proto.read_text()
    proto.write_text(original.replace("string publisher = 4", "string press = 4"))
    try:
        r = scaffold("neuron", "check", TRANSLATOR, cwd=ws)
        assert r.code == 1 and "neuron it calls" in r.output
    finally:
        proto.write_text(original)


@pytest.mark.parametrize("args, message", [
    (("services-translator-v1", "services-translator-v1"), "cannot depend on itself"),
    (("services-translator-v1", "resources-books-v1"), "already depends on"),
    (("resources-books-v1", "services-translator-v1"), "a cycle cannot be deployed"),
    (("services-translator-v1", "nowhere"), "no neuron folder"),
    (("xmpl.br.resources-books-v1", "xmpl.br.resources-shelves-v1"), "no neuron at"),
])
def test_bad_dependencies_are_refused_with_one_message(ws, scaffold, args, message):
    before = (ws / "neurons/services-translator-v1/dependencies.toml").read_text()
    r = scaffold("neuron", "depend", *args, cwd=ws)
    assert r.code != 0 and message in r.err and "Traceback" not in r.output
    assert (ws / "neurons/services-translator-v1/dependencies.toml").read_text() == before
    assert not (ws / "neurons/resources-books-v1/dependencies.toml").exists()


def test_plaintext_call_through_the_generated_client(ws, start):
    books = start("resources-books-v1")
    translator = start("services-translator-v1", DEP_BOOKS_TARGET=books.target)
    assert echo(translator.target, "create:odyssey", ws) == "ODYSSEY"
    assert echo(translator.target, "get:odyssey", ws) == "ODYSSEY"
    assert echo(translator.target, "get:missing", ws) == "error:NOT_FOUND"


def test_in_process_gateway_calls_the_dependency(ws, start, emulator):
    """The translator's gateway, in-process: its own servicer calls Books through deps.clients."""
    import httpx

    from tests.test_gateway import Gateway

    books = start("resources-books-v1")
    translator = ws / "neurons/services-translator-v1"
    gateway = Gateway(translator, None, {"FIRESTORE_EMULATOR_HOST": emulator.host, "DEP_BOOKS_TARGET": books.target,
                                         "DEP_BOOKS_TIMEOUT": "30"})
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            assert http.post("/v1:echo", json={"text": "create:iliad"}).json() == {"text": "ILIAD"}
            assert http.post("/v1:echo", json={"text": "get:iliad"}).json() == {"text": "ILIAD"}
            assert http.post("/v1:echo", json={"text": "get:missing"}).json() == {"text": "error:NOT_FOUND"}
    finally:
        gateway.stop()


def test_id_tokens_from_the_metadata_server(ws, start, google):
    books = start("resources-books-v1", AUTH_MODE="id-token", AUTH_AUDIENCE=AUDIENCE,
                  AUTH_CERTS_URL=f"http://{google['host']}/certs", AUTH_ALLOWED_CALLERS=f"other@p.iam, {CALLER}")
    caller_env = {"DEP_BOOKS_TARGET": books.target, "DEP_BOOKS_AUDIENCE": AUDIENCE, "GCE_METADATA_HOST": google["host"]}
    google.update(email=CALLER, exp_in=3600)
    google["fetches"].clear()
    translator = start("services-translator-v1", **caller_env)
    assert echo(translator.target, "create:iliad", ws) == "ILIAD"
    for _ in range(3):
        assert echo(translator.target, "get:iliad", ws) == "ILIAD"
    assert google["fetches"] == [AUDIENCE]  # one token, reused by four calls

    # A token within the refresh margin (300 s) of its expiry is replaced before each call.
    google.update(exp_in=200)
    google["fetches"].clear()
    near = start("services-translator-v1", **caller_env)
    assert echo(near.target, "get:iliad", ws) == "ILIAD"
    assert echo(near.target, "get:iliad", ws) == "ILIAD"
    assert len(google["fetches"]) == 2

    # A valid, Google-signed token of an identity not on the allow-list: PERMISSION_DENIED.
    google.update(email="intruder@p.iam.gserviceaccount.com", exp_in=3600)
    intruder = start("services-translator-v1", **caller_env)
    assert echo(intruder.target, "get:iliad", ws) == "error:PERMISSION_DENIED"

    # No token at all: UNAUTHENTICATED.
    anonymous = start("services-translator-v1", DEP_BOOKS_TARGET=books.target)
    assert echo(anonymous.target, "get:iliad", ws) == "error:UNAUTHENTICATED"

    # No metadata server: the call fails UNAVAILABLE before it is sent; nothing leaks.
    lost = start("services-translator-v1", **{**caller_env, "GCE_METADATA_HOST": "127.0.0.1:9"})
    assert echo(lost.target, "get:iliad", ws) == "error:UNAVAILABLE"
    google.update(email=CALLER)
    out = books.stop()
    assert "UNKNOWN" not in out and "Traceback" not in out


def test_allowed_callers_setting_that_names_nobody_refuses_to_start(ws):
    import subprocess

    env = {**os.environ, "AUTH_MODE": "id-token", "AUTH_AUDIENCE": AUDIENCE, "AUTH_ALLOWED_CALLERS": "not-an-email",
           "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9", "PORT": "0", "HOST": "127.0.0.1"}
    r = subprocess.run([sys.executable, "server.py"], cwd=ws / "neurons/resources-books-v1", env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "AUTH_ALLOWED_CALLERS" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_mutual_tls_with_scaffold_certs(ws, start, scaffold, tmp_path):
    assert scaffold("certs", "create", "--client", "--out", str(tmp_path / "certs"), cwd=ws).code == 0
    c = tmp_path / "certs"
    books = start("resources-books-v1", TLS_CERT_FILE=str(c / "server.pem"), TLS_KEY_FILE=str(c / "server.key"),
                  TLS_CLIENT_CA_FILE=str(c / "ca.pem"))
    target = books.target.replace("127.0.0.1", "localhost")
    mtls = start("services-translator-v1", DEP_BOOKS_TARGET=target, DEP_BOOKS_TLS_CA=str(c / "ca.pem"),
                 DEP_BOOKS_TLS_CERT=str(c / "client.pem"), DEP_BOOKS_TLS_KEY=str(c / "client.key"))
    assert echo(mtls.target, "create:aeneid", ws) == "AENEID"
    no_cert = start("services-translator-v1", DEP_BOOKS_TARGET=target, DEP_BOOKS_TLS_CA=str(c / "ca.pem"))
    assert echo(no_cert.target, "get:aeneid", ws) == "error:UNAVAILABLE"
    plaintext = start("services-translator-v1", DEP_BOOKS_TARGET=target)
    assert echo(plaintext.target, "get:aeneid", ws) == "error:UNAVAILABLE"


# --- the generated client in this process, against a real gRPC server standing in for books ---


@pytest.fixture
def flaky_books(ws):
    """A books server on 127.0.0.1 answering UNAVAILABLE to the first call of each method (as a
    neuron that is restarting does), OK after; /GetBook with name books/slow sleeps 3 s. It
    records each attempt and the deadline it had left."""
    path = str(ws / "neurons/services-translator-v1/protobuf")
    forget_package("xmpl")
    sys.path.insert(0, path)
    from xmpl.br.resources.books.v1 import books_pb2

    attempts: list[tuple[str, float | None]] = []

    def handler(method):
        def answer(request, context):
            attempts.append((method, context.time_remaining()))
            if getattr(request, "name", "") == "books/slow":
                time.sleep(3)
            if sum(1 for m, _ in attempts if m == method) == 1:
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            return books_pb2.Book(name="books/x", display_name="X")
        return answer

    requests = {"GetBook": books_pb2.GetBookRequest, "CreateBook": books_pb2.CreateBookRequest}
    handlers = {m: grpc.unary_unary_rpc_method_handler(handler(m), request_deserializer=r.FromString,
                                                       response_serializer=books_pb2.Book.SerializeToString)
                for m, r in requests.items()}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("xmpl.br.resources.books.v1.BooksService",
                                                                          handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    spec = importlib.util.spec_from_file_location("deps_clients_under_test",
                                                  ws / "neurons/services-translator-v1/deps_clients.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, f"127.0.0.1:{port}", attempts, books_pb2
    server.stop(0)
    sys.path.remove(path)


def test_get_is_retried_and_create_without_request_id_is_not(flaky_books, monkeypatch):
    deps_clients, target, attempts, books_pb2 = flaky_books
    monkeypatch.setenv("DEP_BOOKS_TARGET", target)
    seen = []

    class Record(grpc.UnaryUnaryClientInterceptor):  # an extra interceptor, as tracing plugs in
        def intercept_unary_unary(self, continuation, details, request):
            seen.append((details.method, details.timeout, dict(details.metadata or ())))
            return continuation(details, request)

    clients = deps_clients.clients(interceptors=(Record(),))
    try:
        book = clients.books.books_service.GetBook(books_pb2.GetBookRequest(name="books/x"))
        assert book.display_name == "X"
        assert [m for m, _ in attempts] == ["GetBook", "GetBook"]  # UNAVAILABLE, then retried by gRPC
        with pytest.raises(grpc.RpcError) as err:
            clients.books.books_service.CreateBook(books_pb2.CreateBookRequest(book_id="x"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert [m for m, _ in attempts].count("CreateBook") == 1  # never sent twice
        assert [s[0] for s in seen] == ["/xmpl.br.resources.books.v1.BooksService/GetBook",
                                        "/xmpl.br.resources.books.v1.BooksService/CreateBook"]
        assert all(s[1] == 10.0 for s in seen)  # the default deadline is already set
    finally:
        clients.close()


def test_default_deadline_applies(flaky_books, monkeypatch):
    deps_clients, target, attempts, books_pb2 = flaky_books
    monkeypatch.setenv("DEP_BOOKS_TARGET", target)
    client = deps_clients.BooksClient()
    try:
        client.books_service.GetBook(books_pb2.GetBookRequest(name="books/warm"), timeout=30)  # UNAVAILABLE, retried
        _method, remaining = attempts[-1]
        assert remaining is not None and remaining > 10  # an explicit timeout wins
        client.books_service.GetBook(books_pb2.GetBookRequest(name="books/x"))
        # no timeout given: 10 s (the wire rounds a deadline up a little)
        assert attempts[-1][1] is not None and 5 < attempts[-1][1] < 11
    finally:
        client.close()
    monkeypatch.setenv("DEP_BOOKS_TIMEOUT", "0.5")
    short = deps_clients.BooksClient()
    try:
        with pytest.raises(grpc.RpcError) as err:
            short.books_service.GetBook(books_pb2.GetBookRequest(name="books/slow"))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert attempts[-1][1] < 1
    finally:
        short.close()


@pytest.mark.parametrize("env, message", [
    ({}, "DEP_BOOKS_TARGET is not set"),
    ({"DEP_BOOKS_TARGET": "127.0.0.1:1", "DEP_BOOKS_TIMEOUT": "soon"}, "DEP_BOOKS_TIMEOUT"),
    ({"DEP_BOOKS_TARGET": "127.0.0.1:1", "DEP_BOOKS_TLS_CERT": "c.pem"}, "DEP_BOOKS_TLS_KEY"),
    ({"DEP_BOOKS_TARGET": "127.0.0.1:1", "DEP_BOOKS_TLS_CA": "/nonexistent/ca.pem"}, "cannot read"),
])
def test_bad_client_settings_say_which(flaky_books, monkeypatch, env, message):
    from scaffold_runtime.neuron_client import ConfigError

    deps_clients = flaky_books[0]
    for k in [k for k in os.environ if k.startswith("DEP_BOOKS")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message):
        _ = deps_clients.clients().books


def test_terraform_wires_the_caller_and_the_callee(ws):
    """A reads B's address and may invoke B only; B admits only A's service account."""
    import shutil
    import subprocess

    import hcl2

    from tests.conftest import REPO, need
    from tests.test_terraform import blocks, unq

    def parse(path: Path) -> dict:
        with path.open() as fh:
            return hcl2.load(fh)

    a = parse(ws / "neurons/services-translator-v1/terraform/cloudrun.tf")
    res = blocks(a, "resource")
    grants = {k: v for k, v in res.items() if k.startswith("google_cloud_run_v2_service_iam_member.")}
    assert set(grants) == {"google_cloud_run_v2_service_iam_member.calls_books",
                           "google_cloud_run_v2_service_iam_member.gateway_calls_books",
                           "google_cloud_run_v2_service_iam_member.gateway_calls_service"}
    # The in-process gateway calls the dependency itself; the proxy calls only its own service.
    assert grants["google_cloud_run_v2_service_iam_member.gateway_calls_books"]["count"] == \
        "${var.gateway && local.gateway_in_process ? 1 : 0}"
    assert grants["google_cloud_run_v2_service_iam_member.gateway_calls_service"]["count"] == \
        "${var.gateway && !local.gateway_in_process ? 1 : 0}"
    call = grants["google_cloud_run_v2_service_iam_member.calls_books"]
    assert unq(call["role"]) == "roles/run.invoker"
    assert unq(call["member"]) == "serviceAccount:${module.service.service_account_email}"
    assert unq(call["name"]) == "${data.google_cloud_run_v2_service.dep_books.name}"
    assert not any(k.startswith(("google_project_iam", "google_service_account_iam")) for k in res)  # nothing more
    data = {f"{kind.strip(chr(34))}.{name.strip(chr(34))}": body for entry in a["data"]
            for kind, named in entry.items() for name, body in named.items()}
    assert unq(data["google_cloud_run_v2_service.dep_books"]["name"]) == "${var.dep_books_service}"
    module = {k.strip('"'): v for k, v in a["module"][0].items()}["service"]
    assert module["env"] == "${local.service_env}"
    assert a["locals"][0]["service_env"] == "${merge(var.env, local.dependency_env)}"
    env = {k: unq(v) for k, v in a["locals"][1]["dependency_env"].items()}
    assert env["DEP_BOOKS_TARGET"].endswith(".run.app:443") and env["DEP_BOOKS_AUDIENCE"].startswith("https://${var.dep_books_service}-")
    assert env["DEP_BOOKS_TLS"] == "true"
    a_vars = blocks(parse(ws / "neurons/services-translator-v1/terraform/variables.tf"), "variable")
    assert unq(a_vars["dep_books_service"]["default"]) == "resources-books-v1"

    b = parse(ws / "neurons/resources-books-v1/terraform/cloudrun.tf")
    b_module = {k.strip('"'): v for k, v in b["module"][0].items()}["service"]
    assert b_module["env"] == "${local.service_env}"
    assert b["locals"][0]["service_env"] == "${merge(var.env, local.caller_env)}"  # last: var.env cannot turn auth off
    caller_env = {k: unq(v) for k, v in b["locals"][1]["caller_env"].items()}
    assert caller_env["AUTH_MODE"] == "id-token"
    assert caller_env["AUTH_AUDIENCE"].startswith("https://${var.service_name}-${data.google_project.this.number}.")
    assert "var.callers" in caller_env["AUTH_ALLOWED_CALLERS"] and "iam.gserviceaccount.com" in caller_env["AUTH_ALLOWED_CALLERS"]
    assert not any(k.startswith("google_cloud_run_v2_service_iam_member.calls_") for k in blocks(b, "resource"))
    b_vars = blocks(parse(ws / "neurons/resources-books-v1/terraform/variables.tf"), "variable")
    assert [unq(c) for c in b_vars["callers"]["default"]] == ["services-translator-v1"]
    # The allowed caller's email is the one the shared module gives the caller's account.
    module_main = (REPO / "terraform/modules/grpc-service/main.tf").read_text()
    assert 'substr("run-${var.service_name}", 0, 30)' in module_main and "trimsuffix(local.account_id" in module_main

    exe = shutil.which("terraform")
    need(exe is not None, "terraform")
    r = subprocess.run([exe, "fmt", "-check", "-recursive", "-diff", str(ws / "neurons")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    checkov = REPO / ".cache/checkov-venv/bin/checkov"
    need(checkov.exists(), "checkov (scripts/test.sh installs it in .cache/checkov-venv)")
    r = subprocess.run([str(checkov), "-d", str(ws / "neurons"), "--framework", "terraform", "--compact", "--quiet",
                        "--skip-download"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_neuron_run_starts_both_wired_and_ctrl_c_stops_all(ws, tmp_path):
    """`scaffold neuron run A B`: both start on one emulator, A reaches B, SIGINT stops everything."""
    import contextlib
    import signal
    import subprocess

    from tests.conftest import REPO
    from tests.helpers import free_block, wait_for_port

    port = free_block(4)  # two servers and two gateways on port .. port + 3
    env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "PYTHONPATH")}
    env.update(PYTHONPATH=str(REPO), FIRESTORE_TIMEOUT_SECONDS="25", DEP_BOOKS_TIMEOUT="30")  # a loaded machine
    log_path = tmp_path / "run.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "generator", "neuron", "run", TRANSLATOR, "resources-books-v1",
                             "--port", str(port)], cwd=ws, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own group: a failed test stops every child too
    try:
        for p in (port, port + 2):
            wait_for_port(p, proc, timeout=120)
        assert echo(f"127.0.0.1:{port}", "create:beowulf", ws) == "BEOWULF", log_path.read_text()  # A -> B -> emulator
        assert echo(f"127.0.0.1:{port}", "get:beowulf", ws) == "BEOWULF"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the run (servers, gateways, emulator)
        proc.wait()
    log.close()
    out = log_path.read_text()
    assert f"DEP_BOOKS_TARGET=127.0.0.1:{port + 2}" in out and out.count("Firestore emulator:") == 1
    import socket

    for p in (port, port + 1, port + 2, port + 3):  # servers and gateways are gone
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p), timeout=1).close()
    assert "Traceback" not in out


def test_neuron_run_refuses_a_busy_port_before_starting_anything(ws, scaffold):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = scaffold("neuron", "run", TRANSLATOR, "resources-books-v1", "--port", str(busy - 2), cwd=ws)
    assert r.code != 0 and f"port {busy} on 127.0.0.1 is in use" in r.err and "Traceback" not in r.output
