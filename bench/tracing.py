"""What tracing costs: start-up, and per call with tracing off, on (every call recorded) and on
but not sampled. Prints medians; figures go in bench/README.md and RELIABILITY.md.

    .venv/bin/python bench/tracing.py --calls 300 --rounds 15 --starts 9

Per call: a unary call over loopback gRPC to a scaffold_runtime.server.Neuron in this process
(every interceptor a neuron has), through a channel wrapped with tracing.client_interceptors(),
so "on" pays for a client span, a server span and both header formats. Spans go to an
exporter that drops them, synchronously (Cloud Trace's exporter runs in batches off the call
path). CPU time is the whole process's (client and server threads): steadier than wall time
on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

RUNTIME_IMPORTS = "import scaffold_runtime.server, scaffold_runtime.store, scaffold_runtime.gateway"


def start_up(mode: str, runs: int) -> tuple[float, float]:
    """Medians (ms) in fresh interpreters: importing the runtime, then tracing.setup()."""
    code = (f"import time; t0 = time.perf_counter()\n{RUNTIME_IMPORTS}\nt1 = time.perf_counter()\n"
            "from scaffold_runtime import tracing\ntracing.setup()\nt2 = time.perf_counter()\n"
            "import sys; print((t1 - t0) * 1000, (t2 - t1) * 1000, file=sys.stderr)")
    env = {**os.environ, "TRACING": mode}
    imports, setups = [], []
    for _ in range(runs):
        r = subprocess.run([sys.executable, "-c", code], env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        a, b = map(float, r.stderr.split()[-2:])
        imports.append(a)
        setups.append(b)
    return statistics.median(imports), statistics.median(setups)


def per_call(calls: int, rounds: int) -> dict:
    """Wall and CPU µs per unary call for each mode, rounds interleaved (off, on, unsampled,
    off, …) so the machine's load drifts alike over all three; medians over rounds."""
    import grpc
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from scaffold_runtime import tracing
    from scaffold_runtime.server import Neuron, Service

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    def add(servicer, server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(servicer.say)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Say": handler}),))

    class Echo:
        def __init__(self, deps) -> None:
            pass

        def say(self, request: bytes, context) -> bytes:
            return request

    def serve():
        neuron = Neuron([Service("bench.Echo", add, Echo)], host="127.0.0.1", port=0)
        neuron.start()
        channel = grpc.intercept_channel(grpc.insecure_channel(f"127.0.0.1:{neuron.port}"), *tracing.client_interceptors())
        return neuron, channel.unary_unary("/bench.Echo/Say")

    tracing.shutdown()
    off = serve()  # built while off: no TraceInterceptor, the client interceptor passes through
    tracing.setup("bench", exporter=Drop(), ratio=0.0)
    unsampled_tracer = tracing._tracer  # bench only: switch tracers between rounds
    tracing.setup("bench", exporter=Drop(), ratio=1.0)
    on_tracer = tracing._tracer
    on = serve()
    modes = {"off": (off[1], None), "on": (on[1], on_tracer), "unsampled": (on[1], unsampled_tracer)}
    samples: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for rnd in range(rounds + 1):
        for mode, (say, tracer) in modes.items():
            tracing._tracer = tracer
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                say(b"x", timeout=10)
            if rnd:  # round 0 warms up
                samples[mode].append(((time.perf_counter() - wall) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6))
    tracing._tracer = on_tracer
    for neuron in (off[0], on[0]):
        neuron.drain(grace=1.0)
    return {m: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for m, v in samples.items()}


def off_path(n: int = 200_000) -> dict:
    """ns per call of what stays on the call path while tracing is off: a store method's
    decorator and the log formatter's trace lookup."""
    import logging

    from scaffold_runtime import logs, tracing

    tracing.shutdown()

    class Store:
        collection_id = "x"

        def plain(self, context):
            return context

        traced = tracing.store_call("get")(plain)

    store = Store()
    out = {}
    for name, fn in (("store method, undecorated", store.plain), ("store method, @store_call, tracing off", store.traced)):
        started = time.perf_counter()
        for _ in range(n):
            fn(None)
        out[name] = (time.perf_counter() - started) / n * 1e9
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "message", (), None)
    formatter = logs.JsonFormatter()
    started = time.perf_counter()
    for _ in range(n // 10):
        formatter.format(record)
    out["log line formatted, tracing off"] = (time.perf_counter() - started) / (n // 10) * 1e9
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--starts", type=int, default=9)
    args = parser.parse_args()
    print(f"medians: {args.starts} start-ups; {args.rounds} interleaved rounds of {args.calls} calls per mode; "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    for mode in ("off", "console"):
        imports, setup = start_up(mode, args.starts)
        print(f"start-up TRACING={mode:8s} import runtime {imports:7.1f} ms, tracing.setup() {setup:7.2f} ms")
    results = per_call(args.calls, args.rounds)
    (base_wall, base_cpu) = results["off"]
    for mode, label in (("off", "tracing off"), ("on", "on, every call recorded"), ("unsampled", "on, TRACE_SAMPLE_RATIO=0")):
        wall, cpu = results[mode]
        print(f"unary call over loopback, {label:26s} wall {wall:7.1f} µs (+{wall - base_wall:6.1f})"
              f"  CPU {cpu:7.1f} µs (+{cpu - base_cpu:6.1f})")
    for name, ns in off_path().items():
        print(f"{name:45s} {ns:8.0f} ns")


if __name__ == "__main__":
    main()
