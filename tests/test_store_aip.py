"""ResourceStore against the real Firestore emulator, through a real gRPC server on 127.0.0.1.

Each test hands a closure (store call with the server's real ServicerContext) to a generic
in-process gRPC server and calls it over a socket, so status codes and details are exactly
what a client sees. Resources come from real googleapis protos (library.proto: shelves and
books; securitycenter v2 MuteConfig: six patterns under organizations/, folders/, projects/)
and one small proto of our own (maps, recursion, a REQUIRED name).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, field_mask_pb2

NODE_PROTO = '''syntax = "proto3";
package storetest.v1;
import "google/api/field_behavior.proto";
import "google/api/resource.proto";
import "google/protobuf/timestamp.proto";

message Node {
  option (google.api.resource) = {type: "storetest.example.com/Node" pattern: "nodes/{node}"};
  string name = 1 [(google.api.field_behavior) = REQUIRED];
  map<string, string> labels = 2;
  map<int32, string> by_number = 3;
  Node child = 4;
  string title = 5;
  google.protobuf.Timestamp create_time = 6 [(google.api.field_behavior) = OUTPUT_ONLY];
  map<string, Node> kids = 7;
  int64 count = 8;
}

message Page {
  repeated Node nodes = 1;
  string next_page_token = 2;
}
'''


class Harness:
    """A real gRPC server whose one method runs the closure the test registered."""

    def __init__(self) -> None:
        self.calls = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(self._call)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Store", {"Call": handler}),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = self.channel.unary_unary("/t.Store/Call")

    def _call(self, request: bytes, context) -> bytes:
        out = self.calls.pop(request.decode())(context)
        return (out if out is not None else empty_pb2.Empty()).SerializeToString()

    def run(self, fn, parse=None):
        """``fn(context)`` inside a real RPC; its message result, parsed as ``parse`` if given."""
        key = uuid.uuid4().hex
        self.calls[key] = fn
        raw = self.stub(key.encode(), timeout=60)
        return parse.FromString(raw) if parse is not None else raw

    def fails(self, fn) -> grpc.RpcError:
        """The RpcError ``fn(context)`` ends in (the test fails if it succeeds)."""
        with pytest.raises(grpc.RpcError) as info:
            self.run(fn)
        return info.value

    def close(self) -> None:
        self.channel.close()
        self.server.stop(None)


def _compile(out: Path, corpus: Path) -> None:
    from grpc_tools import protoc

    src = out / "src"
    for folder, source in (("st_library", corpus / "google/example/library/v1/library.proto"),
                           ("st_scc", corpus / "google/cloud/securitycenter/v2/mute_config.proto")):
        (src / folder).mkdir(parents=True)
        shutil.copy(source, src / folder / source.name)
    (src / "st_node").mkdir()
    (src / "st_node" / "node.proto").write_text(NODE_PROTO)
    include = Path(protoc.__file__).parent / "_proto"
    files = ["st_library/library.proto", "st_scc/mute_config.proto", "st_node/node.proto"]
    code = protoc.main(["protoc", f"-I{src}", f"-I{corpus}", f"-I{include}", f"--python_out={out}", *files])
    assert code == 0, "protoc failed"


@pytest.fixture(scope="module")
def env(tmp_path_factory, corpus, emulator):
    """(harness, firestore client, module namespace with store/codec/aip and the pb2 modules)."""
    out = tmp_path_factory.mktemp("storeprotos")
    _compile(out, corpus)
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    sys.path[:0] = [str(out)]
    from google.cloud import firestore

    ns = type("NS", (), {})()
    ns.store = importlib.import_module("scaffold_runtime.store")
    ns.store.TIMEOUT = 60.0  # a cold emulator on a loaded machine; these tests are not about timing
    ns.codec = importlib.import_module("scaffold_runtime.codec")
    ns.aip = importlib.import_module("scaffold_runtime.aip")
    ns.library = importlib.import_module("st_library.library_pb2")
    ns.scc = importlib.import_module("st_scc.mute_config_pb2")
    ns.node = importlib.import_module("st_node.node_pb2")
    ns.client = firestore.Client(project="demo-local")
    harness = Harness()
    ns.h = harness
    yield ns
    harness.close()
    sys.path.remove(str(out))
    ns.store.TIMEOUT = float(os.environ.get("FIRESTORE_TIMEOUT_SECONDS", "5"))
    if saved is None:
        os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
    else:
        os.environ["FIRESTORE_EMULATOR_HOST"] = saved


def uid(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def library_stores(ns):
    shelves = ns.store.ResourceStore(ns.client, ns.library.Shelf, "shelves/{shelf}")
    books = ns.store.ResourceStore(ns.client, ns.library.Book, "shelves/{shelf}/books/{book}", parent_store=shelves)
    return shelves, books


def node_store(ns, **kw):
    return ns.store.ResourceStore(ns.client, ns.node.Node, "nodes/{node}", **kw)


# -- issue 11.3: page tokens ---------------------------------------------------------------
def test_a_signed_token_whose_cursor_is_not_one_id_is_invalid_argument(env):
    nodes = node_store(env)
    for cursor in ("x/y", "", "__x__", "a:b", "..", "y" * 1600):
        token = env.aip.encode_page_token(cursor, "nodes")  # correctly signed with PAGE_TOKEN_KEY
        err = env.h.fails(lambda ctx, t=token: nodes.list(ctx, 10, t) and None)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (cursor, err.details())
        assert "page_token" in err.details()


# -- issue 11.11: echoes are truncated -------------------------------------------------------
def test_a_huge_invalid_name_is_invalid_argument_with_a_short_echo(env):
    shelves, books = library_stores(env)
    huge = "shelves/" + "x" * 4000 + "/nope"
    for fn in (lambda ctx: shelves.get(ctx, huge), lambda ctx: shelves.delete(ctx, huge),
               lambda ctx: books.list(ctx, parent=huge) and None,
               lambda ctx: books.create(ctx, env.library.Book(title="t"), parent=huge),
               lambda ctx: shelves.update(ctx, env.library.Shelf(name=huge)),
               lambda ctx: shelves.update(ctx, env.library.Shelf(name="shelves/a"),
                                          field_mask_pb2.FieldMask(paths=["q" * 4000]))):
        err = env.h.fails(fn)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert len(err.details()) < 400 and "…" in err.details()


# -- issue 12.1: ':' is never part of an id ------------------------------------------------
def test_names_with_a_colon_are_invalid(env):
    shelves, books = library_stores(env)
    for bad in ("shelves/a:b", "shelves/s:archive"):
        assert env.h.fails(lambda ctx, n=bad: shelves.get(ctx, n)).code() == grpc.StatusCode.INVALID_ARGUMENT
    err = env.h.fails(lambda ctx: books.list(ctx, parent="shelves/a:b") and None)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- issue 11.12: pages fit the client's 4 MiB -----------------------------------------------
def test_a_page_of_large_resources_stays_under_the_client_limit(env, monkeypatch):
    shelves, books = library_stores(env)
    shelf = env.h.run(lambda ctx: shelves.create(ctx, env.library.Shelf(theme="big")), env.library.Shelf)
    for i in range(6):
        env.h.run(lambda ctx, i=i: books.create(ctx, env.library.Book(title=f"{i}", author="a" * 900_000),
                                                parent=shelf.name))

    def page(token, size=10):
        def fn(ctx):
            items, nxt = books.list(ctx, size, token, parent=shelf.name)
            return env.library.ListBooksResponse(books=items, next_page_token=nxt)
        return env.h.run(fn, env.library.ListBooksResponse)  # the default client limit: 4 MiB

    seen, token, pages = [], "", 0
    while True:
        resp = page(token)
        pages += 1
        assert resp.ByteSize() <= 4 * 1024 * 1024
        seen += [b.title for b in resp.books]
        token = resp.next_page_token
        if not token:
            break
    assert sorted(seen) == [str(i) for i in range(6)] and pages == 2
    # A limit below one resource: each page still carries one resource, and nothing is lost.
    monkeypatch.setenv("GRPC_MAX_SEND_BYTES", str(200_000))
    first = page("")
    assert len(first.books) == 1 and first.next_page_token


# -- issue 11.17: parents of the same neuron ------------------------------------------------
def test_create_under_a_missing_parent_is_not_found(env):
    _shelves, books = library_stores(env)
    err = env.h.fails(lambda ctx: books.create(ctx, env.library.Book(title="t"), parent=f"shelves/{uid()}"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "parent" in err.details()
    orphan = env.store.ResourceStore(env.client, env.library.Book, "shelves/{shelf}/books/{book}")  # no parent store
    made = env.h.run(lambda ctx: orphan.create(ctx, env.library.Book(title="t"), parent=f"shelves/{uid()}"),
                     env.library.Book)
    assert made.name.startswith("shelves/")


def test_delete_of_a_parent_with_children_needs_force(env):
    shelves, books = library_stores(env)
    shelf = env.h.run(lambda ctx: shelves.create(ctx, env.library.Shelf(theme="kids")), env.library.Shelf)
    made = [env.h.run(lambda ctx, i=i: books.create(ctx, env.library.Book(title=str(i)), parent=shelf.name), env.library.Book)
            for i in range(3)]
    # a grandchild in another collection (not a store of this neuron) goes too
    env.client.document(made[0].name + "/notes/n1").create({"text": "x"})
    err = env.h.fails(lambda ctx: shelves.delete(ctx, shelf.name))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "force" in err.details()
    assert env.h.run(lambda ctx: books.get(ctx, made[1].name), env.library.Book) == made[1]
    env.h.run(lambda ctx: shelves.delete(ctx, shelf.name, force=True))
    for b in made:
        assert env.h.fails(lambda ctx, n=b.name: books.get(ctx, n)).code() == grpc.StatusCode.NOT_FOUND
    assert not env.client.document(made[0].name + "/notes/n1").get().exists
    assert env.h.fails(lambda ctx: shelves.get(ctx, shelf.name)).code() == grpc.StatusCode.NOT_FOUND
    # an empty shelf deletes without force
    empty = env.h.run(lambda ctx: shelves.create(ctx, env.library.Shelf(theme="e")), env.library.Shelf)
    env.h.run(lambda ctx: shelves.delete(ctx, empty.name))
    assert env.h.fails(lambda ctx: shelves.delete(ctx, empty.name)).code() == grpc.StatusCode.NOT_FOUND


def test_force_delete_works_in_batches(env, monkeypatch):
    shelves, books = library_stores(env)
    monkeypatch.setattr(env.store, "DELETE_BATCH", 2)
    shelf = env.h.run(lambda ctx: shelves.create(ctx, env.library.Shelf(theme="many")), env.library.Shelf)
    for i in range(5):
        env.h.run(lambda ctx, i=i: books.create(ctx, env.library.Book(title=str(i)), parent=shelf.name))
    env.h.run(lambda ctx: shelves.delete(ctx, shelf.name, force=True))
    assert not list(env.client.collection(shelf.name + "/books").list_documents())


# -- issue 12.3: a REQUIRED name on Create without an id field ------------------------------
def test_create_honours_a_valid_client_name_and_generates_otherwise(env):
    nodes = node_store(env)
    mine = f"nodes/{uid('n')}"
    made = env.h.run(lambda ctx: nodes.create(ctx, env.node.Node(name=mine, title="a")), env.node.Node)
    assert made.name == mine
    assert env.h.run(lambda ctx: nodes.get(ctx, mine), env.node.Node) == made
    for other in ("", "elsewhere/x", "nodes/a/b", "nodes/__x__", "nodes/a:b"):
        got = env.h.run(lambda ctx, o=other: nodes.create(ctx, env.node.Node(name=o, title="b")), env.node.Node)
        assert got.name.startswith("nodes/") and got.name != other and nodes.matches(got.name)
    again = env.h.fails(lambda ctx: nodes.create(ctx, env.node.Node(name=mine, title="c")))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS


# -- issue 12.4: every pattern ------------------------------------------------------------
def test_every_pattern_of_a_multi_pattern_resource_works(env):
    mute = env.scc.MuteConfig
    patterns = [p for p in mute.DESCRIPTOR.GetOptions().Extensions[_resource_ext()].pattern]
    assert len(patterns) == 6
    store = env.store.ResourceStore(env.client, mute, patterns)
    parents = ["organizations/o1", "folders/f1", "projects/p1", "organizations/o1/locations/global",
               "folders/f1/locations/eu", "projects/p1/locations/us"]
    made = {}
    for parent in parents:
        created = env.h.run(lambda ctx, p=parent: store.create(ctx, mute(description=p, filter="x", type=env.scc.MuteConfig.STATIC), parent=p), mute)
        assert created.name.startswith(parent + "/muteConfigs/")
        made[parent] = created
        assert env.h.run(lambda ctx, n=created.name: store.get(ctx, n), mute) == created
    for parent in parents:
        def fn(ctx, p=parent):
            items, _ = store.list(ctx, 10, parent=p)
            return env.library.ListShelvesResponse(next_page_token="|".join(i.description for i in items))
        assert env.h.run(fn, env.library.ListShelvesResponse).next_page_token == parent
    for bad in ("billingAccounts/b1", "projects/p1/zones/z", "projects/p:1"):
        err = env.h.fails(lambda ctx, b=bad: store.list(ctx, parent=b) and None)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "folders/{folder}" in err.details()
    updated = env.h.run(lambda ctx: store.update(ctx, mute(name=made["folders/f1/locations/eu"].name, description="new"),
                                                 field_mask_pb2.FieldMask(paths=["description"])), mute)
    assert updated.description == "new"
    env.h.run(lambda ctx: store.delete(ctx, made["projects/p1"].name))
    assert env.h.fails(lambda ctx: store.get(ctx, made["projects/p1"].name)).code() == grpc.StatusCode.NOT_FOUND


def _resource_ext():
    from google.api import resource_pb2

    return resource_pb2.resource


# -- issue 12.16: update masks with map keys ----------------------------------------------
def test_update_mask_sets_and_deletes_single_map_keys(env):
    nodes = node_store(env)
    made = env.h.run(lambda ctx: nodes.create(ctx, env.node.Node(title="m", labels={"lang": "en", "keep": "k", "a.b": "1"},
                                                                 by_number={1: "one", 2: "two"})), env.node.Node)

    def update(paths, **fields):
        return env.h.run(lambda ctx: nodes.update(ctx, env.node.Node(name=made.name, **fields),
                                                  field_mask_pb2.FieldMask(paths=paths)), env.node.Node)

    got = update(["labels.lang", "labels.gone", "by_number.2", "labels.`a.b`", "labels.new"],
                 labels={"lang": "fr", "new": "n", "other": "ignored"}, by_number={1: "x"})
    assert dict(got.labels) == {"lang": "fr", "keep": "k", "new": "n"}
    assert dict(got.by_number) == {1: "one"}
    assert env.h.run(lambda ctx: nodes.get(ctx, made.name), env.node.Node) == got
    for bad in (["labels.lang.x"], ["by_number.notanumber"], ["kids.a.title"], ["labels..x"]):
        err = env.h.fails(lambda ctx, b=bad: nodes.update(ctx, env.node.Node(name=made.name),
                                                          field_mask_pb2.FieldMask(paths=b)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "update_mask" in err.details()
