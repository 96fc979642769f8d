"""Messages the proto allows but Firestore cannot hold as-is, and documents the codec did not
write: through ResourceStore, the real emulator and a real gRPC server (see test_store_aip)."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import field_mask_pb2

from tests.test_store_aip import env, node_store, uid  # noqa: F401 - env is a fixture

ODD_KEYS = ["", "__x__", "__name__", "a.b", "a/b", "`tick`", "é ü 💥", "~", "~x", "__", "___", "x" * 1000]


def test_every_map_key_round_trips(env):
    nodes = node_store(env)
    sent = env.node.Node(title="keys", labels={k: f"v{i}" for i, k in enumerate(ODD_KEYS)})
    sent.kids["__kid__"].labels[""] = "empty"
    made = env.h.run(lambda ctx: nodes.create(ctx, sent), env.node.Node)
    assert dict(made.labels) == dict(sent.labels)
    got = env.h.run(lambda ctx: nodes.get(ctx, made.name), env.node.Node)
    assert got == made and got.kids["__kid__"].labels[""] == "empty"
    # and through an update of single keys, then a full replace
    updated = env.h.run(lambda ctx: nodes.update(ctx, env.node.Node(name=made.name, labels={"": "new", "__x__": "y"}),
                                                 field_mask_pb2.FieldMask(paths=["labels.``", "labels.__x__", "labels.~"])),
                        env.node.Node)
    assert updated.labels[""] == "new" and updated.labels["__x__"] == "y" and "~" not in updated.labels
    assert env.h.run(lambda ctx: nodes.get(ctx, made.name), env.node.Node) == updated
    replaced = env.h.run(lambda ctx: nodes.update(ctx, env.node.Node(name=made.name, labels={"__y__": "z"}),
                                                  field_mask_pb2.FieldMask(paths=["*"])), env.node.Node)
    assert dict(env.h.run(lambda ctx: nodes.get(ctx, made.name), env.node.Node).labels) == {"__y__": "z"} == dict(replaced.labels)


def test_documents_written_before_key_escaping_read_the_same(env):
    nodes = node_store(env)
    name = f"nodes/{uid()}"
    env.client.document(name).create({"name": name, "labels": {"plain": "1", "a.b": "2", "é": "3"}})
    assert dict(env.h.run(lambda ctx: nodes.get(ctx, name), env.node.Node).labels) == {"plain": "1", "a.b": "2", "é": "3"}


def test_unstorable_messages_are_invalid_argument_naming_the_field(env):
    nodes = node_store(env)
    deep = env.node.Node(title="root")
    leaf = deep
    for _ in range(60):
        leaf = leaf.child
        leaf.title = "x"
    err = env.h.fails(lambda ctx: nodes.create(ctx, deep))  # 60 nested REQUIRED names missing: one short message
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "child.name" in err.details() and len(err.details()) < 1000
    leaf = deep
    while leaf.HasField("child"):
        leaf = leaf.child
        leaf.name = "n"
    err = env.h.fails(lambda ctx: nodes.create(ctx, deep))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "child.child" in err.details() and "nested" in err.details()
    long_key = env.node.Node(labels={"k" * 1600: "v"})
    err = env.h.fails(lambda ctx: nodes.create(ctx, long_key))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "labels" in err.details()
    # Nested exactly as deep as Firestore allows still round-trips.
    ok = env.node.Node(title="root")
    leaf = ok
    for _ in range(19):
        leaf = leaf.child
        leaf.name = leaf.title = "x"
    made = env.h.run(lambda ctx: nodes.create(ctx, ok), env.node.Node)
    assert env.h.run(lambda ctx: nodes.get(ctx, made.name), env.node.Node) == made
    # The update path refuses the same way, and leaves the resource as it was.
    deep.name = "root"
    err = env.h.fails(lambda ctx: nodes.update(ctx, env.node.Node(name=made.name, child=deep),
                                               field_mask_pb2.FieldMask(paths=["child"])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "nested" in err.details()
    assert env.h.run(lambda ctx: nodes.get(ctx, made.name), env.node.Node) == made


def test_a_request_larger_than_the_database_accepts_is_invalid_argument(env):
    nodes = node_store(env)
    for size in (1_100_000, 5_000_000):  # over the 1 MiB document limit; over the 4 MiB request limit
        err = env.h.fails(lambda ctx, n=size: nodes.create(ctx, env.node.Node(title="x" * n)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert "large" in err.details()


def test_a_document_with_unexpected_field_types_is_read_and_listed(env, caplog):
    nodes = node_store(env)
    parentless = f"nodes/{uid('bad')}"
    env.client.document(parentless).create({
        "name": parentless, "title": 42, "count": "many", "labels": ["not", "a", "map"],
        "by_number": {"one": "x"}, "child": {"title": "kept", "count": {"no": 1}}, "kids": "nope",
    })
    good = env.h.run(lambda ctx: nodes.create(ctx, env.node.Node(title="fine")), env.node.Node)
    with caplog.at_level(logging.WARNING, logger="scaffold_runtime.codec"):
        got = env.h.run(lambda ctx: nodes.get(ctx, parentless), env.node.Node)
        env.h.run(lambda ctx: nodes.get(ctx, parentless), env.node.Node)
    assert got.name == parentless and got.title == "" and got.count == 0 and not got.labels and not got.by_number
    assert not got.HasField("child") and not got.kids  # a sub-message with a bad field is dropped whole
    warned = [r.getMessage() for r in caplog.records if parentless in r.getMessage()]
    assert len(warned) == 6, warned  # each unreadable field once, not once per read
    assert any("child.count" in w for w in warned)

    def listed(ctx):
        items, _ = nodes.list(ctx, 1000)
        return env.node.Page(nodes=items)
    names = [n.name for n in env.h.run(listed, env.node.Page).nodes]
    assert parentless in names and good.name in names


def test_nothing_in_the_store_surfaces_as_unknown(env, caplog):
    nodes = node_store(env)

    class Broken:  # a client whose calls fail in a way no one planned for
        def document(self, *_a, **_k):
            raise RuntimeError("secret internals /srv/app/x.py")

        collection = document

    nodes.client = Broken()
    for fn in (lambda ctx: nodes.get(ctx, "nodes/a"), lambda ctx: nodes.delete(ctx, "nodes/a"),
               lambda ctx: nodes.list(ctx) and None, lambda ctx: nodes.create(ctx, env.node.Node(title="t")),
               lambda ctx: nodes.update(ctx, env.node.Node(name="nodes/a", title="t"))):
        with caplog.at_level(logging.ERROR, logger="scaffold_runtime.store"):
            err = env.h.fails(fn)
        assert err.code() == grpc.StatusCode.INTERNAL and err.details() == "internal error"
    assert "RuntimeError" in caplog.text
