"""The gRPC server's worker threads: a pool of at most GRPC_MAX_WORKERS threads that costs
less per call than ``concurrent.futures.ThreadPoolExecutor``.

grpc's sync server hands every call to its pool with ``submit(fn, *args)`` and only ever calls
``add_done_callback`` on what comes back (to count calls in flight). ThreadPoolExecutor pays for
more than that on each call: a Future with its own Condition, a lock around each state change,
an idle-thread semaphore, notify_all to waiters nobody has. Here a call is one small object on a
``queue.SimpleQueue`` (C) and the workers run it and its callbacks; nothing else is locked.
bench/server.py measures the difference (Echo, one core).

Not a general executor: no results, no cancellation, no ``map``; exceptions escaping a task are
logged (grpc's own pool functions catch everything a servicer raises before that).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("server")


class Task:
    """One submitted call: what grpc gets back from :meth:`Workers.submit`."""

    __slots__ = ("args", "callbacks", "claim", "done", "fn")

    def __init__(self, fn: Callable, args: tuple) -> None:
        self.fn = fn
        self.args = args
        self.callbacks: list[Callable] = []
        self.done = False
        self.claim = [True]  # popped once (atomic): by the worker that runs it, or by a refusal

    def _claimed(self) -> bool:
        """Whether this caller is the one to act on the task (run it, or refuse it)."""
        try:
            self.claim.pop()
        except IndexError:
            return False
        return True

    def add_done_callback(self, callback: Callable[[Task], object]) -> None:
        """Call ``callback(task)`` once the task has run (now, when it already has)."""
        self.callbacks.append(callback)
        if self.done:
            self._run_callbacks()

    def _run_callbacks(self) -> None:
        # list.pop is atomic: when the worker finishing the task and add_done_callback race,
        # each callback is popped, so run, exactly once.
        callbacks = self.callbacks
        while True:
            try:
                callback = callbacks.pop()
            except IndexError:
                return
            try:
                callback(self)
            except Exception:  # a callback must not stop a worker
                log.exception("a call's completion callback failed")


class Workers:
    """Up to ``max_workers`` threads (one more started by each call until there are that
    many), serving submitted tasks in order."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "grpc") -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.max_workers = max_workers
        self._prefix = thread_name_prefix
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # start-up and shutdown only
        self._shutdown = False

    def submit(self, fn: Callable, *args) -> Task:
        """Run ``fn(*args)`` on a worker; raises RuntimeError after :meth:`shutdown`."""
        if len(self._threads) < self.max_workers:
            self._add_thread()
        if self._shutdown:
            raise RuntimeError("cannot take new calls after shutdown")
        task = Task(fn, args)
        self._queue.put(task)
        # shutdown() may have queued its stop markers just before this task, so no worker would
        # reach it: refuse it unless a worker has already claimed it.
        if self._shutdown and task._claimed():
            raise RuntimeError("cannot take new calls after shutdown")
        return task

    def _add_thread(self) -> None:
        """One more worker, while there are fewer than max_workers: each of the first calls
        starts one (~0.1 ms), so a cold start pays for one thread, not all of them."""
        with self._lock:
            if len(self._threads) >= self.max_workers or self._shutdown:
                return
            thread = threading.Thread(target=self._work, name=f"{self._prefix}_{len(self._threads)}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        get = self._queue.get
        while (task := get()) is not None:
            if not task._claimed():  # refused by submit() during shutdown
                continue
            try:
                task.fn(*task.args)
            except BaseException:  # grpc's pool functions catch what servicers raise; this is the rest
                log.exception("a call failed outside its handler")
            task.done = True
            task._run_callbacks()
            del task  # hold nothing of the call while waiting for the next one

    def shutdown(self, wait: bool = True) -> None:
        """Refuse new tasks; the workers stop once the queued ones have run (joined when
        ``wait``)."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            threads = list(self._threads)
            for _ in threads:
                self._queue.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    @property
    def threads(self) -> int:
        """How many worker threads run (0 before the first call and after shutdown)."""
        return sum(t.is_alive() for t in self._threads)
