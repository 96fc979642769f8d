"""Test helpers: the real Firestore emulator, an in-process server, sample messages.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from google.protobuf import descriptor as _d

EMULATOR_PROJECT = "demo-local"
_DEFAULT_EMULATOR = "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator"


def neuron_root() -> Path:
    """The neuron folder: where its ``server.py`` is (the current folder if none is found)."""
    import importlib.util

    spec = importlib.util.find_spec("server")
    return Path(spec.origin).resolve().parent if spec and spec.origin else Path.cwd()


def uses_firestore(root: Path | None = None) -> bool:
    """Whether this neuron's code uses Firestore (generated standard methods or deps.firestore)."""
    root = root or neuron_root()
    text = "".join((root / f).read_text(encoding="utf-8") for f in ("base.py", "methods.py") if (root / f).is_file())
    return "ResourceStore(" in text or "deps.firestore" in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


INSTALL_EMULATOR = (
    "install it with `gcloud components install cloud-firestore-emulator` "
    "(or apt-get install google-cloud-cli-firestore-emulator), or set FIRESTORE_EMULATOR_BIN to its launcher"
)
INSTALL_JAVA = "apt-get install openjdk-17-jre-headless (or set JAVA to a java 11+ binary)"


def emulator_command() -> str | None:
    """The emulator launcher: $FIRESTORE_EMULATOR_BIN when set (and then only it), else the
    Cloud SDK's, else the one next to gcloud; None when none is executable."""
    override = os.environ.get("FIRESTORE_EMULATOR_BIN", "")
    candidates = [override] if override else [_DEFAULT_EMULATOR]
    gcloud = shutil.which("gcloud")
    if gcloud and not override:
        sdk = Path(gcloud).resolve().parent.parent
        candidates.append(str(sdk / "platform/cloud-firestore-emulator/cloud_firestore_emulator"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def _java_major(java: str) -> int | None:
    """The major version ``java -version`` reports (8 for "1.8.0"), None if it cannot say."""
    try:
        r = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', r.stderr + r.stdout)
    if not m:
        return None
    major = int(m[1])
    return int(m[2] or 0) if major == 1 else major


def emulator_problem() -> str | None:
    """What is missing to run the Firestore emulator, with how to install it; None if nothing."""
    if emulator_command() is None:
        where = os.environ.get("FIRESTORE_EMULATOR_BIN")
        found = f"FIRESTORE_EMULATOR_BIN={where} is not an executable file" if where else "it is not installed"
        return f"the Firestore emulator is needed and {found}: {INSTALL_EMULATOR}"
    java = os.environ.get("JAVA") or shutil.which("java")
    if not java:
        return f"Java 11+ is needed by the Firestore emulator and no `java` is on PATH: {INSTALL_JAVA}"
    major = _java_major(java)
    if major is None:
        return f"Java 11+ is needed by the Firestore emulator and {java} does not run: {INSTALL_JAVA}"
    if major < 11:
        return f"Java 11+ is needed by the Firestore emulator and {java} is Java {major}: {INSTALL_JAVA}"
    return None


class Emulator:
    def __init__(self, host: str, proc: subprocess.Popen | None = None, project: str = EMULATOR_PROJECT) -> None:
        self.host = host
        self.proc = proc
        self.project = project

    def wipe(self, database: str | None = None) -> None:
        """Delete every document of ``database`` in this project (the emulator's own reset
        endpoint); by default the one the server uses: FIRESTORE_DATABASE, else the neuron's own
        (server.py's DATABASE), else "(default)" where no server module can be imported."""
        if database is None:
            try:
                from server import DATABASE as neuron_database
            except ImportError:
                neuron_database = "(default)"
            database = os.environ.get("FIRESTORE_DATABASE") or neuron_database
        url = f"http://{self.host}/emulator/v1/projects/{self.project}/databases/{database}/documents"
        urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=60).close()


def running_emulator() -> Emulator | None:
    """The emulator FIRESTORE_EMULATOR_HOST names (already running), or None."""
    host = os.environ.get("FIRESTORE_EMULATOR_HOST", "")
    return Emulator(host, None, os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT) if host else None


@contextlib.contextmanager
def firestore_emulator(timeout: float = 30.0, port: int | None = None, attempts: int = 3):
    """Start the emulator on 127.0.0.1 (a free port unless given) in its own process group;
    yield its Emulator; stop the group at the end.

    On a free port, an emulator that exits before answering (another process took the port
    between our pick and its bind) is started again on a fresh port, up to ``attempts`` times.
    Raise RuntimeError saying what is missing or what went wrong (with the emulator's last
    error lines)."""
    problem = emulator_problem()
    if problem:
        raise RuntimeError(problem)
    tries = 1 if port else max(1, attempts)
    for attempt in range(1, tries + 1):
        chosen = port or free_port()
        proc, output, reader = _start_emulator(chosen)
        try:
            _wait_until_answering(proc, chosen, timeout, output)
        except _EmulatorExited as exited:
            with contextlib.suppress(ProcessLookupError):  # what is left of its group; the port is not its own
                os.killpg(proc.pid, signal.SIGKILL)
            reader.join(timeout=5)  # its last lines
            if attempt == tries:
                tried = f" (tried {tries} ports)" if tries > 1 else ""
                raise RuntimeError(f"the Firestore emulator exited with code {exited.code} on port {chosen}{tried}: "
                                   f"{_last_errors(output)}") from None
            continue
        except BaseException:
            stop_group(proc, chosen)
            raise
        try:
            yield Emulator(f"127.0.0.1:{chosen}", proc)
        finally:
            stop_group(proc, chosen)
        return


class _EmulatorExited(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _start_emulator(port: int) -> tuple[subprocess.Popen, collections.deque, threading.Thread]:
    """The emulator launched on ``port`` in its own process group, the deque its last output
    lines are kept in, and the thread that drains its pipe into it (so it never blocks)."""
    proc = subprocess.Popen(
        [emulator_command(), "start", "--host=127.0.0.1", f"--port={port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output: collections.deque = collections.deque(maxlen=200)

    def drain() -> None:
        with proc.stdout:
            for line in proc.stdout:
                output.append(line.decode("utf-8", "replace").rstrip())

    reader = threading.Thread(target=drain, name=f"firestore-emulator-{port}", daemon=True)
    reader.start()
    return proc, output, reader


def _wait_until_answering(proc: subprocess.Popen, port: int, timeout: float, output) -> None:
    """Return once the emulator answers ``GET /`` with its own "Ok" on ``port``. Raise
    _EmulatorExited when it exits first, RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise _EmulatorExited(proc.returncode)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.read(16).strip() == b"Ok" and proc.poll() is None:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Firestore emulator did not start within {timeout:.0f} s: {_last_errors(output)}")
        time.sleep(0.1)


_LOG_STAMP = re.compile(r"[A-Z][a-z]{2} \d{1,2}, \d{4} ")  # java.util.logging's first line of a record


def _last_errors(output, count: int = 4) -> str:
    """The emulator's last few output lines on one line: no stack frames, time stamps or INFO lines
    (unless that is all it printed)."""
    lines = [line.strip() for line in list(output)
             if line.strip() and not line.lstrip().startswith(("at ", "...")) and not _LOG_STAMP.match(line)]
    lines = [line for line in lines if not line.startswith("INFO:")] or lines
    return " | ".join(lines[-count:]) or "it printed nothing"


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def stop_group(proc: subprocess.Popen, port: int, timeout: float = 10.0) -> None:
    """Stop the emulator's whole process group and wait until its port is closed (the JVM
    outlives the launcher script by a moment)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _port_open(port):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        while _port_open(port) and time.monotonic() < deadline + timeout:
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def serve_in_process():
    """Start the neuron's server on a free 127.0.0.1 port; yield its target; drain at the end."""
    import server

    neuron = server.Neuron("127.0.0.1", 0)
    neuron.start()
    try:
        yield f"127.0.0.1:{neuron.port}", neuron
    finally:
        neuron.drain(grace=1.0)


def _sample_value(fd, seed: int):
    t = fd.type
    if t == _d.FieldDescriptor.TYPE_STRING:
        return f"{fd.name}-{seed}"
    if t == _d.FieldDescriptor.TYPE_BYTES:
        return f"{fd.name}-{seed}".encode()
    if t == _d.FieldDescriptor.TYPE_BOOL:
        return True
    if t == _d.FieldDescriptor.TYPE_ENUM:
        values = [v.number for v in fd.enum_type.values if v.number != 0]
        return values[0] if values else 0
    if fd.cpp_type in (_d.FieldDescriptor.CPPTYPE_FLOAT, _d.FieldDescriptor.CPPTYPE_DOUBLE):
        return seed + 0.5
    return seed + 1


def sample(cls, seed: int = 1, *, depth: int = 0):
    """A ``cls`` with every REQUIRED field (recursively) set to a recognisable value."""
    from google.api import field_behavior_pb2

    from scaffold_runtime.aip import behaviors
    from scaffold_runtime.codec import is_repeated

    msg = cls()
    for fd in cls.DESCRIPTOR.fields:
        b = behaviors(fd)
        if field_behavior_pb2.REQUIRED not in b or field_behavior_pb2.OUTPUT_ONLY in b or depth > 5:
            continue
        if fd.type == _d.FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.GetOptions().map_entry:
                getattr(msg, fd.name)["k"] = _sample_value(fd.message_type.fields_by_name["value"], seed)
            elif is_repeated(fd):
                item = getattr(msg, fd.name).add()
                item.CopyFrom(sample(type(item), seed, depth=depth + 1))
            else:
                sub = getattr(msg, fd.name)
                sub.SetInParent()
                sub.CopyFrom(sample(type(sub), seed, depth=depth + 1))
        elif is_repeated(fd):
            getattr(msg, fd.name).append(_sample_value(fd, seed))
        else:
            setattr(msg, fd.name, _sample_value(fd, seed))
    return msg


def sample_parent(pattern: str, seed: int = 1) -> str:
    """A parent name for a nested pattern: ``shelves/{shelf}/books/{book}`` -> ``shelves/shelf-1``."""
    segments = pattern.split("/")[:-2]
    return "/".join(f"{s[1:-1].replace('_', '-')}-{seed}" if s.startswith("{") else s for s in segments)


STUB_MARKER = "TODO: implement"


def is_stub(cls, method: str) -> bool:
    """Whether ``cls.method`` still answers UNIMPLEMENTED as generated: inherited from a base
    that does not implement it, or a stub scaffold wrote (it carries ``# TODO: implement``)."""
    import inspect

    fn = getattr(cls, method, None)
    if fn is None:
        return False
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        return False
    return STUB_MARKER in source


def operation_result(cls, operation):
    """The ``cls`` message a done google.longrunning.Operation carries in ``response``.

    Raises AssertionError when the operation is not done, failed, or holds another type."""
    assert operation.done, f"operation {operation.name} is not done"
    assert not operation.HasField("error"), f"operation {operation.name} failed: {operation.error.message}"
    out = cls()
    assert operation.response.Unpack(out), f"operation {operation.name} holds {operation.response.type_url}"
    return out


def seed_document(name: str, data: dict | None = None) -> None:
    """Write document ``name`` (a resource name) straight into the neuron's own database, for a
    test that needs a parent the API offers no standard Create for."""
    from google.cloud import firestore

    try:
        from server import DATABASE as neuron_database
    except ImportError:
        neuron_database = "(default)"
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT
    database = os.environ.get("FIRESTORE_DATABASE") or neuron_database
    firestore.Client(project=project, database=database).document(name).set(data or {"name": name})
