"""Run the neuron locally: ``python -m scaffold_runtime.dev`` (what ``scaffold neuron run`` does).

Ports are checked before anything starts: PORT for the gRPC server, GATEWAY_PORT (default
PORT+1) for the HTTP/JSON gateway when the neuron has one. When the neuron uses Firestore and
neither FIRESTORE_EMULATOR_HOST nor GOOGLE_CLOUD_PROJECT is set, the Firestore emulator is
started beside the server on a free port. The three run as one: when any of them fails, the
others are stopped and the exit status is 1, with one line saying which failed and why.
The gateway runs in-process (its own copy of the servicers, on the same emulator or project
and environment as the server; GRPC_TARGET is not passed on). Without PAGE_TOKEN_KEY, one
random key for the run is shared by both, so a page token from one works on the other.
Ctrl-C drains the server, then stops the gateway and the emulator.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path


class Failure(Exception):
    """A part of the local run could not start or stopped; the message says which and why."""


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (None when it can): a bind test, nothing kept."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no obstacle
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            return "already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
    return None


def check_ports(host: str, ports: dict[str, tuple[int, str]]) -> None:
    """Raise :class:`Failure` naming the first port of ``{what: (port, option)}`` that is taken."""
    seen: dict[int, str] = {}
    for what, (port, option) in ports.items():
        if port in seen:
            raise Failure(f"the {what} and the {seen[port]} cannot share port {port}: choose another with {option}")
        seen[port] = what
        problem = port_in_use(host, port)
        if problem:
            raise Failure(f"port {port} on {host} for the {what} is {problem}: choose another with {option}")


class Children:
    """Processes that must live as long as the server: the first to exit stops the server."""

    def __init__(self, signalled: list[str] | None = None) -> None:
        self.failure: str | None = None
        self.signalled = signalled if signalled is not None else []  # the signals this run was sent
        self.closing = threading.Event()
        self.on_failure: Callable[[str], None] = lambda _why: None  # set to the server's stop request
        self._lock = threading.Lock()

    def watch(self, what: str, proc: subprocess.Popen, last_words=lambda: "") -> None:
        def wait() -> None:
            code = proc.wait()
            if self.closing.is_set():
                return
            if code < 0 and self.signalled:
                # Ctrl-C reached it too: a child forked into our process group just before
                # Ctrl-C (Popen makes its new session only after the fork) dies by it.
                return
            why = last_words()
            self.fail(f"the {what} {_exit_reason(code)}" + (f": {why}" if why else ""))

        threading.Thread(target=wait, name=f"watch-{what}", daemon=True).start()

    def fail(self, message: str) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = message
                self.on_failure(message)


def _relay(proc: subprocess.Popen) -> Callable[[], str]:
    """Copy ``proc``'s output to ours as it comes; return a function giving its last error
    line (a log record of severity ERROR or worse, or a line that is not a log record)."""
    last = [""]

    def pump() -> None:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            try:
                record = json.loads(line)
                if isinstance(record, dict) and record.get("severity") in ("ERROR", "CRITICAL"):
                    last[0] = str(record.get("message", ""))
            except ValueError:
                if line.strip():
                    last[0] = line.strip()

    thread = threading.Thread(target=pump, name="relay", daemon=True)
    thread.start()

    def last_line() -> str:
        thread.join(timeout=2)
        return last[0][:300]

    return last_line


def _exit_reason(code: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL``."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def main() -> int:
    """Run everything until Ctrl-C or a failure; return the exit status (1: something failed)."""
    from scaffold_runtime.testing import uses_firestore

    host = os.environ.setdefault("HOST", "127.0.0.1")
    port = int(os.environ.setdefault("PORT", "8080"))
    gateway = _neuron_root() / "gateway.py"
    http_port = int(os.environ.get("GATEWAY_PORT") or port + 1)
    ports = {"gRPC server": (port, "--port (PORT)")}
    if gateway.is_file():
        ports["HTTP/JSON gateway"] = (http_port, "--gateway-port (GATEWAY_PORT)")
    needs_db = uses_firestore()
    local_db = needs_db and not os.environ.get("FIRESTORE_EMULATOR_HOST") and not os.environ.get("GOOGLE_CLOUD_PROJECT")
    # From here on a signal is only noted; the parts act on it when they can. A handler that
    # took a lock (Event.set) deadlocked when a second signal landed inside it: Ctrl-C reaches
    # this process and `scaffold neuron run`, which forwards it.
    signalled: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: signalled.append(signal.Signals(signum).name))
    try:
        check_ports(host, ports)
        with contextlib.ExitStack() as stack:
            children = Children(signalled)
            try:
                _serve(stack, children, signalled, host, port, http_port if gateway.is_file() else None, local_db)
            finally:
                children.closing.set()  # what stops from here on was stopped by us
            if children.failure:
                raise Failure(children.failure)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _serve(stack: contextlib.ExitStack, children: Children, signalled: list[str], host: str, port: int,
           http_port: int | None, local_db: bool) -> None:
    """Start the emulator (when ``local_db``), the server and the gateway; return when the
    server has stopped, or early when ``signalled`` while starting. Raise :class:`Failure`
    when a part cannot start."""
    import server

    from scaffold_runtime import logs

    emu = None
    if local_db:
        from scaffold_runtime.testing import EMULATOR_PROJECT, firestore_emulator

        print("starting the Firestore emulator…", file=sys.stderr, flush=True)
        try:
            emu = stack.enter_context(firestore_emulator())
        except RuntimeError as exc:
            raise Failure(str(exc)) from None
        os.environ["FIRESTORE_EMULATOR_HOST"] = emu.host
        os.environ["GOOGLE_CLOUD_PROJECT"] = EMULATOR_PROJECT
        print(f"Firestore emulator: {emu.host} (project {EMULATOR_PROJECT})", file=sys.stderr, flush=True)
    if signalled:  # Ctrl-C while the emulator was starting
        return
    logs.setup()
    if not os.environ.get("PAGE_TOKEN_KEY"):  # one key for this run, shared by the server and the gateway
        import secrets

        os.environ["PAGE_TOKEN_KEY"] = secrets.token_urlsafe(48)
    try:
        neuron = server.Neuron(host, port)
        neuron.start()
    except Exception as exc:  # noqa: BLE001 - one line instead of a traceback
        raise Failure(f"the gRPC server could not start: {exc}") from None
    stack.callback(neuron.drain, 1.0)
    children.on_failure = neuron.deps.request_shutdown
    print(f"gRPC server: {host}:{port}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if emu is not None:
        children.watch("Firestore emulator", emu.proc)
    if http_port is not None:
        gateway = _neuron_root() / "gateway.py"
        # In-process: the gateway serves the neuron's services itself, with the server's
        # environment (the same emulator or project, PAGE_TOKEN_KEY, AUTH_*).
        env = {**os.environ, "PORT": str(http_port)}
        env.pop("GRPC_TARGET", None)
        # Its own session: Ctrl-C reaches the server, which drains, then we stop the gateway.
        proc = subprocess.Popen([sys.executable, str(gateway)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        stack.callback(_stop, proc)
        children.watch("HTTP/JSON gateway", proc, _relay(proc))
        print(f"HTTP/JSON gateway: http://{host}:{http_port}  (openapi.json describes it)", file=sys.stderr, flush=True)
    while not neuron.stopped.wait(0.2):  # a timed wait keeps signal handlers responsive
        if signalled and not children.closing.is_set():
            children.closing.set()  # asked to stop: the parts that end from now on are no failure
            neuron.deps.request_shutdown(signalled[0])


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _neuron_root() -> Path:
    """The neuron's folder (where its server.py is; ``scaffold neuron run`` runs from there)."""
    from scaffold_runtime.testing import neuron_root

    return neuron_root()


if __name__ == "__main__":
    sys.exit(main())
