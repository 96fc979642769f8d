"""TLS, mutual TLS, per-call authentication and compression, over real channels on 127.0.0.1."""

from __future__ import annotations

import datetime
import http.server
import importlib.util
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from generator import certs
from tests.helpers import ServerProcess, forget_package, free_port

TRANSLATOR = "xmpl.br.services-translator-v1"
ECHO_IMPL = (
    "        from scaffold_runtime.auth import caller\n\n"
    "        return translator_pb2.EchoResponse(text=f\"{request.text}|{caller()}\")"
)


@pytest.fixture(scope="module")
def neuron(tmp_path_factory):
    """A translator neuron whose Echo answers with the text and the caller's identity."""
    from generator import cli

    tmp = tmp_path_factory.mktemp("sec")
    old = os.getcwd()
    try:
        os.chdir(tmp)
        assert cli.run(["init", "ws", "--org", "xmpl", "--product", "br"]) == 0
        os.chdir(tmp / "ws")
        assert cli.run(["proto", "create", TRANSLATOR]) == 0
        assert cli.run(["neuron", "create", TRANSLATOR]) == 0
    finally:
        os.chdir(old)
    root = tmp / "ws/neurons/services-translator-v1"
    methods = root / "methods.py"
    methods.write_text(methods.read_text().replace(
        '        # TODO: implement Echo.\n        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Echo is not implemented yet")',
        ECHO_IMPL))
    return root


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, a client certificate, an expired server
    certificate, and a second CA nobody trusts."""
    out = tmp_path_factory.mktemp("pki")
    ca, ca_cert, ca_key = certs.make_ca()
    server = certs.issue(ca_cert, ca_key, "localhost", ["localhost", "127.0.0.1"])
    client = certs.issue(ca_cert, ca_key, "client", [], client=True)
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = certs.issue(ca_cert, ca_key, "localhost", ["127.0.0.1"], days=1, not_before=long_ago)
    other, _, _ = certs.make_ca()
    files = {"ca.pem": ca.cert_pem, "server.pem": server.cert_pem, "server.key": server.key_pem,
             "client.pem": client.cert_pem, "client.key": client.key_pem, "expired.pem": expired.cert_pem,
             "expired.key": expired.key_pem, "other-ca.pem": other.cert_pem}
    for name, data in files.items():
        (out / name).write_bytes(data)
    return out


class Server(ServerProcess):
    pass


@pytest.fixture
def serve(neuron):
    started = []

    def start(**env) -> Server:
        s = Server(neuron, env)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop()


def client_module(neuron: Path):
    """The neuron's own generated client.py."""
    forget_package("xmpl")
    spec = importlib.util.spec_from_file_location("neuron_client_under_test", neuron / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def echo(neuron: Path, target: str, text: str = "hi", **options) -> str:
    client = client_module(neuron)
    from xmpl.br.services.translator.v1 import translator_pb2

    with client.Client(target, **options) as c:
        return c.translator_service.Echo(translator_pb2.EchoRequest(text=text), timeout=10).text


def echo_code(neuron: Path, target: str, **options) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        echo(neuron, target, **options)
    return err.value.code()


def test_plaintext(serve, neuron):
    s = serve()
    assert echo(neuron, s.target) == "hi|"


def test_tls_with_the_right_ca(serve, neuron, pki):
    s = serve(TLS_CERT_FILE=str(pki / "server.pem"), TLS_KEY_FILE=str(pki / "server.key"))
    assert echo(neuron, s.target, root_cert=pki / "ca.pem") == "hi|"
    assert echo_code(neuron, s.target, root_cert=pki / "other-ca.pem") == grpc.StatusCode.UNAVAILABLE
    assert echo_code(neuron, s.target) == grpc.StatusCode.UNAVAILABLE  # plaintext client, TLS server


def refused_start(neuron: Path, **settings) -> str:
    """Run server.py with ``settings``; assert it refuses to start with one clear log line
    and no traceback; return that line's message."""
    env = {**os.environ, "PORT": str(free_port()), "HOST": "127.0.0.1", **settings}
    r = subprocess.run([sys.executable, "server.py"], cwd=neuron, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "Failed to bind" not in r.stdout + r.stderr
    (line,) = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert line["severity"] == "CRITICAL" and line["message"].startswith("cannot start: ")
    return line["message"]


def test_tls_settings_that_cannot_work_refuse_to_start(neuron, pki, tmp_path):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    empty = tmp_path / "empty-ca.pem"
    empty.write_text("")
    cert, key = str(pki / "server.pem"), str(pki / "server.key")
    assert "expired on" in refused_start(neuron, TLS_CERT_FILE=str(pki / "expired.pem"), TLS_KEY_FILE=str(pki / "expired.key"))
    assert "not a PEM certificate and its private key" in refused_start(
        neuron, TLS_CERT_FILE=cert, TLS_KEY_FILE=str(pki / "expired.key"))  # a key of another certificate
    assert "not a PEM certificate and its private key" in refused_start(neuron, TLS_CERT_FILE=str(garbage), TLS_KEY_FILE=key)
    missing = refused_start(neuron, TLS_CERT_FILE=str(tmp_path / "nope.pem"), TLS_KEY_FILE=key)
    assert "TLS_CERT_FILE=" in missing and "cannot read it" in missing
    assert "holds no PEM CA certificate" in refused_start(neuron, TLS_CERT_FILE=cert, TLS_KEY_FILE=key,
                                                          TLS_CLIENT_CA_FILE=str(empty))


def test_mutual_tls(serve, neuron, pki):
    s = serve(TLS_CERT_FILE=str(pki / "server.pem"), TLS_KEY_FILE=str(pki / "server.key"),
              TLS_CLIENT_CA_FILE=str(pki / "ca.pem"))
    assert echo(neuron, s.target, root_cert=pki / "ca.pem", client_cert=pki / "client.pem",
                client_key=pki / "client.key") == "hi|"
    assert echo_code(neuron, s.target, root_cert=pki / "ca.pem") == grpc.StatusCode.UNAVAILABLE


def test_api_keys(serve, neuron, tmp_path):
    s = serve(AUTH_MODE="api-key", API_KEYS="k-one, k-two")
    reply = echo(neuron, s.target, api_key="k-two")
    assert reply.startswith("hi|api-key:") and "k-two" not in reply
    assert echo_code(neuron, s.target) == grpc.StatusCode.UNAUTHENTICATED
    assert echo_code(neuron, s.target, api_key="k-three") == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as err:
        echo(neuron, s.target, api_key="k-one-but-longer")
    assert err.value.details() == "permission denied"  # nothing that helps guessing
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(s.target) as ch:  # probes need no credentials
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    listed = subprocess.run([grpcurl, "-plaintext", "-H", "x-api-key: k-one", s.target, "list"],
                            capture_output=True, text=True, timeout=30)
    assert "xmpl.br.services.translator.v1.TranslatorService" in listed.stdout
    anonymous = subprocess.run([grpcurl, "-plaintext", s.target, "list"], capture_output=True, text=True, timeout=30)
    assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stderr  # reflection needs a key too
    out = s.stop()
    logged = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e.get("message") == "call refused: PERMISSION_DENIED" for e in logged)
    assert "k-three" not in out and "k-two" not in out


def test_api_keys_from_a_mounted_secret_file(serve, neuron, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# one key per line\nfile-key\n")
    s = serve(AUTH_MODE="api-key", API_KEYS_FILE=str(keys))
    assert echo(neuron, s.target, api_key="file-key").startswith("hi|api-key:")
    assert echo_code(neuron, s.target, api_key="other") == grpc.StatusCode.PERMISSION_DENIED


def test_api_keys_file_removed_while_running_keeps_the_last_keys(serve, neuron, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("file-key\n")
    s = serve(AUTH_MODE="api-key", API_KEYS_FILE=str(keys))
    assert echo(neuron, s.target, api_key="file-key").startswith("hi|api-key:")
    keys.unlink()
    for _ in range(3):
        assert echo(neuron, s.target, api_key="file-key").startswith("hi|api-key:")
        with pytest.raises(grpc.RpcError) as err:
            echo(neuron, s.target, api_key="other")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and str(tmp_path) not in err.value.details()
    keys.write_text("new-key\n")  # a file that comes back is read again
    assert echo(neuron, s.target, api_key="new-key").startswith("hi|api-key:")
    out = s.stop()
    warnings = [json.loads(x) for x in out.splitlines() if "cannot be read" in x]
    assert len(warnings) == 1 and warnings[0]["severity"] == "WARNING"
    assert "UNKNOWN" not in out and "Traceback" not in out


@pytest.fixture(scope="module")
def token_issuer():
    """A stand-in for Google's token signer: an RSA key whose certificate is served on
    127.0.0.1 in the format of https://www.googleapis.com/oauth2/v1/certs."""
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
    body = json.dumps({"test-kid": cert.public_bytes(serialization.Encoding.PEM).decode()}).encode()
    fetches: list[str] = []  # paths asked for; /slow answers after 6 s

    class Certs(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            fetches.append(self.path)
            if self.path.startswith("/slow"):
                time.sleep(6)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "public, max-age=300, must-revalidate")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Certs)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    signer = crypt.RSASigner.from_string(pem, key_id="test-kid")
    other = crypt.RSASigner.from_string(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        key_id="test-kid")

    def token(audience="https://books.example.run.app", exp_in=3600, by=signer, issuer="https://accounts.google.com"):
        now = int(time.time())
        claims = {"iss": issuer, "aud": audience, "iat": now - 10, "exp": now + exp_in,
                  "sub": "1234", "email": "caller@p.iam.gserviceaccount.com"}
        return jwt.encode(by, claims).decode()

    token.other = other
    token.fetches = fetches
    yield f"http://127.0.0.1:{httpd.server_address[1]}/certs", token
    httpd.shutdown()


def test_id_tokens(serve, neuron, token_issuer):
    certs_url, token = token_issuer
    s = serve(AUTH_MODE="id-token", AUTH_AUDIENCE="https://books.example.run.app", AUTH_CERTS_URL=certs_url)
    assert echo(neuron, s.target, id_token=token()) == "hi|caller@p.iam.gserviceaccount.com"
    assert echo_code(neuron, s.target) == grpc.StatusCode.UNAUTHENTICATED
    assert echo_code(neuron, s.target, id_token=token(audience="https://elsewhere")) == grpc.StatusCode.PERMISSION_DENIED
    assert echo_code(neuron, s.target, id_token=token(exp_in=-120)) == grpc.StatusCode.PERMISSION_DENIED
    assert echo_code(neuron, s.target, id_token=token(by=token.other)) == grpc.StatusCode.PERMISSION_DENIED
    assert echo_code(neuron, s.target, id_token=token(issuer="https://evil.example")) == grpc.StatusCode.PERMISSION_DENIED
    assert echo_code(neuron, s.target, id_token="not.a.jwt") == grpc.StatusCode.PERMISSION_DENIED
    out = s.stop()
    calls = [json.loads(line) for line in out.splitlines() if '"grpc.call"' in line]
    assert not calls or all("caller" in c for c in calls if c.get("grpc.code") == "OK")


def test_id_token_certificates_are_cached_and_bad_tokens_cost_no_fetch(serve, neuron, token_issuer):
    certs_url, token = token_issuer
    path = f"/certs-cache-{time.monotonic_ns()}"
    s = serve(AUTH_MODE="id-token", AUTH_AUDIENCE="https://books.example.run.app", AUTH_CERTS_URL=certs_url.replace("/certs", path))
    import base64

    def with_header(header: dict) -> str:  # a real token's claims and signature under another header
        encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).decode().rstrip("=")
        return encoded + "." + token().partition(".")[2]

    malformed = ["not.a.jwt", "x", "a.b.c.d", "eyJhbGciOiJub25lIn0.e30.", with_header({"alg": "HS256", "kid": "test-kid"}),
                 with_header({"alg": "none"}), with_header({"alg": "RS256"})]
    for bad in malformed:  # not an RS256 JWT with a key id: refused without a fetch
        assert echo_code(neuron, s.target, id_token=bad) == grpc.StatusCode.PERMISSION_DENIED
    assert [p for p in token.fetches if p == path] == []
    for _ in range(10):
        assert echo(neuron, s.target, id_token=token()) == "hi|caller@p.iam.gserviceaccount.com"
    for bad in [*malformed, with_header({"alg": "RS256", "kid": "unknown-kid"}), token(by=token.other)]:
        assert echo_code(neuron, s.target, id_token=bad) == grpc.StatusCode.PERMISSION_DENIED
    assert [p for p in token.fetches if p == path] == [path]  # 26 calls, one fetch
    s.stop()


def test_a_slow_certificate_endpoint_is_bounded(serve, neuron, token_issuer):
    certs_url, token = token_issuer
    path = f"/slow-{time.monotonic_ns()}"
    s = serve(AUTH_MODE="id-token", AUTH_AUDIENCE="https://books.example.run.app",
              AUTH_CERTS_URL=certs_url.replace("/certs", path), AUTH_CERTS_TIMEOUT="1")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    codes = [echo_code(neuron, s.target, id_token=token()) for _ in range(3)]
    assert codes == [grpc.StatusCode.UNAVAILABLE] * 3
    with grpc.insecure_channel(s.target) as ch:
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    assert [p for p in token.fetches if p == path] == [path]  # failures are not retried at once
    s.stop()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_calls_round_trip(serve, neuron, algorithm):
    s = serve(GRPC_COMPRESSION=algorithm)
    big = "x" * 200_000
    assert echo(neuron, s.target, text=big, compression=algorithm) == big + "|"


def test_bad_settings_stop_the_server_with_a_message(neuron):
    env = {**os.environ, "PORT": str(free_port()), "HOST": "127.0.0.1", "AUTH_MODE": "api-key"}
    r = subprocess.run([sys.executable, "server.py"], cwd=neuron, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "API_KEYS" in r.stdout and "Traceback" not in r.stdout + r.stderr


def test_grpcurl_talks_to_a_tls_neuron_with_a_key(serve, neuron, pki):
    s = serve(TLS_CERT_FILE=str(pki / "server.pem"), TLS_KEY_FILE=str(pki / "server.key"), AUTH_MODE="api-key", API_KEYS="k1")
    grpcurl = str(Path(sys.executable).parent / "grpcurl")
    ok = subprocess.run([grpcurl, "-cacert", str(pki / "ca.pem"), "-H", "x-api-key: k1", "-d", '{"text": "tls"}',
                         s.target, "xmpl.br.services.translator.v1.TranslatorService/Echo"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["text"].startswith("tls|api-key:")
    denied = subprocess.run([grpcurl, "-cacert", str(pki / "ca.pem"), "-H", "x-api-key: nope", "-d", "{}",
                             s.target, "xmpl.br.services.translator.v1.TranslatorService/Echo"], capture_output=True, text=True, timeout=30)
    assert "PermissionDenied" in denied.stdout + denied.stderr


def test_scaffold_call(serve, neuron, pki, scaffold):
    s = serve(TLS_CERT_FILE=str(pki / "server.pem"), TLS_KEY_FILE=str(pki / "server.key"), AUTH_MODE="api-key", API_KEYS="k1")
    method = "xmpl.br.services.translator.v1.TranslatorService/Echo"
    r = scaffold("call", s.target, method, '{"text": "via call"}', "--cacert", str(pki / "ca.pem"), "--api-key", "k1")
    assert r.code == 0, r.output
    assert json.loads(r.out)["text"].startswith("via call|api-key:")
    r = scaffold("call", s.target, method, "{}", "--cacert", str(pki / "ca.pem"), "-H", "x-api-key:wrong")
    assert r.code == 1 and "PERMISSION_DENIED: permission denied" in r.err
    r = scaffold("call", s.target, "xmpl.br.services.translator.v1.TranslatorService/Nope", "{}", "--cacert", str(pki / "ca.pem"),
                 "--api-key", "k1")
    assert r.code == 2 and "has no method 'Nope'" in r.err
    r = scaffold("call", s.target, method, "{}", "--cacert", str(pki / "ca.pem"))  # reflection needs the key too
    assert r.code == 1 and "UNAUTHENTICATED" in r.err and "--api-key" in r.err
    r = scaffold("call", s.target, method, "{not json", "--cacert", str(pki / "ca.pem"), "--api-key", "k1")
    assert r.code == 2 and "not a valid" in r.err


def test_certs_create_writes_private_keys_and_sans(tmp_path, scaffold):
    r = scaffold("certs", "create", "--hosts", "localhost,127.0.0.1,api.internal", "--client", "--out", str(tmp_path / "c"))
    assert r.code == 0, r.output
    for key in ("ca.key", "server.key", "client.key"):
        assert stat.S_IMODE((tmp_path / "c" / key).stat().st_mode) == 0o600
    from cryptography import x509

    server = x509.load_pem_x509_certificate((tmp_path / "c/server.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "api.internal"}
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    again = scaffold("certs", "create", "--out", str(tmp_path / "c"))
    assert again.code == 1 and "--force" in again.err
