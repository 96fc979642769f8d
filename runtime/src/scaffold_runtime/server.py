"""Server wiring every neuron runs: its generated ``server.py`` only lists its services.

What a neuron's server does:
- listens on $PORT (default 8080) on all interfaces ($HOST to change that)
- registers the neuron's services, the gRPC health service and server reflection
- logs one JSON line per event (Cloud Logging format); per call: failures and slow calls,
  or every call with LOG_EVERY_CALL=true
- on SIGTERM/SIGINT, a servicer's deps.request_shutdown() (e.g. a Shutdown RPC) or after
  SERVER_MAX_LIFETIME seconds (0, the default, means never): health turns NOT_SERVING, new
  calls are refused, calls in flight finish within SHUTDOWN_GRACE_SECONDS (default 8, inside
  Cloud Run's 10 s), then exit 0
- traces with TRACING=console|cloud-trace (TRACE_SAMPLE_RATIO): a span per call, parent
  from traceparent / x-cloud-trace-context (see scaffold_runtime.tracing)
- Firestore: when a servicer uses it, one cheap read at start-up opens the connection before
  health turns SERVING (waiting at most FIRESTORE_WARMUP_SECONDS, 3; 0 turns it off)
- RPC statistics per method and status code (deps.stats); logged every STATS_LOG_SECONDS
  when set
- TLS when TLS_CERT_FILE and TLS_KEY_FILE are set, mutual TLS when TLS_CLIENT_CA_FILE is set
  too; plaintext otherwise, which is right on Cloud Run, whose front end terminates TLS
- per-call authentication with AUTH_MODE=api-key or id-token (see scaffold_runtime.auth)
  (reflection then needs credentials too, unless REFLECTION_PUBLIC=true)
- GRPC_COMPRESSION=gzip|deflate|none (default none), GRPC_MAX_RECEIVE_BYTES (4 MiB)
- GRPC_MAX_WORKERS threads (16); GRPC_MAX_CONCURRENT_RPCS calls at once (default: workers - 2,
  and always fewer than the workers, so health checks always find one), of which at most
  GRPC_MAX_STREAMS streaming calls (default: a quarter of the workers); calls beyond either
  get RESOURCE_EXHAUSTED; health checks are never limited
- refuses to start, with one log line and exit code 2, on a bad setting: a missing, expired
  or mismatched TLS certificate or key, an empty client CA, PAGE_TOKEN_KEY unset outside the
  emulator, …
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from scaffold_runtime import auth, logs, tracing
from scaffold_runtime.deps import Deps
from scaffold_runtime.interceptor import Admission, CallLogInterceptor
from scaffold_runtime.stats import RpcStats
from scaffold_runtime.workers import Workers

log = logging.getLogger("server")


class StartupError(Exception):
    """A setting the server cannot start with; its message says what to change."""


@dataclass(frozen=True)
class Service:
    """One gRPC service a neuron serves: how to register it and how to make its servicer."""

    name: str  # full name, e.g. "xmpl.br.resources.books.v1.BooksService"
    add_to_server: Callable  # the stub module's add_<Service>Servicer_to_server
    servicer: Callable  # servicer class (from methods.py), called with the Deps


def _load_service_files(services: Sequence[Service]) -> None:
    """Import each service's own _pb2 module. A _pb2_grpc module imports the files of the
    service's messages, not always the service's own file; without it in the default
    descriptor pool, reflection lists the service but cannot describe it."""
    for s in services:
        importlib.import_module(s.add_to_server.__module__.removesuffix("_grpc"))


def _limits(workers: int) -> tuple[int, int]:
    """(calls, streaming calls) admitted at once, from GRPC_MAX_CONCURRENT_RPCS and
    GRPC_MAX_STREAMS; raises StartupError when they leave no worker for health checks."""
    calls = int(os.environ.get("GRPC_MAX_CONCURRENT_RPCS", "0") or 0) or max(1, workers - 2)
    streams = int(os.environ.get("GRPC_MAX_STREAMS", "0") or 0) or max(1, min(calls, workers // 4))
    if calls >= workers:
        raise StartupError(f"GRPC_MAX_CONCURRENT_RPCS={calls} must be below GRPC_MAX_WORKERS={workers}: "
                           "health checks need a free worker")
    if streams > calls:
        raise StartupError(f"GRPC_MAX_STREAMS={streams} must not exceed GRPC_MAX_CONCURRENT_RPCS={calls}")
    return calls, streams


def _check_page_token_key() -> None:
    """Page tokens are signed with PAGE_TOKEN_KEY; only the emulator may go without one."""
    if not os.environ.get("PAGE_TOKEN_KEY") and not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        raise StartupError("PAGE_TOKEN_KEY is not set: page tokens would be signed with a public key; "
                           "set it to a long random secret (Terraform mounts one from Secret Manager)")


def check_page_token_key() -> None:
    """Raises StartupError unless PAGE_TOKEN_KEY is set (the emulator may go without one)."""
    _check_page_token_key()


class Wiring:
    """What a neuron serves, without a grpc.server: its Deps, one servicer per service and the
    server interceptor chain (tracing when on, admission, auth when AUTH_MODE is set, the call
    log with statistics). The gRPC server (:class:`Neuron`) and the in-process HTTP/JSON gateway
    (scaffold_runtime.gateway) both serve through it.

    ``clients``: makes the clients of the neurons this one calls (``deps.clients``), given
    ``client_interceptors`` (e.g. tracing) to add to each of their calls. ``page_token_key``:
    the neuron signs page tokens (a server refuses to start without PAGE_TOKEN_KEY outside the
    emulator). Raises StartupError or RuntimeError for a setting it cannot work with (limits,
    AUTH_MODE).
    """

    def __init__(self, services: Sequence[Service], database: str = "(default)", max_workers: int | None = None,
                 stop_requested: threading.Event | None = None, clients: Callable | None = None,
                 client_interceptors: Sequence = (), page_token_key: bool = False) -> None:
        self.services = tuple(services)
        self.service_names = tuple(s.name for s in self.services)
        self.page_token_key = page_token_key
        self.workers = max_workers or int(os.environ.get("GRPC_MAX_WORKERS", "16"))
        self.stop_requested = stop_requested or threading.Event()
        self.stats = RpcStats()
        self.admission = Admission(*_limits(self.workers))
        interceptors = [self.admission, CallLogInterceptor(stats=self.stats)]
        checker = auth.from_environment()
        if checker is not None:
            interceptors.insert(1, auth.AuthInterceptor(checker))
        if tracing.enabled():  # first: admission, auth and the call log run inside the span
            interceptors.insert(0, tracing.TraceInterceptor())
        self.interceptors = tuple(interceptors)
        if tracing.enabled():  # calls to other neurons continue the trace of the call being served
            client_interceptors = (*tracing.client_interceptors(), *client_interceptors)
        self.deps = Deps(self.stop_requested, self.stats, database=database, clients=clients,
                         client_interceptors=client_interceptors)
        self.servicers = tuple((s, s.servicer(self.deps)) for s in self.services)

    def register(self, server) -> None:
        """Add every servicer to ``server`` (a grpc.Server, or anything with its
        add_generic_rpc_handlers / add_registered_method_handlers)."""
        for s, servicer in self.servicers:
            s.add_to_server(servicer, server)

    def start_timers(self) -> None:
        """SERVER_MAX_LIFETIME (a stop request when it runs out) and STATS_LOG_SECONDS
        (statistics logged until the stop request), when set."""
        lifetime = float(os.environ.get("SERVER_MAX_LIFETIME", "0") or 0)
        if lifetime > 0:
            timer = threading.Timer(lifetime, self.deps.request_shutdown, args=(f"maximum lifetime of {lifetime:g} s reached",))
            timer.daemon = True
            timer.start()
        every = float(os.environ.get("STATS_LOG_SECONDS", "0") or 0)
        if every > 0:
            self.stats.log_every(every, self.stop_requested)


class Neuron:
    """The server with its services registered; ``start``, then ``drain`` to stop.

    ``clients``: makes the clients of the neurons this one calls (``deps.clients``), given
    ``client_interceptors`` (e.g. tracing) to add to each of their calls. The servicers, Deps
    and interceptors are a :class:`Wiring` (``self.wiring``): made from those arguments, or
    ``wiring`` itself when given (a neuron's server.py passes the one its ``wiring()`` makes).
    Raises StartupError for a setting it cannot start with (TLS files, limits, a busy port).
    """

    def __init__(self, services: Sequence[Service] = (), database: str = "(default)", host: str = "[::]",
                 port: int = 8080, max_workers: int | None = None,
                 stop_requested: threading.Event | None = None, clients: Callable | None = None,
                 client_interceptors: Sequence = (), *, wiring: Wiring | None = None) -> None:
        wiring = wiring or Wiring(services, database, max_workers, stop_requested, clients, client_interceptors)
        self.wiring = wiring
        self.services, self.service_names = wiring.services, wiring.service_names
        self.stop_requested, self.stats, self.admission = wiring.stop_requested, wiring.stats, wiring.admission
        self.interceptors, self.deps = wiring.interceptors, wiring.deps
        self.stopped = threading.Event()
        credentials = _tls_credentials()
        self.workers = Workers(wiring.workers, thread_name_prefix="grpc")  # leaner per call than ThreadPoolExecutor
        self.server = grpc.server(
            self.workers,
            interceptors=self.interceptors,
            options=[
                ("grpc.max_receive_message_length", int(os.environ.get("GRPC_MAX_RECEIVE_BYTES", "4194304"))),
                ("grpc.so_reuseport", 0),
            ],
            compression=_compression(os.environ.get("GRPC_COMPRESSION", "none")),
        )
        wiring.register(self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        _load_service_files(self.services)
        reflection.enable_server_reflection(
            (*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = f"{host}:{port}"
        self.tls = credentials is not None
        try:
            self.port = self.server.add_secure_port(address, credentials) if credentials else self.server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise StartupError(f"cannot listen on {host}:{port}: is the port in use?")
        self._drain_lock = threading.Lock()

    def start(self, grace: float | None = None) -> None:
        """Serve; a stop request (signal, Shutdown RPC, lifetime) later drains in the background."""
        warming = self.deps.warm_firestore()  # connects while the server starts
        self.server.start()
        if warming is not None:  # SERVING once Firestore answered, or after FIRESTORE_WARMUP_SECONDS anyway
            warming.join(float(os.environ.get("FIRESTORE_WARMUP_SECONDS", "3") or 0))
        for name in ("", *self.service_names):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        # Everything made at start-up (modules, descriptors, clients) lives as long as the
        # process: out of the cyclic collector's way, the collections calls trigger scan less.
        gc.freeze()
        log.info("listening on port %d", self.port, extra={"fields": {"port": self.port, "tls": self.tls}})
        grace = float(os.environ.get("SHUTDOWN_GRACE_SECONDS", "8")) if grace is None else grace

        def watch() -> None:
            self.stop_requested.wait()
            self.drain(grace)

        threading.Thread(target=watch, name="drain-watch", daemon=True).start()
        self.wiring.start_timers()

    def drain(self, grace: float = 8.0) -> None:
        """Turn health NOT_SERVING, refuse new calls (UNAVAILABLE), let the admitted calls
        finish with their own results within ``grace`` s, then stop."""
        with self._drain_lock:
            if self.stopped.is_set():
                return
            self.stop_requested.set()
            started = time.monotonic()
            self.health.enter_graceful_shutdown()
            log.info("draining: up to %.1f s for calls in flight", grace)
            if not self.admission.drain(grace):
                log.warning("calls still in flight after %.1f s are cancelled", grace)
            # Left now: health Watch streams and calls being refused. grpc's stop turns new
            # calls away (UNAVAILABLE), lets these finish, and cancels what still runs when
            # the rest of the grace period ends (only a Watch stream can).
            self.server.stop(max(0.5, grace - (time.monotonic() - started))).wait()
            self.workers.shutdown(wait=False)  # grpc has finished with them
            self.stopped.set()
            log.info("stopped")


def _compression(name: str) -> grpc.Compression:
    choices = {"none": grpc.Compression.NoCompression, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}
    try:
        return choices[name.strip().lower() or "none"]
    except KeyError:
        raise RuntimeError(f"GRPC_COMPRESSION={name!r}: use gzip, deflate or none") from None


def _read(setting: str, path: str) -> bytes:
    """The file a setting names; raises StartupError when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise StartupError(f"{setting}={path}: cannot read it ({exc.strerror or exc})") from None


def _check_tls(cert: str, key: str, client_ca: str) -> None:
    """Refuse a certificate and key that are not PEM, do not match or have expired, and a
    client CA file with no certificate in it (raises StartupError)."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise StartupError(f"TLS_CERT_FILE={cert} and TLS_KEY_FILE={key} are not a PEM certificate and its "
                           f"private key ({exc.reason or exc})") from None
    try:
        not_after = ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert(cert)["notAfter"])
    except (AttributeError, KeyError, ValueError, ssl.SSLError):
        not_after = None  # undecodable here; load_cert_chain accepted it
    if not_after is not None and not_after < time.time():
        raise StartupError(f"TLS_CERT_FILE={cert}: the certificate expired on "
                           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(not_after))}; issue a new one")
    if client_ca:
        roots = _read("TLS_CLIENT_CA_FILE", client_ca)
        try:
            if b"-----BEGIN CERTIFICATE-----" not in roots:
                raise ValueError("no certificate")
            context.load_verify_locations(cadata=roots.decode("ascii", "replace"))
        except (ValueError, ssl.SSLError):
            raise StartupError(f"TLS_CLIENT_CA_FILE={client_ca} holds no PEM CA certificate: "
                               "every client would be refused") from None


def _tls_credentials() -> grpc.ServerCredentials | None:
    """Server credentials from TLS_CERT_FILE, TLS_KEY_FILE and TLS_CLIENT_CA_FILE; None for
    plaintext; raises StartupError on a setting that cannot work."""
    cert, key = os.environ.get("TLS_CERT_FILE", ""), os.environ.get("TLS_KEY_FILE", "")
    client_ca = os.environ.get("TLS_CLIENT_CA_FILE", "")
    if not cert and not key:
        if client_ca:
            raise StartupError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE")
        return None
    if not (cert and key):
        raise StartupError("set both TLS_CERT_FILE and TLS_KEY_FILE, or neither")
    pair = (_read("TLS_KEY_FILE", key), _read("TLS_CERT_FILE", cert))
    _check_tls(cert, key, client_ca)
    roots = _read("TLS_CLIENT_CA_FILE", client_ca) if client_ca else None
    return grpc.ssl_server_credentials([pair], root_certificates=roots, require_client_auth=roots is not None)


def _request_stop(stop_requested: threading.Event, reason: str) -> None:
    if not stop_requested.is_set():
        log.info("stopping: %s", reason)
        stop_requested.set()


def main(make_neuron: Callable[..., Neuron], *, page_token_key: bool = False) -> int:
    """Run a neuron until it is stopped; the exit code. ``make_neuron(host, port,
    stop_requested=…)`` builds it; ``page_token_key``: refuse to start without PAGE_TOKEN_KEY
    outside the emulator (neurons with stored resources sign page tokens with it)."""
    logs.setup()
    # Signals are handled from the first moment: one that arrives during start-up drains
    # the server as soon as it has started.
    stop_requested = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: _request_stop(stop_requested, signal.Signals(signum).name))
    try:
        if page_token_key:
            _check_page_token_key()
        tracing.setup()
        neuron = make_neuron(os.environ.get("HOST", "[::]"), int(os.environ.get("PORT", "8080")), stop_requested=stop_requested)
    except (StartupError, RuntimeError, ValueError) as exc:  # a bad setting: say which, no traceback
        log.critical("cannot start: %s", exc)
        return 2
    neuron.start()
    while not neuron.stopped.wait(1.0):  # a timed wait keeps signal handlers responsive
        pass
    return 0
