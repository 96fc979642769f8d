"""Fixtures for xmpl.tc.services-frontend-v1's tests: the frontend with the neurons it calls.

The standard fixtures (``emulator``, ``server``, ``channel``) come from scaffold-runtime's
pytest plugin; ``server`` runs the frontend in this process. The authentication and
management neurons run for real beside it: each its own ``python server.py`` on 127.0.0.1,
on the same Firestore emulator, found through DEP_AUTH_TARGET and DEP_MANAGEMENT_TARGET as
on Cloud Run. ``google`` stands in for Google's part of service-to-service calls (a signing
key and metadata servers handing out ID tokens), so the allow-lists run for real too.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from scaffold_runtime.testing import free_port

pytest_plugins = ["scaffold_runtime.pytest_plugin"]

NEURONS = Path(__file__).resolve().parents[2]
AUTH, MANAGEMENT, FRONTEND = "services-authentication-v1", "resources-functions-v1", "services-frontend-v1"
FRONTEND_SA = "run-services-frontend-v1@xmpl-tc-dev.iam.gserviceaccount.com"


class NeuronProcess:
    """``python server.py`` of the neuron in ``folder`` on 127.0.0.1 and a free port, with
    ``env`` on top of this process's environment; ready (health SERVING) when made."""

    def __init__(self, folder: str, **env: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            [sys.executable, "server.py"],
            cwd=NEURONS / folder,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **env},
        )
        try:
            self._wait_serving(60)
        except Exception:
            self.stop()
            raise

    def _wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.proc.args} exited with {self.proc.returncode}: {self.output()}")
                try:
                    if (
                        health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not serving after {timeout:.0f} s: {self.output()}")
                time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM (the server drains), then SIGKILL if it is still there after 15 s."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(15)
        self.log.close()


def firestore_env(emulator) -> dict[str, str]:
    return {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": emulator.project}


@pytest.fixture(scope="session", autouse=True)
def backends(emulator):
    """The authentication and management neurons, plaintext and open (as `scaffold neuron run`
    starts them); the in-process frontend finds them through DEP_*_TARGET."""
    auth = NeuronProcess(AUTH, **firestore_env(emulator))
    management = NeuronProcess(MANAGEMENT, **firestore_env(emulator))
    os.environ["DEP_AUTH_TARGET"], os.environ["DEP_MANAGEMENT_TARGET"] = auth.target, management.target
    yield auth, management
    auth.stop()
    management.stop()


@pytest.fixture(autouse=True)
def _clean_backends(emulator):
    """Each test starts with no users, tokens or functions."""
    for database in (AUTH, MANAGEMENT):
        emulator.wipe(database)


@pytest.fixture
def start():
    """start(folder, **env): one more NeuronProcess, stopped after the test."""
    started: list[NeuronProcess] = []

    def run(folder: str, **env: str) -> NeuronProcess:
        started.append(NeuronProcess(folder, **env))
        return started[-1]

    yield run
    for neuron in started:
        neuron.stop()


class FakeGoogle:
    """Google's side of Cloud Run service-to-service calls, on 127.0.0.1.

    ``certs_url``: the public key ID tokens are signed with (a called neuron's AUTH_CERTS_URL).
    ``metadata(email)``: the host:port of a metadata server whose identity endpoint hands
    out ID tokens of that service account (a calling neuron's GCE_METADATA_HOST).
    ``token(email, audience)``: such a token, for calls made by hand.
    """

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from google.auth import crypt

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.signer = crypt.RSASigner.from_string(pem, key_id="test-key")
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.servers: list[http.server.HTTPServer] = []
        certs = json.dumps({"test-key": public.decode()}).encode()
        self.certs_url = f"http://{self._serve(lambda path, query, headers: certs if path == '/certs' else None)}/certs"

    def token(self, email: str, audience: str) -> str:
        from google.auth import jwt

        t = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "iat": t,
            "exp": t + 3600,
            "sub": email,
            "email": email,
            "email_verified": True,
        }
        return jwt.encode(self.signer, claims).decode()

    def metadata(self, email: str) -> str:
        def identity(path, query, headers):
            if path != "/computeMetadata/v1/instance/service-accounts/default/identity":
                return None
            if headers.get("Metadata-Flavor") != "Google" or not query.get("audience"):
                return None
            return self.token(email, query["audience"][0]).encode()

        return self._serve(identity)

    def _serve(self, answer) -> str:
        """An HTTP server on 127.0.0.1 answering GETs with ``answer(path, query, headers)``
        (None: 404); returns its host:port."""

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                body = answer(url.path, urllib.parse.parse_qs(url.query), self.headers)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="session")
def google():
    fake = FakeGoogle()
    yield fake
    fake.close()


def audience(folder: str) -> str:
    """The Cloud Run URL a neuron would have: what ID tokens for it are minted for."""
    return f"https://{folder}-123456789.europe-west1.run.app"


@pytest.fixture
def platform(emulator, google, start):
    """The three neurons as on Cloud Run: authentication and management admit only the
    frontend's service account (AUTH_MODE=id-token, AUTH_ALLOWED_CALLERS); the frontend gets
    its ID tokens from a metadata server. Returns {folder: NeuronProcess}."""
    callee = {
        "AUTH_MODE": "id-token",
        "AUTH_CERTS_URL": google.certs_url,
        "AUTH_ALLOWED_CALLERS": FRONTEND_SA,
        **firestore_env(emulator),
    }
    auth = start(AUTH, AUTH_AUDIENCE=audience(AUTH), **callee)
    management = start(MANAGEMENT, AUTH_AUDIENCE=audience(MANAGEMENT), **callee)
    frontend = start(
        FRONTEND,
        GCE_METADATA_HOST=google.metadata(FRONTEND_SA),
        DEP_AUTH_TARGET=auth.target,
        DEP_AUTH_AUDIENCE=audience(AUTH),
        DEP_MANAGEMENT_TARGET=management.target,
        DEP_MANAGEMENT_AUDIENCE=audience(MANAGEMENT),
    )
    return {AUTH: auth, MANAGEMENT: management, FRONTEND: frontend}
