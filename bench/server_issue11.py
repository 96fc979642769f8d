"""Figures for issue 11 (RELIABILITY.md, "Server (issue 11)"), measured on one generated Books
neuron: run it on a neuron made by the old templates and by the new ones.

    python bench/server_issue11.py NEURON_DIR [reflection|unknown_methods|stalled_database|sigterm ...]

Everything runs on 127.0.0.1 against a Firestore emulator this script starts; every loop is
bounded. Prints one JSON object of figures.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import _neuron_testing
from tests.helpers import ServerProcess, import_stubs

REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def code_of(fn) -> str:
    try:
        fn()
        return "OK"
    except grpc.RpcError as err:
        return err.code().name


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def health(ch, timeout: float) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return code_of(lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout))


def reflection_starvation(root: Path, env: dict, pb, pb_grpc) -> dict:
    from grpc_reflection.v1alpha import reflection_pb2

    server = ServerProcess(root, {**env, "AUTH_MODE": "api-key", "API_KEYS": "k1"})
    release = threading.Event()
    try:
        with grpc.insecure_channel(server.target) as ch:
            call = ch.stream_stream(REFLECTION, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)

            def requests():
                yield reflection_pb2.ServerReflectionRequest(list_services="")
                release.wait(30)

            streams, opened = [], collections.Counter()
            for _ in range(16):
                responses = call(requests(), timeout=30)
                streams.append(responses)
                opened[code_of(lambda r=responses: next(r))] += 1
            stub = pb_grpc.BooksServiceStub(ch)
            after = {"health": health(ch, 3),
                     "list_with_key": code_of(lambda: stub.ListBooks(pb.ListBooksRequest(), metadata=(("x-api-key", "k1"),), timeout=10))}
            release.set()
            for s in streams:
                s.cancel()
    finally:
        release.set()
        server.stop()
    return {"unauthenticated_streams": dict(opened), "then": after}


def unknown_method_flood(root: Path, env: dict, n: int = 20000) -> dict:
    server = ServerProcess(root, {**env, "AUTH_MODE": "api-key", "API_KEYS": "k1"})
    try:
        with grpc.insecure_channel(server.target) as ch:
            health(ch, 5)
            idle = rss_mb(server.proc.pid)
            codes = collections.Counter(code_of(lambda i=i: ch.unary_unary(f"/made.up.S{i}/M{i}")(b"", timeout=10))
                                        for i in range(n))
            time.sleep(1)
            after = rss_mb(server.proc.pid)
    finally:
        server.stop()
    return {"calls": n, "codes": dict(codes), "rss_idle_mb": idle, "rss_after_mb": after}


def stalled_database(root: Path, env: dict, emu, pb, pb_grpc) -> dict:
    server = ServerProcess(root, {**env, "GRPC_MAX_WORKERS": "6", "FIRESTORE_TIMEOUT_SECONDS": "8"})
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.BooksServiceStub(ch)
            stub.CreateBook(pb.CreateBookRequest(book=pb.Book(display_name="x"), book_id="b1"), timeout=30)
            os.killpg(emu.proc.pid, signal.SIGSTOP)
            try:
                with futures.ThreadPoolExecutor(12) as pool:
                    calls = [pool.submit(code_of, lambda: stub.GetBook(pb.GetBookRequest(name="books/b1"), timeout=20))
                             for _ in range(12)]
                    time.sleep(0.5)
                    checks = collections.Counter(health(ch, 3) for _ in range(5))
                    codes = collections.Counter(f.result() for f in calls)
            finally:
                os.killpg(emu.proc.pid, signal.SIGCONT)
    finally:
        server.stop()
    return {"health_checks_3s": dict(checks), "get_calls": dict(codes)}


def sigterm_run(root: Path, env: dict, pb, pb_grpc, run: int, cancelled_sent: list[float]) -> dict:
    """One SIGTERM run; returns its status codes, and adds to ``cancelled_sent`` when each
    CANCELLED call was sent (s after SIGTERM)."""
    server = ServerProcess(root, {**env, "GRPC_MAX_WORKERS": "18"})
    codes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.BooksServiceStub(ch)
        stub.CreateBook(pb.CreateBookRequest(book=pb.Book(display_name="d"), book_id=f"s{run}-warm"), timeout=30)
        deadline = time.monotonic() + 10

        def worker(w: int) -> None:
            for i in range(400):
                if time.monotonic() > deadline:
                    return
                request = pb.CreateBookRequest(book=pb.Book(display_name="d"), book_id=f"s{run}-{w}-{i}")
                sent = time.monotonic()
                code = code_of(lambda r=request: stub.CreateBook(r, timeout=15))
                with lock:
                    codes[code] += 1
                    if code == "CANCELLED":
                        cancelled_sent.append(round(sent - sigterm_at[0], 3))
                if code == "UNAVAILABLE" and server.proc.poll() is not None:
                    return  # the server is gone: every further call is UNAVAILABLE

        sigterm_at = [time.monotonic() + 1.5]

        def terminate() -> None:
            sigterm_at[0] = time.monotonic()
            server.terminate()

        threading.Timer(1.5, terminate).start()
        with futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(worker, range(16)))
        try:
            server.proc.wait(timeout=20)
        finally:
            server.stop()
    return dict(codes)


def sigterm_runs(root: Path, env: dict, pb, pb_grpc, runs: int = 5) -> dict:
    """SIGTERM 1.5 s into 16 callers that keep calling, whatever they get, until the server is gone."""
    per_run = []
    cancelled_sent: list[float] = []  # when each CANCELLED call was sent, in s after SIGTERM
    for run in range(runs):
        per_run.append(sigterm_run(root, env, pb, pb_grpc, run, cancelled_sent))
    return {"runs": per_run, "cancelled_per_run": [r.get("CANCELLED", 0) for r in per_run],
            "cancelled_sent_after_sigterm_s": sorted(cancelled_sent)}


def main() -> int:
    root = Path(sys.argv[1]).resolve()
    pb = import_stubs(root, "xmpl.br.resources.books.v1.books_pb2")
    pb_grpc = import_stubs(root, "xmpl.br.resources.books.v1.books_pb2_grpc")
    testing = _neuron_testing()
    with testing.firestore_emulator() as emu:
        env = {"FIRESTORE_EMULATOR_HOST": emu.host, "GOOGLE_CLOUD_PROJECT": "demo-local"}
        parts = {"reflection": lambda: reflection_starvation(root, env, pb, pb_grpc),
                 "unknown_methods": lambda: unknown_method_flood(root, env),
                 "stalled_database": lambda: stalled_database(root, env, emu, pb, pb_grpc),
                 "sigterm": lambda: sigterm_runs(root, env, pb, pb_grpc)}
        wanted = sys.argv[2:] or list(parts)
        figures = {name: parts[name]() for name in wanted}
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
