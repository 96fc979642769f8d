"""Servicers for xmpl.br.services-translator-v1: your code.

Created by scaffold; from now on this file is yours. `scaffold neuron update` only adds a
stub for each new RPC and never changes what you wrote.

The Translator of the Asylo gRPC example: Greek-derived words to English, from a Firestore
collection that is seeded from dictionary.json when it is empty.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from pathlib import Path

import grpc
from google.api_core import exceptions as gexc
from xmpl.br.services.translator.v1 import translator_pb2

import base

log = logging.getLogger("translator")
DICTIONARY = Path(__file__).resolve().parent / "dictionary.json"
COLLECTION = "translations"
MAX_WORD = 100


def seed_dictionary(client, path: Path = DICTIONARY) -> int:
    """Load ``path`` into the collection when it is empty; return how many words were written.

    Idempotent: a non-empty collection is left alone (words added or changed there win), and
    two instances seeding at once write the same documents.
    """
    words = client.collection(COLLECTION)
    if any(True for _ in words.limit(1).stream()):
        return 0
    entries = json.loads(path.read_text(encoding="utf-8"))
    batch = client.batch()
    for greek, english in sorted(entries.items()):
        batch.set(words.document(greek.lower()), {"greek": greek.lower(), "english": english})
    batch.commit()
    log.info("seeded %d words from %s", len(entries), path.name)
    return len(entries)


class TranslatorService(base.TranslatorServiceBase):
    """Translates Greek-derived words into English."""

    def __init__(self, deps) -> None:
        super().__init__(deps)
        self.client = deps.firestore
        seed_dictionary(self.client)
        if not os.environ.get("STATS_LOG_SECONDS"):  # the server logs them when that is set
            deps.stats.log_every(60, deps.stop_requested)

    def GetTranslation(
        self, request: translator_pb2.GetTranslationRequest, context: grpc.ServicerContext
    ) -> translator_pb2.GetTranslationResponse:
        """Translates one word. Errors: INVALID_ARGUMENT for no input word and for a word with no known translation."""
        word = request.input_word.strip()
        if not word:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "No input word")
        key = word.lower()
        # Only plain words can be document ids; anything else has no translation either.
        if len(key) > MAX_WORD or "/" in key or key in (".", "..") or (key.startswith("__") and key.endswith("__")):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'No known translation for "{word[:MAX_WORD]}"')
        try:
            snap = self.client.collection(COLLECTION).document(key).get()
        except gexc.GoogleAPICallError as exc:
            log.warning("firestore unavailable: %s", type(exc).__name__)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the dictionary is unavailable; retry later")
        if not snap.exists:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'No known translation for "{word}"')
        return translator_pb2.GetTranslationResponse(translated_word=snap.get("english"))

    def Shutdown(
        self, request: translator_pb2.ShutdownRequest, context: grpc.ServicerContext
    ) -> translator_pb2.ShutdownResponse:
        """Drains and stops the server, as SIGTERM does."""
        self.deps.request_shutdown("Shutdown RPC")
        return translator_pb2.ShutdownResponse()

    def GetStats(
        self, request: translator_pb2.GetStatsRequest, context: grpc.ServicerContext
    ) -> translator_pb2.GetStatsResponse:
        """Per method and status code: how many calls, and their latency percentiles."""
        response = translator_pb2.GetStatsResponse(
            methods=[
                translator_pb2.MethodStats(
                    method=s.method, code=s.code, count=s.count, p50_ms=s.p50_ms, p90_ms=s.p90_ms, p99_ms=s.p99_ms
                )
                for s in self.deps.stats.snapshot()
            ]
        )
        response.since.FromDatetime(datetime.datetime.fromtimestamp(self.deps.stats.since, datetime.UTC))
        return response
