"""Issue 13 item 2: the gateway's in-process mode (GRPC_TARGET unset: the neuron's servicers run
in the gateway process, behind the gRPC server's interceptors) against the proxy mode, over real
sockets on 127.0.0.1: the same requests must get byte-identical answers from both, the server's
protections (auth, admission limits) must hold in-process, and SIGTERM must let admitted calls
finish."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from tests.helpers import ServerProcess
from tests.test_gateway import Gateway
from tests.test_gateway_hostile import echo_neuron, figure  # noqa: F401 - fixture

# Calls admitted at once: GRPC_MAX_WORKERS=3 leaves one (the server keeps a worker for health).
LIMITED = {"AUTH_MODE": "api-key", "API_KEYS": "k1", "GRPC_MAX_WORKERS": "3", "LOG_EVERY_CALL": "true"}
KEY = {"x-api-key": "k1"}

# (method, url, headers, body): answers the two modes must agree on, byte for byte.
SAME = {
    "echo": ("POST", "/v1/say", KEY, b'{"id": "1", "text": "hi"}'),
    "query and path": ("GET", "/v1/say/7?text=q&times=3", KEY, b""),
    "no API key": ("GET", "/v1/say/1", {}, b""),
    "wrong API key": ("GET", "/v1/say/1", {"x-api-key": "nope"}, b""),
    "AIP-193 details": ("GET", "/v1/say/9?text=details", KEY, b""),
    "exception": ("GET", "/v1/say/1?text=boom", KEY, b""),
    "code then exception": ("GET", "/v1/say/1?text=code-then-boom", KEY, b""),
    "no route": ("GET", "/v2/nowhere", KEY, b""),
    "wrong verb": ("DELETE", "/v1/say", KEY, b""),
    "too large": ("POST", "/v1/say", {**KEY, "content-length": "99999999"}, b""),
    "bad JSON": ("POST", "/v1/say", KEY, b"{nope"),
    "stream": ("GET", "/v1/count/3?times=3", KEY, b""),
    "stream failing": ("GET", "/v1/count/3?times=5&text=fail", KEY, b""),
    "client streaming": ("POST", "/v1/collect", KEY, b"{}"),
}


@pytest.fixture(scope="module")
def both(echo_neuron):
    """{mode: Gateway} for the echo neuron with API keys and one call admitted at a time."""
    root, _server = echo_neuron
    server = ServerProcess(root, LIMITED)
    gateways = {"proxy": Gateway(root, server.target, LIMITED), "in-process": Gateway(root, None, LIMITED)}
    yield gateways
    for gateway in gateways.values():
        gateway.stop()
    server.stop()


def ask(gateway: Gateway, method: str, url: str, headers: dict, body: bytes) -> tuple[int, bytes]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        if "content-length" in headers:  # a declared size, no body: refused before reading
            from tests.test_gateway_hostile import raw_exchange

            head = f"{method} {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {headers['content-length']}\r\n\r\n"
            answer = raw_exchange(gateway.port, head.encode(), deadline=10)
            return answer["status"], answer["body"]
        r = http.request(method, url, headers=headers, content=body)
        return r.status_code, r.content


def test_both_modes_answer_byte_for_byte_alike(both):
    answers = {name: {mode: ask(g, *request) for mode, g in both.items()} for name, request in SAME.items()}
    figure("in-process vs proxy", {name: [a["in-process"][0], a["in-process"][1][:120].decode(errors="replace")]
                                   for name, a in answers.items()})
    for name, a in answers.items():
        assert a["in-process"] == a["proxy"], (name, a)
    status = {name: a["in-process"][0] for name, a in answers.items()}
    assert status == {"echo": 200, "query and path": 200, "no API key": 401, "wrong API key": 403, "AIP-193 details": 400,
                      "exception": 500, "code then exception": 404, "no route": 404, "wrong verb": 405,
                      "too large": 413, "bad JSON": 400, "stream": 200, "stream failing": 200, "client streaming": 501}
    body = {name: json.loads(a["in-process"][1]) for name, a in answers.items() if not name.startswith("stream")}
    assert body["no API key"]["error"]["status"] == "UNAUTHENTICATED"
    assert body["exception"] == {"error": {"code": 500, "message": "internal error", "status": "INTERNAL"}}
    assert body["code then exception"] == {"error": {"code": 404, "message": "not_found", "status": "NOT_FOUND"}}
    assert body["AIP-193 details"]["error"]["details"] == [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "BAD_ID", "domain": "echo.test", "metadata": {"id": "9"}},
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "id", "description": "must be a number"}]}]
    lines = [json.loads(line) for line in answers["stream failing"]["in-process"][1].splitlines()]
    assert lines[-1] == {"error": {"code": 400, "message": "stopped at 2", "status": "FAILED_PRECONDITION"}}
    for a in answers.values():
        assert b"secret" not in a["in-process"][1] and b"Traceback" not in a["in-process"][1]


@pytest.mark.parametrize("mode", ["proxy", "in-process"])
def test_admission_limit_is_429_in_both_modes(both, mode):
    """One call admitted at a time: while a slow one runs, the next is RESOURCE_EXHAUSTED."""
    gateway = both[mode]
    slow: dict = {}

    def hold() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            for _ in range(50):  # a probe below may hold the one slot for a moment: then ask again
                slow["r"] = http.get("/v1/say/1", params={"text": "sleep:5"}, headers=KEY)
                if slow["r"].status_code != 429:
                    return
                time.sleep(0.02)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        refused = None
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            deadline = time.monotonic() + 4.5  # while the slow call holds the slot (generous: xdist load)
            while time.monotonic() < deadline:
                r = http.get("/v1/say/2", headers=KEY)
                if r.status_code == 429:
                    refused = r
                    break
                time.sleep(0.05)
    finally:
        thread.join(timeout=30)
    assert refused is not None, "no 429 while the only admitted call was running"
    assert refused.json() == {"error": {"code": 429, "message": "too many calls in flight; retry later",
                                        "status": "RESOURCE_EXHAUSTED"}}
    assert slow["r"].status_code == 200  # the admitted call finished with its own result


def test_in_process_sigterm_lets_admitted_calls_finish(echo_neuron):
    root, _server = echo_neuron
    gateway = Gateway(root, None, {"SHUTDOWN_GRACE_SECONDS": "8"})
    slow: dict = {}

    def call() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            slow["r"] = http.get("/v1/say/1", params={"text": "sleep:1.5"})

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)
    gateway.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    out = gateway.stop()
    assert slow["r"].status_code == 200 and slow["r"].json()["text"] == "sleep:1.5", out
    # uvicorn re-raises the SIGTERM it handled once it has shut down: that is its exit status.
    assert gateway.proc.returncode in (0, -signal.SIGTERM), out


def test_in_process_refuses_bad_settings_in_one_line(echo_neuron):
    """AUTH_MODE=api-key without keys: exit 2 and one log line, as the server does."""
    import os
    import subprocess
    import sys

    root, _server = echo_neuron
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_TARGET", "PYTHONPATH")}
    r = subprocess.run([sys.executable, "gateway.py"], cwd=root, env={**env, "AUTH_MODE": "api-key", "PORT": "0"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "API_KEYS" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr


def test_in_process_a_call_that_never_ends_does_not_keep_the_gateway_from_exiting(echo_neuron):
    """The in-process gateway, like the server: past SHUTDOWN_GRACE_SECONDS a stuck call is
    abandoned and the process exits (Cloud Run would SIGKILL it at 10 s)."""
    root, _server = echo_neuron
    gateway = Gateway(root, None, {"SHUTDOWN_GRACE_SECONDS": "1"})
    stuck: dict = {}

    def call() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            try:
                stuck["r"] = http.get("/v1/say/1", params={"text": "sleep:60"})
            except httpx.HTTPError as exc:
                stuck["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    try:
        gateway.proc.wait(timeout=20)
    finally:
        out = gateway.stop()
    took = time.monotonic() - started
    assert took < 8, f"the gateway took {took:.1f} s to exit: {out}"
    assert gateway.proc.returncode in (0, -signal.SIGTERM), out
