"""What servicers share, made once per process: the Firestore client and the clients of the
neurons this one calls (``deps.clients.<alias>``, see :mod:`scaffold_runtime.neuron_client`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Sequence

from scaffold_runtime.stats import RpcStats

log = logging.getLogger("server")
WARMUP_READ_SECONDS = 30.0


class Deps:
    """Handed to every servicer. Attributes are created on first use, once per process."""

    def __init__(self, stop_requested: threading.Event | None = None, stats: RpcStats | None = None,
                 database: str = "(default)", clients: Callable[[Sequence], object] | None = None,
                 client_interceptors: Sequence = ()) -> None:
        self.stop_requested = stop_requested or threading.Event()
        self.stats = stats or RpcStats()
        self.database = database
        self._clients = clients
        self.client_interceptors = list(client_interceptors)  # added to every call to another neuron

    @functools.cached_property
    def clients(self):
        """The clients of the neurons this one calls, each by its alias (``deps.clients.books``),
        made by ``clients(client_interceptors)`` on first use; raises AttributeError when the
        neuron calls no other neuron."""
        if self._clients is None:
            raise AttributeError("this neuron calls no other neuron (`scaffold neuron depend A B` adds one)")
        return self._clients(tuple(self.client_interceptors))

    def request_shutdown(self, reason: str = "shutdown requested") -> None:
        """Drain and stop the server, the same way SIGTERM does (calls in flight finish)."""
        if not self.stop_requested.is_set():
            log.info("stopping: %s", reason)
            self.stop_requested.set()

    @functools.cached_property
    def firestore(self):
        """A Firestore client for ``GOOGLE_CLOUD_PROJECT`` (or the emulator when
        ``FIRESTORE_EMULATOR_HOST`` is set; then the project defaults to ``demo-local``), on
        database ``FIRESTORE_DATABASE``, else this neuron's own (``database``, which server.py
        sets to the neuron's name): neurons never share documents, not even on one emulator."""
        from google.cloud import firestore

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
        if project is None and os.environ.get("FIRESTORE_EMULATOR_HOST"):
            project = "demo-local"
        database = os.environ.get("FIRESTORE_DATABASE") or self.database
        return firestore.Client(project=project, database=database)

    def warm_firestore(self) -> threading.Thread | None:
        """When a servicer has created the Firestore client (base servicers do, at start-up),
        open its channel with one cheap read (a document that need not exist) in a daemon
        thread, so the first call does not pay for connecting and fetching credentials.
        Returns the thread (the server waits for it up to FIRESTORE_WARMUP_SECONDS before
        reporting SERVING; the read itself goes on for up to 30 s, so a slow first connection
        still completes in the background), or None when there is nothing to warm. Failures
        are logged only: a slow or unreachable database never stops the server from starting."""
        bound = float(os.environ.get("FIRESTORE_WARMUP_SECONDS", "3") or 0)
        if "firestore" not in self.__dict__ or bound <= 0:  # the cached_property is not created yet
            return None
        client = self.firestore

        def warm() -> None:
            try:
                client.collection("_scaffold").document("warmup").get(timeout=WARMUP_READ_SECONDS, retry=None)
            except Exception as exc:  # noqa: BLE001 - any failure only means the first call connects
                log.warning("firestore warm-up failed: %s", type(exc).__name__, extra={"fields": {"error": str(exc)[:300]}})

        thread = threading.Thread(target=warm, name="firestore-warmup", daemon=True)
        thread.start()
        return thread
