"""Helpers shared by tests that run generated servers as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0, output=None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {port} did not start:\n{''.join(output or [])}") from None
            time.sleep(0.02)


def free_block(count: int, attempts: int = 50) -> int:
    """A port P such that P .. P + count - 1 are all free on 127.0.0.1 (for commands that take
    one port and use the next ones too)."""
    import socket

    for _ in range(attempts):
        base = free_port()
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


class ServerProcess:
    """``python server.py`` of a neuron, as Cloud Run starts it, on a free loopback port
    (``python``: another interpreter, e.g. of a virtual environment the test built)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, python: str = sys.executable) -> None:
        self.port = free_port()
        full = {**os.environ, **(env or {}), "PORT": str(self.port), "HOST": "127.0.0.1"}
        full.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen([python, "server.py"], cwd=root, env=full, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        # Read the output as it comes: a full pipe would block the server's log writes (and
        # with them the calls being logged).
        self.output: list[str] = []
        self._reader = threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True)
        self._reader.start()
        try:
            wait_for_port(self.port, self.proc, output=self.output)
        except BaseException:
            self.kill()
            raise
        self.target = f"127.0.0.1:{self.port}"

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 15.0) -> str:
        """SIGTERM (the server drains), then SIGKILL if it is still there after ``timeout`` s."""
        if self.proc.poll() is None:
            self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        finally:
            self._reader.join(timeout=5)
        return "".join(self.output)


def forget_package(top: str) -> None:
    """Drop ``top`` and its submodules from sys.modules, so the next import finds them in the
    folder now first on sys.path: each neuron has its own protobuf/xmpl/... package."""
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def import_stubs(root: Path, module: str):
    """Import a generated stub module from a neuron's protobuf/ folder."""
    import importlib

    path = str(root / "protobuf")
    forget_package(module.split(".")[0])
    sys.path.insert(0, path)
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(path)
