"""Tests for xmpl.br.services.translator.v1.TranslatorService, over a real channel against the
Firestore emulator.

Created by scaffold, then written by hand for the example.
"""

from __future__ import annotations

import json
import os

import grpc
import pytest
from scaffold_runtime.testing import serve_in_process
from xmpl.br.services.translator.v1 import translator_pb2, translator_pb2_grpc

import methods

DICTIONARY = json.loads(methods.DICTIONARY.read_text())


@pytest.fixture(autouse=True)
def dictionary(emulator):
    """conftest wipes the database before each test; put the dictionary back as start-up does."""
    from google.cloud import firestore

    import server

    database = os.environ.get("FIRESTORE_DATABASE") or server.DATABASE  # the neuron's own database
    client = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"], database=database)
    methods.seed_dictionary(client)
    return client


@pytest.fixture
def stub(channel):
    return translator_pb2_grpc.TranslatorServiceStub(channel)


def assert_code(call, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value


def translate(stub, word: str) -> str:
    return stub.GetTranslation(translator_pb2.GetTranslationRequest(input_word=word)).translated_word


@pytest.mark.parametrize("greek, english", [("asylo", "sanctuary"), ("istio", "sail"), ("kubernetes", "helmsman")])
def test_the_asylo_words(stub, greek, english):
    assert translate(stub, greek) == english


def test_every_dictionary_word_in_any_case(stub):
    for greek, english in DICTIONARY.items():
        assert translate(stub, greek.upper()) == english
        assert translate(stub, f"  {greek.capitalize()} ") == english


@pytest.mark.parametrize("empty", ["", "   "])
def test_no_input_word(stub, empty):
    err = assert_code(lambda: translate(stub, empty), grpc.StatusCode.INVALID_ARGUMENT)
    assert err.details() == "No input word"


@pytest.mark.parametrize("word", ["orkut", "Orkut", "a/b", "__name__", "x" * 500])
def test_unknown_words(stub, word):
    err = assert_code(lambda: translate(stub, word), grpc.StatusCode.INVALID_ARGUMENT)
    assert err.details() == f'No known translation for "{word.strip()[:100]}"'


def test_seeding_is_idempotent_and_keeps_edits(dictionary):
    words = dictionary.collection(methods.COLLECTION)
    assert len(list(words.stream())) == len(DICTIONARY)
    words.document("asylo").set({"greek": "asylo", "english": "refuge"})
    assert methods.seed_dictionary(dictionary) == 0
    assert len(list(words.stream())) == len(DICTIONARY)
    assert words.document("asylo").get().get("english") == "refuge"


def test_stats_count_calls_per_method_and_code(stub):
    before = {(s.method, s.code): s.count for s in stub.GetStats(translator_pb2.GetStatsRequest()).methods}
    translate(stub, "logos")
    with pytest.raises(grpc.RpcError):
        translate(stub, "orkut")
    stats = stub.GetStats(translator_pb2.GetStatsRequest())
    after = {(s.method, s.code): s for s in stats.methods}
    method = "/xmpl.br.services.translator.v1.TranslatorService/GetTranslation"
    assert after[(method, "OK")].count == before.get((method, "OK"), 0) + 1
    assert after[(method, "INVALID_ARGUMENT")].count == before.get((method, "INVALID_ARGUMENT"), 0) + 1
    ok = after[(method, "OK")]
    assert 0 < ok.p50_ms <= ok.p90_ms <= ok.p99_ms
    assert stats.since.seconds > 0


def test_shutdown_drains_and_stops_the_server(emulator):
    with serve_in_process() as (target, neuron), grpc.insecure_channel(target) as ch:
        stub = translator_pb2_grpc.TranslatorServiceStub(ch)
        assert translate(stub, "helios") == "sun"
        stub.Shutdown(translator_pb2.ShutdownRequest())
        assert neuron.stopped.wait(10)
        assert_code(lambda: translate(stub, "helios"), grpc.StatusCode.UNAVAILABLE)


def test_maximum_lifetime(emulator, monkeypatch):
    monkeypatch.setenv("SERVER_MAX_LIFETIME", "0.5")
    with serve_in_process() as (_target, neuron):
        assert neuron.stopped.wait(10)
