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
