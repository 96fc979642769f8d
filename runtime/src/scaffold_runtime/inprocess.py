"""The gateway's in-process upstream: the neuron's servicers called straight from HTTP requests,
with no gRPC hop (grpc-gateway's ``RegisterXHandlerServer``).

The method handlers are captured by calling each service's generated
``add_<Service>Servicer_to_server`` with a recorder instead of a grpc.server; each call then
goes through the same server interceptor chain the gRPC server applies (tracing, admission,
auth, the call log: :class:`scaffold_runtime.server.Wiring`), in a bounded thread pool of
GRPC_MAX_WORKERS threads, with a :class:`Context` standing in for grpc's ServicerContext.
A call that fails raises :class:`CallError`, which has the ``code()``, ``details()`` and
``trailing_metadata()`` of grpc.aio.AioRpcError, so the gateway renders both alike.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import grpc

from scaffold_runtime.workers import Workers

log = logging.getLogger("gateway")
_OK = grpc.StatusCode.OK
EOF = grpc.aio.EOF  # what a stream's read() returns after its last message, as grpc.aio's does
STREAM_BUFFER = 8  # messages a server stream may run ahead of the HTTP client reading them
WATCH_AFTER = 1.0  # s: a unary call still running this long starts watching for the client leaving


class CallError(Exception):
    """A call that ended with a status other than OK; read like grpc.aio.AioRpcError."""

    def __init__(self, code: grpc.StatusCode, details: str = "", trailing: Sequence = ()) -> None:
        super().__init__(code.name)
        self._code, self._details, self._trailing = code, details, tuple(trailing or ())

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailing


class _Aborted(Exception):
    """What Context.abort raises (grpc's raises a bare Exception); the status is on the context."""


class _Details(NamedTuple):  # grpc.HandlerCallDetails
    method: str
    invocation_metadata: tuple


class Context:
    """What servicers, interceptors and the store use of grpc.ServicerContext, for one call.

    ``deadline``: time.monotonic() by which the call must end; ``peer``: the HTTP client."""

    def __init__(self, metadata: Sequence, deadline: float, peer: str = "") -> None:
        self._metadata = tuple(metadata)
        self._deadline = deadline
        self._peer = peer or "unknown"
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple = ()
        self._aborted = False
        self._active = True
        self._callbacks: list = []

    # -- status ---------------------------------------------------------------------------
    def abort(self, code: grpc.StatusCode, details: str):
        """End the call with ``code`` and ``details``; raises (as grpc's does)."""
        if code is _OK:  # grpc: abort with OK fails the call
            code, details = grpc.StatusCode.UNKNOWN, ""
        self._code, self._details, self._aborted = code, details or "", True
        raise _Aborted()

    def abort_with_status(self, status) -> None:
        """End the call with a grpc.Status (its trailing metadata carries AIP-193 details); raises."""
        self._trailing = tuple(status.trailing_metadata or ())
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details or ""

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata) -> None:
        self._trailing = tuple(metadata or ())

    def trailing_metadata(self) -> tuple:
        return self._trailing

    # -- the call -------------------------------------------------------------------------
    def invocation_metadata(self) -> tuple:
        return self._metadata

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        """False once the call is over: the HTTP client left, or the deadline passed."""
        return self._active and time.monotonic() < self._deadline

    def cancel(self) -> None:
        """End the call as CANCELLED (the HTTP client left); runs the add_callback callbacks."""
        if self._active:
            self._active = False
            if self._code is None:
                self._code = grpc.StatusCode.CANCELLED
            self.run_callbacks()

    def add_callback(self, callback) -> bool:
        """Call ``callback()`` when the call ends; True (it will be called)."""
        self._callbacks.append(callback)
        return True

    def run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a call's termination callback failed")

    def peer(self) -> str:
        return self._peer

    def peer_identities(self):
        return None

    def peer_identity_key(self):
        return None

    def auth_context(self) -> dict:
        return {}

    def send_initial_metadata(self, metadata) -> None:
        """Accepted and dropped: an HTTP/JSON answer has no initial metadata."""

    def set_compression(self, compression) -> None:
        """Accepted and ignored (HTTP compression is not the servicer's choice)."""

    def disable_next_message_compression(self) -> None:
        """Accepted and ignored."""

    def failure(self, error: BaseException | None) -> CallError | None:
        """The CallError the call ends with (None: OK). An abort or a code set on the context
        stands (its details and trailers kept); any other exception is INTERNAL with no
        internals (the gRPC server would say UNKNOWN, with the exception's text)."""
        code = self._code
        if code is not None and code is not _OK:
            return CallError(code, self._details, self._trailing)
        if error is not None:
            return CallError(grpc.StatusCode.INTERNAL, "internal error")
        return None


