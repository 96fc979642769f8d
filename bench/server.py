"""Generated server vs a minimal hand-written grpcio server, loaded by h2load (a C client).

    .venv/bin/python bench/server.py [--calls 20000] [--runs 5] [--only echo,gateway,cold,books]

- echo: the same Echo servicer in the generated server and in a hand-written grpcio server
  (same thread pool size, health service and imports): calls/s, p99 latency and server CPU
  time per call, on 1 core (server pinned to CPU 0, h2load to CPU 1) and on 2 cores (nothing
  pinned). Both servers run at once; the load runs alternate between them (ABBA order), so
  drifting load from other processes on the host hits both sides alike.
- gateway: CPU time per REST call of the generated gateway (uvicorn, HTTP/1.1 from
  h2load --h1), in-process (GRPC_TARGET unset) and proxy (GRPC_TARGET set), against the gRPC
  server's CPU time per gRPC call of the same Echo, alternated.
- cold: process start to the first successful Books GetBook on the Firestore emulator,
  generated vs a hand-written grpcio + Firestore server, alternated.
- books: Books GetBook under load on the emulator (as echo).

h2load sends gRPC as plain HTTP/2 POSTs (content-type application/grpc, te: trailers, a
length-prefixed request as the body). Every server is spot-checked first: the same request
sent with nghttp must come back with grpc-status 0; and the generated server logs every
failed call, so its log is searched for refusals after each load run. h2load's per-request
log gives the latencies. Prints figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
TICK = os.sysconf("SC_CLK_TCK")

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

BOOKS_SERVICER = '''
DB = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"], database=os.environ["FIRESTORE_DATABASE"])
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
'''


def ensure_h2load() -> str:
    """The path of h2load; installs Debian's nghttp2-client when it is missing, else exits
    with a message saying how to install it."""
    if not shutil.which("h2load"):
        print("h2load not found: installing Debian's nghttp2-client", file=sys.stderr)
        try:
            subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, timeout=600)
            subprocess.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], check=True, capture_output=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            sys.exit(f"bench/server.py needs h2load and nghttp from Debian's nghttp2-client, and installing it failed "
                     f"({exc}). Install it (as root: apt-get update && apt-get install -y nghttp2-client) and run again.")
    if not (shutil.which("h2load") and shutil.which("nghttp")):
        sys.exit("bench/server.py needs h2load and nghttp (apt-get install -y nghttp2-client)")
    return shutil.which("h2load")


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (taskset execs, so the pid is the server's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port: int, t0: float, proc) -> None:
    """Until ``port`` accepts connections; a plain TCP poll, since a gRPC channel would sit in
    its reconnect back-off."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > 60:
                raise RuntimeError(f"server {proc.args} did not start") from None
            time.sleep(0.002)


class Server:
    """A server process on a free port, its output in a log file."""

    def __init__(self, cmd, cwd: Path, env: dict, cpus: str | None, extra_env: dict | None = None) -> None:
        self.port = free_port()
        self.log = Path(tempfile.mkstemp(prefix="bench-server-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.t0 = time.perf_counter()
            self.proc = subprocess.Popen(pinned(cmd, cpus), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                         env={**env, "PORT": str(self.port), "HOST": "127.0.0.1", **(extra_env or {})},
                                         start_new_session=True)
        wait_port(self.port, self.t0, self.proc)

    def refusals(self) -> int:
        """Failed calls the server logged (the generated server logs every one)."""
        return len(re.findall(r'"grpc.code": "(?!OK)', self.log.read_text(errors="replace")))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.unlink(missing_ok=True)


def grpc_body(data: bytes) -> Path:
    """A file with one length-prefixed gRPC message (flag 0, 4-byte big-endian length)."""
    path = Path(tempfile.mkstemp(prefix="bench-body-")[1])
    path.write_bytes(b"\0" + len(data).to_bytes(4, "big") + data)
    return path


GRPC_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]


def spot_check(url: str, body: Path) -> None:
    """Send the load's request once with nghttp; raise unless the answer is grpc-status 0."""
    out = subprocess.run(["nghttp", "-v", "-d", str(body), *GRPC_HEADERS, url], capture_output=True, text=True,
                         errors="replace", timeout=30)  # the body echoes bytes that need not be UTF-8
    if not re.search(r"\) grpc-status: 0$", out.stdout, re.MULTILINE):
        raise RuntimeError(f"{url} did not answer grpc-status 0:\n{out.stdout[-2000:]}{out.stderr[-500:]}")


def h2load(url: str, body: Path, calls: int, cpus: str | None, headers=GRPC_HEADERS, h1: bool = False,
           clients: int = 4, streams: int = 8) -> dict:
    """One h2load run: calls/s, p99 ms (from its per-request log), succeeded and failed counts."""
    log = Path(tempfile.mkstemp(prefix="bench-h2load-")[1])
    try:
        cmd = [H2LOAD, "-n", str(calls), "-c", str(clients), "-m", str(1 if h1 else streams), "-d", str(body),
               *headers, "--log-file", str(log), *(["--h1"] if h1 else []), url]
        out = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True, timeout=600)
        done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out.stdout)
        rate = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out.stdout)
        if out.returncode or not done or not rate:
            raise RuntimeError(f"h2load failed: {out.stdout[-1500:]}{out.stderr[-500:]}")
        micros = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines()
                        if line and line.split("\t")[1] != "-1")
        return {"cps": float(rate.group(1)), "p99": micros[int(len(micros) * 0.99)] / 1000 if micros else float("nan"),
                "succeeded": int(done.group(3)), "failed": int(done.group(4)) + calls - int(done.group(2))}
    finally:
        log.unlink(missing_ok=True)


