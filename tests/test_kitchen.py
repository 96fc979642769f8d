"""Every field type survives Firestore, and every streaming kind gets a working stub.

A user-style test is added to the generated neuron (its tests are the user's) and the
neuron's whole suite runs against the real emulator.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_neuron_tests

KITCHEN = Path(__file__).parent / "protos"

ROUND_TRIP = '''

import datetime

from google.protobuf import duration_pb2, struct_pb2, wrappers_pb2
from google.type import date_pb2
from kitchen.v1 import kitchen_pb2

from scaffold_runtime.testing import sample_parent

SINK_PARENT = sample_parent("kitchens/{kitchen}/sinks/{sink}")


def full_sink():
    sink = kitchen_pb2.Sink(
        title="everything", i32=-7, i64=-(2**62), u32=2**32 - 1, u64=2**64 - 1, s32=-3, s64=-(2**40),
        f32=7, f64=2**63 + 5, sf32=-9, sf64=-(2**50), fl=1.5, db=-2.25, flag=True, blob=b"\\x00\\xffbytes",
        colour=kitchen_pb2.COLOUR_BLUE, tags=["a", "b"], colours=[kitchen_pb2.COLOUR_RED, kitchen_pb2.COLOUR_BLUE],
        tap=kitchen_pb2.Tap(label="t", flows=[1, 2], colour=kitchen_pb2.COLOUR_RED),
        taps=[kitchen_pb2.Tap(label="x"), kitchen_pb2.Tap(flows=[3])],
        counts={"k": 2**40, "z": 0}, by_flag={True: "yes", False: "no"},
        maybe_text=wrappers_pb2.StringValue(value=""), maybe_count=wrappers_pb2.Int64Value(value=5),
        maybe_flag=wrappers_pb2.BoolValue(value=False), wait=duration_pb2.Duration(seconds=3, nanos=500),
        day=date_pb2.Date(year=2026, month=11, day=21), square_tap=kitchen_pb2.Tap(label="sq"), maybe_zero=0,
    )
    sink.taps_by_id[7].label = "seven"
    sink.seen.FromDatetime(datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.UTC))
    sink.seen_all.add().FromDatetime(datetime.datetime(1999, 12, 31, tzinfo=datetime.UTC))
    sink.extra.update({"n": 1.5, "s": "x", "l": [1, "two", None], "m": {"inner": True}})
    return sink


def test_every_field_type_round_trips_through_firestore(stub):
    sent = full_sink()
    created = stub.CreateSink(kitchen_pb2.CreateSinkRequest(parent=SINK_PARENT, sink=sent, sink_id="full"))
    got = stub.GetSink(kitchen_pb2.GetSinkRequest(name=created.name))
    expected = kitchen_pb2.Sink()
    expected.CopyFrom(sent)
    expected.name = created.name
    expected.create_time.CopyFrom(created.create_time)
    expected.update_time.CopyFrom(created.update_time)
    assert got == expected
    assert got.HasField("maybe_text") and got.maybe_text.value == ""  # presence kept
    assert got.HasField("maybe_zero") and got.WhichOneof("shape") == "square_tap"
    assert not got.HasField("round_label")


def test_a_oneof_switch_through_an_update_mask(stub):
    created = stub.CreateSink(kitchen_pb2.CreateSinkRequest(parent=SINK_PARENT, sink=full_sink(), sink_id="one"))
    change = kitchen_pb2.Sink(name=created.name, round_label="round")
    updated = stub.UpdateSink(kitchen_pb2.UpdateSinkRequest(sink=change, update_mask={"paths": ["round_label", "square_tap"]}))
    assert updated.WhichOneof("shape") == "round_label" and updated.round_label == "round"
    again = stub.GetSink(kitchen_pb2.GetSinkRequest(name=created.name))
    assert again == updated
'''


def test_kitchen_sink_neuron(workspace, scaffold, emulator):
    r = scaffold("neuron", "create", "--proto", str(KITCHEN / "kitchen/v1/kitchen.proto"), "-I", str(KITCHEN))
    assert r.code == 0, r.output
    root = workspace / "neurons" / "kitchen-v1"
    tests = root / "tests" / "test_kitchen_service.py"
    tests.write_text(tests.read_text() + ROUND_TRIP)
    methods = (root / "methods.py").read_text()
    for kind in ("def Drain(self, request: kitchen_pb2.GetSinkRequest, context: grpc.ServicerContext) -> Iterator[kitchen_pb2.Sink]:",
                 "def Fill(self, request_iterator: Iterator[kitchen_pb2.Sink], context: grpc.ServicerContext) -> empty_pb2.Empty:",
                 "self, request_iterator: Iterator[kitchen_pb2.Sink], context: grpc.ServicerContext\n    ) -> Iterator[kitchen_pb2.Sink]:"):
        assert kind in methods
    result = run_neuron_tests(root, "-rA", emulator=emulator)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for name in ("test_every_field_type_round_trips_through_firestore", "test_a_oneof_switch_through_an_update_mask"):
        assert f"PASSED tests/test_kitchen_service.py::{name}" in result.stdout, name
    for name in ("test_drain_is_a_stub_until_implemented", "test_fill_is_a_stub_until_implemented",
                 "test_chat_is_a_stub_until_implemented", "test_list_sinks_walks_every_page_in_a_stable_order"):
        assert f"PASSED tests/test_kitchen_service_contract.py::{name}" in result.stdout, name