class _Recorder:
    """Stands in for a grpc.Server while add_<Service>Servicer_to_server registers handlers."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}
        self.generic: list = []

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.methods.update({f"/{service}/{name}": handler for name, handler in handlers.items()})

    def add_generic_rpc_handlers(self, handlers) -> None:
        self.generic.extend(handlers)

    def lookup(self, details: _Details) -> grpc.RpcMethodHandler | None:
        """The handler of ``details.method`` (registered first, as grpc's server looks), or None."""
        handler = self.methods.get(details.method)
        if handler is None:
            handler = next((h for g in self.generic if (h := g.service(details)) is not None), None)
        return handler


class InProcess:
    """The upstream that calls a :class:`scaffold_runtime.server.Wiring`'s servicers in this
    process. ``start()`` warms Firestore and starts the timers; ``drain(grace)`` refuses new
    calls (UNAVAILABLE) and lets the admitted ones finish."""

    def __init__(self, wiring) -> None:
        self.wiring = wiring
        recorder = _Recorder()
        wiring.register(recorder)
        resolve = recorder.lookup
        for interceptor in reversed(wiring.interceptors):  # the first interceptor runs first, as in grpc.server
            resolve = functools.partial(interceptor.intercept_service, resolve)
        self._resolve = resolve
        # The gRPC server's pool, with the answer handed back to the event loop by the worker
        # itself (_deliver): no concurrent.futures.Future per call, as run_in_executor makes.
        self.pool = Workers(wiring.workers, thread_name_prefix="call")
        self.draining = False  # set when drain() starts

    def start(self) -> threading.Thread | None:
        """Open the Firestore connection in the background and start SERVER_MAX_LIFETIME and
        STATS_LOG_SECONDS; returns the warm-up thread (None: nothing to warm)."""
        warming = self.wiring.deps.warm_firestore()
        self.wiring.start_timers()
        return warming

    def drain(self, grace: float) -> bool:
        """Refuse new calls, wait up to ``grace`` s for the admitted ones; whether they all ended."""
        if self.draining:
            return True
        self.draining = True
        self.wiring.stop_requested.set()
        finished = self.wiring.admission.drain(grace, quiet=0.0, quiet_wait=0.0)
        self.pool.shutdown(wait=False)  # a call queued behind the admitted ones is refused by admission
        return finished

    def _handler(self, method: str, metadata: Sequence, streaming: bool):
        if self.draining:  # the pool is shut down: refuse as the gRPC server does while it drains
            raise CallError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry")
        handler = self._resolve(_Details(method, tuple(metadata)))
        if handler is None:
            raise CallError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        behaviour = handler.unary_stream if streaming else handler.unary_unary
        if behaviour is None:
            raise CallError(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        return behaviour

    @staticmethod
    def _run(behaviour, message, context: Context, response_type: type):
        """One unary call in a worker thread: the response, or raises CallError."""
        try:
            response = behaviour(message, context)
        except Exception as exc:  # noqa: BLE001 - turned into a status, as the gRPC server does
            failure = context.failure(exc)
        else:
            failure = context.failure(None)
            if failure is None and not isinstance(response, response_type):
                failure = CallError(grpc.StatusCode.INTERNAL, "Failed to serialize response!")
        context._active = False
        context.run_callbacks()
        if failure is not None:
            raise failure
        return response

    def _deliver(self, loop, future: asyncio.Future, behaviour, message, context: Context, response_type: type) -> None:
        """In a worker: run the call, then settle ``future`` on ``loop`` with its outcome."""
        try:
            outcome = (self._run(behaviour, message, context, response_type), None)
        except BaseException as exc:  # noqa: BLE001 - CallError, or what escaped the servicer: the caller raises it
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(_settle, future, *outcome)
        except RuntimeError:  # the event loop has closed: nobody waits for this answer any more
            pass

    def _submit(self, fn, *args) -> None:
        try:
            self.pool.submit(fn, *args)
        except RuntimeError:  # drain() shut the pool down since _handler looked
            raise CallError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry") from None

    async def unary(self, rule, message, metadata: Sequence, timeout: float, peer: str = "", receive=None):
        """The rule's response to ``message``; raises CallError. A call still running after
        WATCH_AFTER s watches ``receive`` (ASGI) and is cancelled when the client leaves."""
        behaviour = self._handler(rule.method, metadata, False)
        context = Context(metadata, time.monotonic() + timeout, peer)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._submit(self._deliver, loop, future, behaviour, message, context, rule.response)
        watch = loop.call_later(WATCH_AFTER, _watch, receive, context) if receive is not None else None
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            context._active = False
            raise CallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        finally:
            if watch is not None:
                watch.cancel()

    def stream(self, rule, message, metadata: Sequence, timeout: float, peer: str = "") -> _Stream:
        """A server-streaming call, read with ``await read()`` (a message, or EOF; raises
        CallError) and stopped with ``cancel()``; raises CallError when it cannot start."""
        behaviour = self._handler(rule.method, metadata, True)
        context = Context(metadata, time.monotonic() + timeout, peer)
        stream = _Stream(context)
        self._submit(stream._produce, behaviour, message)
        return stream


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    """On the event loop: ``future``'s outcome, unless it was given up on (deadline, client gone)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _watch(receive, context: Context) -> None:
    """Cancel ``context`` when the HTTP client disconnects (a task reading ASGI ``receive``)."""

    async def wait() -> None:
        while context._active:
            if (await receive())["type"] == "http.disconnect":
                context.cancel()
                return

    task = asyncio.get_running_loop().create_task(wait())
    context.add_callback(lambda: task.get_loop().call_soon_threadsafe(task.cancel))


class _Stream:
    """A server stream produced in one worker thread (so the interceptors' generators run where
    they started) into a queue at most STREAM_BUFFER messages ahead of the reader."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._space = threading.Semaphore(STREAM_BUFFER)

    def _put(self, item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody reads this stream any more
            self.context.cancel()

    def _produce(self, behaviour, message) -> None:
        context = self.context
        error = None
        try:
            iterator = behaviour(message, context)
            try:
                for item in iterator:
                    while not self._space.acquire(timeout=0.1):
                        if not context.is_active():
                            break
                    if not context.is_active():
                        break
                    self._put(item)
            finally:
                iterator.close()  # the interceptors' finally blocks (admission) run here, in this thread
        except Exception as exc:  # noqa: BLE001 - a status, as the gRPC server gives
            error = exc
        failure = context.failure(error)
        context._active = False
        context.run_callbacks()
        self._put(failure if failure is not None else EOF)

    async def read(self):
        """The next message, or EOF; raises CallError (DEADLINE_EXCEEDED past the deadline)."""
        try:
            async with asyncio.timeout(self.context.time_remaining()):
                item = await self._queue.get()
        except TimeoutError:
            self.context._active = False
            raise CallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        if isinstance(item, CallError):
            raise item
        if item is not EOF:
            self._space.release()
        return item

    def cancel(self) -> None:
        """Stop the stream (the client left or the answer ended); the producer stops at its next message."""
        self.context.cancel()