def loaded(server: Server, url: str, body: Path, calls: int, cpus: str | None, **kw) -> dict:
    """h2load against ``server``, with the server's CPU seconds per call (µs)."""
    before = cpu_seconds(server.proc.pid)
    result = h2load(url, body, calls, cpus, **kw)
    result["cpu_us"] = (cpu_seconds(server.proc.pid) - before) / max(1, result["succeeded"]) * 1e6
    return result


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}]"


def spreadf(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def compare_load(label: str, sides: dict, path: str, body: Path, env: dict, args) -> None:
    """``sides``: name -> (cmd, cwd, extra env); the first is compared against the second."""
    names = list(sides)
    for cores, server_cpus, client_cpus in (("1 core", "0", "1"), ("2 cores", None, None)):
        if cores[0] not in args.cores:
            continue
        servers = {n: Server(cmd, cwd, env, server_cpus, extra) for n, (cmd, cwd, extra) in sides.items()}
        try:
            for n, s in servers.items():
                url = f"http://127.0.0.1:{s.port}{path}"
                spot_check(url, body)
                h2load(url, body, min(2000, args.calls), client_cpus)  # warm-up
            runs: dict[str, list[dict]] = {n: [] for n in names}
            for i in range(args.runs):
                for n in (names if i % 2 == 0 else names[::-1]):
                    s = servers[n]
                    runs[n].append(loaded(s, f"http://127.0.0.1:{s.port}{path}", body, args.calls, client_cpus))
            refused = {n: s.refusals() for n, s in servers.items()}
        finally:
            for s in servers.values():
                s.stop()
        med = {n: {k: statistics.median(r[k] for r in v) for k in ("cps", "p99", "cpu_us")} for n, v in runs.items()}
        a, b = (med[n] for n in names)
        failed = {n: sum(r["failed"] for r in v) for n, v in runs.items()}
        print(f"{label}, {cores}, {args.runs} runs of {args.calls} calls, median [min-max]:")
        for key, unit, fmt in (("cps", "calls/s", spread), ("p99", "p99 ms", spreadf), ("cpu_us", "CPU µs/call", spread)):
            print(f"  {unit:<12} {names[0]} {fmt([r[key] for r in runs[names[0]]])}  {names[1]} "
                  f"{fmt([r[key] for r in runs[names[1]]])}  ratio {a[key] / b[key]:.2f}x")
        # Runs i of both sides ran back to back: their ratio cancels the drift of other tenants' load.
        paired = [ra["cps"] / rb["cps"] for ra, rb in zip(runs[names[0]], runs[names[1]])]
        paired_cpu = [ra["cpu_us"] / rb["cpu_us"] for ra, rb in zip(runs[names[0]], runs[names[1]])]
        paired_p99 = [ra["p99"] / rb["p99"] for ra, rb in zip(runs[names[0]], runs[names[1]])]
        print(f"  paired       calls/s ratio {spreadf(paired)}, {sum(r >= 1 for r in paired)} of {len(paired)} pairs >= 1; "
              f"p99 ratio {spreadf(paired_p99)}; CPU µs/call ratio {spreadf(paired_cpu)}")
        print(f"  h2load failed: {failed}; failed calls in the generated server's log: {refused[names[0]]}")


def compare_gateway(echo: Path, body_grpc: Path, env: dict, args) -> None:
    """Gateway CPU per REST call against the gRPC server's CPU per gRPC call, alternated: the
    in-process gateway (GRPC_TARGET unset: the servicers in the gateway process) and the proxy
    (GRPC_TARGET: a gRPC call to the server per REST call, whose CPU is counted apart)."""
    body_json = Path(tempfile.mkstemp(prefix="bench-json-")[1])
    body_json.write_text('{"text": "hi"}')
    plain = {k: v for k, v in env.items() if k != "GRPC_TARGET"}
    grpc_server = Server([PY, "server.py"], echo, plain, "0")
    gateways = {"in-process": Server([PY, "gateway.py"], echo, plain, "0"),
                "proxy": Server([PY, "gateway.py"], echo, plain, "0", {"GRPC_TARGET": f"127.0.0.1:{grpc_server.port}"})}
    json_headers = ["-H", "content-type: application/json"]
    grpc_url = f"http://127.0.0.1:{grpc_server.port}/xmpl.br.services.translator.v1.TranslatorService/Echo"
    rest = {"h1": True, "headers": json_headers, "clients": 16}
    sides = ["grpc", *gateways]
    runs: dict[str, list[dict]] = {n: [] for n in sides}
    via: list[float] = []
    try:
        spot_check(grpc_url, body_grpc)
        h2load(grpc_url, body_grpc, min(2000, args.calls), "1")
        for gateway in gateways.values():
            url = f"http://127.0.0.1:{gateway.port}/v1:echo"
            check = subprocess.run(["curl", "-s", "-d", '{"text": "hi"}', *json_headers, url], capture_output=True, text=True)
            if json.loads(check.stdout or 'null') != {"text": "hi"}:
                raise RuntimeError(f"gateway answered {check.stdout!r}")
            h2load(url, body_json, min(2000, args.calls), "1", **rest)
        for i in range(args.runs):
            for side in (sides if i % 2 == 0 else sides[::-1]):
                if side == "grpc":
                    runs[side].append(loaded(grpc_server, grpc_url, body_grpc, args.calls, "1"))
                    continue
                gateway = gateways[side]
                before = cpu_seconds(grpc_server.proc.pid)
                r = loaded(gateway, f"http://127.0.0.1:{gateway.port}/v1:echo", body_json, args.calls, "1", **rest)
                runs[side].append(r)
                if side == "proxy":
                    via.append((cpu_seconds(grpc_server.proc.pid) - before) / max(1, r["succeeded"]) * 1e6)
        refused = grpc_server.refusals() + gateways["in-process"].refusals()
    finally:
        for gateway in gateways.values():
            gateway.stop()
        grpc_server.stop()
        body_json.unlink(missing_ok=True)
    d = [r["cpu_us"] for r in runs["grpc"]]
    print(f"Gateway Echo (HTTP/1.1, 16 connections) vs gRPC Echo, servers on CPU 0, h2load on CPU 1, "
          f"{args.runs} runs of {args.calls} calls, median [min-max]:")
    for name in gateways:
        g = [r["cpu_us"] for r in runs[name]]
        print(f"  {name:<10} gateway CPU µs per REST call {spread(g)}  gRPC server CPU µs per gRPC call {spread(d)}  "
              f"ratio {statistics.median(g) / statistics.median(d):.2f}x  (REST calls/s {spread([r['cps'] for r in runs[name]])}; "
              f"REST p99 ms {spreadf([r['p99'] for r in runs[name]])})")
    print(f"  (proxy: gRPC server CPU µs per call made by the gateway {spread(via)}; gRPC calls/s "
          f"{spread([r['cps'] for r in runs['grpc']])}; h2load failed {sum(r['failed'] for v in runs.values() for r in v)}; "
          f"failed calls in the logs {refused})")


# GetBookRequest(name="books/bench") on the wire: field 1, length-delimited.
GET_BOOK = b"\x0a\x0bbooks/bench"
GET_BOOK_PATH = "/xmpl.br.resources.books.v1.BooksService/GetBook"


def first_get(cmd, cwd: Path, env: dict) -> float:
    """ms from process start to the first GetBook answered OK (raw bytes: no stubs imported)."""
    import grpc

    server = Server(cmd, cwd, env, "0")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            book = ch.unary_unary(GET_BOOK_PATH)(GET_BOOK, timeout=30, wait_for_ready=True)
        elapsed = (time.perf_counter() - server.t0) * 1000
        if b"Bench" not in book:
            raise RuntimeError(f"unexpected book {book!r}")
        return elapsed
    finally:
        server.stop()


def compare_cold(books: Path, env: dict, args) -> None:
    res: dict[str, list[float]] = {"generated": [], "hand-written": []}
    sides = {"hand-written": [PY, "hand.py"], "generated": [PY, "server.py"]}
    for i in range(args.cold_runs):
        for name in (list(sides) if i % 2 == 0 else list(sides)[::-1]):
            res[name].append(first_get(sides[name], books, env))
    g, h = statistics.median(res["generated"]), statistics.median(res["hand-written"])
    print(f"Start to first Books GetBook OK (emulator), server on CPU 0, median [min-max] of {args.cold_runs}: "
          f"generated {spread(res['generated'])} ms vs hand-written {spread(res['hand-written'])} ms ({g / h:.2f}x)")


def main() -> None:
    global H2LOAD
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000, help="calls per load run")
    parser.add_argument("--runs", type=int, default=5, help="load runs per side and configuration")
    parser.add_argument("--cold-runs", type=int, default=15)
    parser.add_argument("--only", default="echo,gateway,cold,books")
    parser.add_argument("--cores", default="12", help="the load comparisons to run: 1 (one pinned core), 2, or 12")
    args = parser.parse_args()
    only = set(args.only.split(","))
    H2LOAD = ensure_h2load()
    tmp = Path(tempfile.mkdtemp(prefix="scaffold-bench-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        subprocess.run([SCAFFOLD, "init", "ws", "--org", "xmpl", "--product", "br"], cwd=tmp, check=True, capture_output=True)
        ws = tmp / "ws"
        for name in ("xmpl.br.services-translator-v1", "xmpl.br.resources-books-v1"):
            subprocess.run([SCAFFOLD, "proto", "create", name], cwd=ws, check=True, capture_output=True)
            subprocess.run([SCAFFOLD, "neuron", "create", name], cwd=ws, check=True, capture_output=True)
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
        echo_body = grpc_body(b"\x0a\x02hi")  # EchoRequest(text="hi") on the wire
        echo_path = "/xmpl.br.services.translator.v1.TranslatorService/Echo"
        if "echo" in only:
            compare_load("Echo (no database)", {"generated": ([PY, "server.py"], echo, None),
                                                "hand-written": ([PY, "hand.py"], echo, None)}, echo_path, echo_body, env, args)
        if "gateway" in only:
            compare_gateway(echo, echo_body, env, args)
        if not only & {"cold", "books"}:
            return
        books = ws / "neurons/resources-books-v1"
        (books / "hand.py").write_text(HAND_WRITTEN.format(
            imports="from google.cloud import firestore\nfrom xmpl.br.resources.books.v1 import books_pb2, books_pb2_grpc",
            servicer=BOOKS_SERVICER, register="books_pb2_grpc.add_BooksServiceServicer_to_server(Books(), server)"))
        sys.path.insert(0, str(REPO / "runtime/src"))
        from scaffold_runtime.testing import firestore_emulator

        with firestore_emulator() as emu:
            benv = {**env, "FIRESTORE_EMULATOR_HOST": emu.host, "GOOGLE_CLOUD_PROJECT": "demo-local",
                    "FIRESTORE_DATABASE": "bench"}
            seed = subprocess.run([PY, "-c", (
                "import grpc,sys; sys.path.insert(0,'protobuf');"
                "from xmpl.br.resources.books.v1 import books_pb2 as b, books_pb2_grpc as g\n"
                "import server; n=server.Neuron('127.0.0.1',0); n.start();"
                "g.BooksServiceStub(grpc.insecure_channel(f'127.0.0.1:{n.port}')).CreateBook("
                "b.CreateBookRequest(book=b.Book(display_name='Bench'), book_id='bench')); n.drain(1)")],
                cwd=books, env=benv, capture_output=True, text=True)
            if seed.returncode:
                raise RuntimeError(seed.stderr)
            if "cold" in only:
                compare_cold(books, benv, args)
            if "books" in only:
                compare_load("Books GetBook (emulator)", {"generated": ([PY, "server.py"], books, None),
                                                          "hand-written": ([PY, "hand.py"], books, None)},
                             GET_BOOK_PATH, grpc_body(GET_BOOK), benv, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
