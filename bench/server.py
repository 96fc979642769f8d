"""Generated server vs a minimal hand-written grpcio server: calls/s, p99, start-up, RSS.

    .venv/bin/python bench/server.py [--seconds 5] [--runs 3] [--concurrency 32]

Both serve the same Echo implementation (the translator skeleton's Echo, implemented the same
way in each), with the same thread pool size and the same libraries imported. Load comes from
a grpc.aio client in a second process on 127.0.0.1, bounded in time. Each configuration runs
--runs times; medians are printed. "1 core" pins the server to CPU 0 and the client to CPU 1
(taskset); "2 cores" leaves both unpinned. Books Get runs the same against the Firestore
emulator. Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
SCAFFOLD = str(Path(PY).parent / "scaffold")

HAND_WRITTEN = '''
import os, signal, sys, threading
from concurrent import futures
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "protobuf"))
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
{imports}

{servicer}

def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    {register}
    h = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
    server.add_insecure_port("127.0.0.1:" + os.environ["PORT"])
    server.start()
    h.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()
    server.stop(1).wait()

main()
'''

HAND_WRITTEN_AIO = '''
import asyncio, os, signal, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "protobuf"))
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from xmpl.br.services.translator.v1 import translator_pb2, translator_pb2_grpc

class Echo(translator_pb2_grpc.TranslatorServiceServicer):
    async def Echo(self, request, context):
        return translator_pb2.EchoResponse(text=request.text)

async def main():
    server = grpc.aio.server()
    translator_pb2_grpc.add_TranslatorServiceServicer_to_server(Echo(), server)
    h = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(h, server)
    server.add_insecure_port("127.0.0.1:" + os.environ["PORT"])
    await server.start()
    await h.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1)

asyncio.run(main())
'''

CLIENT = '''
import asyncio, sys, time, json
sys.path.insert(0, sys.argv[1])
import grpc
{imports}

async def main(target, seconds, concurrency):
    async with grpc.aio.insecure_channel(target) as ch:
        call = {call}
        await call()
        lat = []
        deadline = time.perf_counter() + seconds
        async def worker():
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                await call()
                lat.append(time.perf_counter() - t)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    lat.sort()
    print(json.dumps({{"cps": len(lat) / elapsed, "p99_ms": lat[int(len(lat) * 0.99)] * 1000}}))

asyncio.run(main(sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start(cmd, cwd, env, cpus: str | None):
    port = free_port()
    full = (["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []) + cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, cwd=cwd, env={**env, "PORT": str(port), "HOST": "127.0.0.1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    while True:  # a plain TCP poll: a gRPC channel would sit in its 1 s reconnect backoff
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.perf_counter() - t0 > 30:
                raise RuntimeError("server did not start") from None
            time.sleep(0.002)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while stub.Check(health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True).status != 1:
            time.sleep(0.002)
    ready_ms = (time.perf_counter() - t0) * 1000
    time.sleep(0.3)
    return proc, port, ready_ms, rss_kb(proc.pid)


def load(client: Path, stubs: Path, port: int, seconds: float, concurrency: int, cpus: str | None) -> dict:
    import json

    cmd = [PY, str(client), str(stubs), f"127.0.0.1:{port}", str(seconds), str(concurrency)]
    if cpus and shutil.which("taskset"):
        cmd = ["taskset", "-c", cpus, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout)


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def measure(label, generated_cmd, hand_cmd, cwd_gen, cwd_hand, env, client, stubs, args, names=("generated", "hand-written")) -> None:
    for cores, server_cpus, client_cpus in (("1 core", "0", "1"), ("2 cores", None, None)):
        figures = {names[0]: [], names[1]: []}
        for _ in range(args.runs):
            for name, cmd, cwd in ((names[1], hand_cmd, cwd_hand), (names[0], generated_cmd, cwd_gen)):
                proc, port, ready, rss = start(cmd, cwd, env, server_cpus)
                try:
                    result = load(client, stubs, port, args.seconds, args.concurrency, client_cpus)
                finally:
                    stop(proc)
                figures[name].append((result["cps"], result["p99_ms"], ready, rss))
        med = {k: [statistics.median(x[i] for x in v) for i in range(4)] for k, v in figures.items()}
        g, h = med[names[0]], med[names[1]]
        print(f"{label}, {cores}: calls/s {names[0]} {g[0]:.0f} vs {names[1]} {h[0]:.0f} ({g[0] / h[0]:.2f}x); "
              f"p99 {g[1]:.2f} vs {h[1]:.2f} ms ({g[1] / h[1]:.2f}x); SERVING after {g[2]:.0f} vs {h[2]:.0f} ms "
              f"({g[2] / h[2]:.2f}x); idle RSS {g[3] / 1024:.1f} vs {h[3] / 1024:.1f} MB ({g[3] / h[3]:.2f}x)")


def startup(root: Path, env, runs: int = 15) -> None:
    """Start to SERVING alone, alternating the two servers (3 load runs give a noisy median)."""
    res: dict[str, list[float]] = {"generated": [], "hand-written": []}
    for _ in range(runs):
        for name, cmd in (("hand-written", [PY, "hand.py"]), ("generated", [PY, "server.py"])):
            proc, _port, ready, _rss = start(cmd, root, env, "0")
            stop(proc)
            res[name].append(ready)
    g, h = statistics.median(res["generated"]), statistics.median(res["hand-written"])
    print(f"Start to SERVING, 1 core, median of {runs}: generated {g:.0f} ms vs hand-written {h:.0f} ms ({g / h:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--skip-books", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="scaffold-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        subprocess.run([SCAFFOLD, "init", "ws", "--org", "xmpl", "--product", "br"], cwd=tmp, check=True, capture_output=True)
        ws = tmp / "ws"
        for name in ("xmpl.br.services-translator-v1", "xmpl.br.resources-books-v1"):
            subprocess.run([SCAFFOLD, "proto", "create", name], cwd=ws, check=True, capture_output=True)
            subprocess.run([SCAFFOLD, "neuron", "create", name], cwd=ws, check=True, capture_output=True)
        # -- Echo: no database work ---------------------------------------------------------
        echo = ws / "neurons/services-translator-v1"
        methods = echo / "methods.py"
        methods.write_text(methods.read_text().replace(
            '        # TODO: implement Echo.\n        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Echo is not implemented yet")',
            "        return translator_pb2.EchoResponse(text=request.text)"))
        (echo / "hand.py").write_text(HAND_WRITTEN.format(
            imports="from xmpl.br.services.translator.v1 import translator_pb2, translator_pb2_grpc",
            servicer=textwrap.dedent('''
                class Echo(translator_pb2_grpc.TranslatorServiceServicer):
                    def Echo(self, request, context):
                        return translator_pb2.EchoResponse(text=request.text)
            '''),
            register="translator_pb2_grpc.add_TranslatorServiceServicer_to_server(Echo(), server)",
        ))
        client = tmp / "client_echo.py"
        client.write_text(CLIENT.format(
            imports="from xmpl.br.services.translator.v1 import translator_pb2, translator_pb2_grpc",
            call="lambda: translator_pb2_grpc.TranslatorServiceStub(ch).Echo(translator_pb2.EchoRequest(text='hi'))",
        ))
        measure("Echo (no database)", [PY, "server.py"], [PY, "hand.py"], echo, echo, env, client, echo / "protobuf", args)
        startup(echo, env)
        (echo / "hand_aio.py").write_text(HAND_WRITTEN_AIO)
        measure("Echo, sync vs asyncio hand-written", [PY, "hand.py"], [PY, "hand_aio.py"], echo, echo, env, client,
                echo / "protobuf", args, names=("sync", "aio"))
        if args.skip_books:
            return
        # -- Books Get on the emulator ------------------------------------------------------
        sys.path.insert(0, str(REPO / "templates/neuron"))
        from runtime.testing import firestore_emulator  # the helper every neuron ships

        books = ws / "neurons/resources-books-v1"
        (books / "hand.py").write_text(HAND_WRITTEN.format(
            imports="from google.cloud import firestore\nfrom xmpl.br.resources.books.v1 import books_pb2, books_pb2_grpc",
            servicer=textwrap.dedent('''
                DB = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
                class Books(books_pb2_grpc.BooksServiceServicer):
                    def GetBook(self, request, context):
                        snap = DB.document(request.name).get()
                        if not snap.exists:
                            context.abort(grpc.StatusCode.NOT_FOUND, "not found")
                        d = snap.to_dict()
                        book = books_pb2.Book(name=d["name"], display_name=d["display_name"])
                        book.create_time.FromDatetime(d["create_time"])
                        book.update_time.FromDatetime(d["update_time"])
                        return book
            '''),
            register="books_pb2_grpc.add_BooksServiceServicer_to_server(Books(), server)",
        ))
        bclient = tmp / "client_books.py"
        bclient.write_text(CLIENT.format(
            imports="from xmpl.br.resources.books.v1 import books_pb2, books_pb2_grpc",
            call="lambda: books_pb2_grpc.BooksServiceStub(ch).GetBook(books_pb2.GetBookRequest(name='books/bench'))",
        ))
        with firestore_emulator() as emu:
            benv = {**env, "FIRESTORE_EMULATOR_HOST": emu.host, "GOOGLE_CLOUD_PROJECT": "demo-local"}
            seed = subprocess.run([PY, "-c", (
                "import grpc,sys; sys.path.insert(0,'protobuf');"
                "from xmpl.br.resources.books.v1 import books_pb2 as b, books_pb2_grpc as g\n"
                "import server; n=server.Neuron('127.0.0.1',0); n.start();"
                "g.BooksServiceStub(grpc.insecure_channel(f'127.0.0.1:{n.port}')).CreateBook("
                "b.CreateBookRequest(book=b.Book(display_name='Bench'), book_id='bench')); n.drain(1)")],
                cwd=books, env=benv, capture_output=True, text=True)
            if seed.returncode:
                raise RuntimeError(seed.stderr)
            measure("Books Get (emulator)", [PY, "server.py"], [PY, "hand.py"], books, books, benv, bclient,
                    books / "protobuf", args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
