"""`scaffold neuron run` as a whole: ports checked first, and the run fails as one when a part fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import _neuron_testing, need
from tests.helpers import free_port, wait_for_port

BOOKS = "xmpl.br.resources-books-v1"
TRANSLATOR = "xmpl.br.services-translator-v1"


@pytest.fixture
def translator(workspace, scaffold):
    assert scaffold("proto", "create", TRANSLATOR).code == 0
    assert scaffold("neuron", "create", TRANSLATOR).code == 0
    return workspace / "neurons" / "services-translator-v1"


@pytest.fixture
def books(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    assert scaffold("neuron", "create", BOOKS).code == 0
    return workspace / "neurons" / "resources-books-v1"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "PYTHONPATH")}


def run_cli(workspace: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generator", *args], cwd=workspace, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


class Running:
    """``scaffold neuron run`` in its own process group, its output collected as it comes."""

    def __init__(self, workspace: Path, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "generator", "neuron", "run", *args], cwd=workspace,
                                     env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.output: list[str] = []
        self._reader = threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def pid_of(self, pattern: str) -> int:
        """The descendant process whose command line contains ``pattern``."""
        ps = subprocess.run(["ps", "-e", "-ww", "-o", "pid=,ppid=,args="], capture_output=True, text=True).stdout
        rows = [line.split(None, 2) for line in ps.splitlines()]
        family = {self.proc.pid}
        for _ in range(5):
            family |= {int(pid) for pid, ppid, _args in rows if int(ppid) in family}
        pids = [int(pid) for pid, _ppid, args in rows if int(pid) in family and pattern in args]
        assert pids, ps
        return pids[0]

    def finish(self, timeout: float = 60) -> str:
        """Wait for the command to end by itself; return its output."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return "".join(self.output)

    def kill(self) -> None:
        """Stop the command if a test left it running (its emulator is stopped by its own group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def test_busy_server_port_fails_at_once_naming_the_option(books, workspace):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli(workspace, "neuron", "run", BOOKS, "--port", str(port))
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 for the gRPC server is already in use: choose another with --port (PORT)"]
    assert "Firestore emulator" not in r.stdout + r.stderr  # nothing was started


def test_busy_gateway_port_fails_before_anything_starts(books, workspace):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        r = run_cli(workspace, "neuron", "run", BOOKS, "--port", str(port), "--gateway-port", str(busy))
        same = run_cli(workspace, "neuron", "run", BOOKS, "--port", str(port), "--gateway-port", str(port))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"port {busy} on 127.0.0.1 for the HTTP/JSON gateway is already in use" in r.stderr
    assert "--gateway-port" in r.stderr and "emulator" not in r.stderr
    assert same.returncode == 1 and f"cannot share port {port}" in same.stderr
    bad = run_cli(workspace, "neuron", "run", BOOKS, "--port", "70000")
    assert bad.returncode == 2 and "70000" in bad.stderr


def test_gateway_port_option_and_a_dying_gateway_stops_the_run(translator, workspace):
    port, http_port = free_port(), free_port()
    run = Running(workspace, TRANSLATOR, "--port", str(port), "--gateway-port", str(http_port))
    try:
        wait_for_port(port, run.proc, timeout=60, output=run.output)
        wait_for_port(http_port, run.proc, timeout=60, output=run.output)
        os.kill(run.pid_of("gateway.py"), signal.SIGKILL)
        out = run.finish()
    finally:
        run.kill()
    assert f"HTTP/JSON gateway: http://127.0.0.1:{http_port}" in out
    assert run.proc.returncode == 1, out
    assert out.strip().splitlines()[-1] == "error: the HTTP/JSON gateway was killed by SIGKILL"
    assert _port_closed(port), "the gRPC server must stop with the gateway"


def test_a_dying_emulator_stops_the_run(books, workspace):
    need(_neuron_testing().emulator_command() is not None, "the Firestore emulator")
    port = free_port()
    run = Running(workspace, BOOKS, "--port", str(port), "--gateway-port", str(free_port()))
    try:
        wait_for_port(port, run.proc, timeout=120, output=run.output)
        assert any("starting the Firestore emulator" in line for line in run.output)
        os.killpg(os.getpgid(run.pid_of("cloud_firestore_emulator")), signal.SIGKILL)
        out = run.finish()
    finally:
        run.kill()
    assert run.proc.returncode == 1, out
    assert out.strip().splitlines()[-1] == "error: the Firestore emulator was killed by SIGKILL"
    assert _port_closed(port)


def test_a_burst_of_ctrl_c_stops_the_run_cleanly(translator, workspace):
    """Ctrl-C reaches `scaffold neuron run` and runtime.dev together (and the first forwards it):
    a signal landing inside the handler once deadlocked the run. 20 in a burst must still stop it."""
    port = free_port()
    run = Running(workspace, TRANSLATOR, "--port", str(port), "--gateway-port", str(free_port()))
    try:
        wait_for_port(port, run.proc, timeout=60, output=run.output)
        for _ in range(20):
            os.killpg(run.proc.pid, signal.SIGINT)
        out = run.finish(timeout=60)
    finally:
        run.kill()
    assert run.proc.returncode == 0, out
    assert "error:" not in out and _port_closed(port)
