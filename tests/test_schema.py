"""How the view model reads the Books skeleton and real googleapis protos."""

import dataclasses

import pytest

from generator import protoc, schema


@pytest.fixture
def books_api(workspace, scaffold):
    assert scaffold("proto", "create", "xmpl.br.resources-books-v1").code == 0
    src = protoc.source_for([workspace / "proto/xmpl/br/resources/books/v1/books.proto"], [], (workspace / "proto",))
    return schema.build(protoc.descriptor_set(src), src.files)


def corpus_api(corpus, path):
    src = protoc.source_for([corpus / path], [corpus])
    return schema.build(protoc.descriptor_set(src), src.files)


def test_books_model(books_api):
    (f,) = books_api.files
    assert f.name == "xmpl/br/resources/books/v1/books.proto"
    assert f.package == "xmpl.br.resources.books.v1"
    assert f.python_module == "xmpl.br.resources.books.v1.books_pb2"
    assert f.grpc_module == "xmpl.br.resources.books.v1.books_pb2_grpc"
    (svc,) = f.services
    assert svc.name == "BooksService" and svc.servicer == "BooksServiceServicer"
    got = {m.name: (m.kind, m.standard.verb if m.standard else None) for m in svc.methods}
    assert got == {
        "GetBook": ("unary_unary", "get"),
        "ListBooks": ("unary_unary", "list"),
        "CreateBook": ("unary_unary", "create"),
        "UpdateBook": ("unary_unary", "update"),
        "DeleteBook": ("unary_unary", "delete"),
    }
    m = {m.name: m for m in svc.methods}
    assert m["GetBook"].http == schema.HttpRule("get", "/v1/{name=books/*}")
    assert m["CreateBook"].http.body == "book" and m["CreateBook"].signatures == ("book,book_id",)
    assert m["CreateBook"].standard.id_field == "book_id"
    assert m["CreateBook"].standard.resource_field == "book"
    assert m["ListBooks"].standard.items_field == "books" and m["ListBooks"].standard.parent_field == ""
    assert m["UpdateBook"].standard.mask_field == "update_mask"
    assert m["DeleteBook"].output_type == "google.protobuf.Empty"
    r = books_api.resources["books.br.xmpl/Book"]
    assert (r.pattern, r.singular, r.plural, r.collection_id, r.id_variable) == ("books/{book}", "book", "books", "books", "book")
    assert r.storable and r.message == "xmpl.br.resources.books.v1.Book"
    book = books_api.message("xmpl.br.resources.books.v1.Book")
    fields = {x.name: (x.type, x.behaviors) for x in book.fields}
    assert fields["name"] == ("string", ("OUTPUT_ONLY",))
    assert fields["display_name"] == ("string", ("REQUIRED",))
    assert fields["create_time"] == ("message", ("OUTPUT_ONLY",))
    assert book.field("create_time").type_name == "google.protobuf.Timestamp"


def test_model_is_frozen(books_api):
    with pytest.raises(dataclasses.FrozenInstanceError):
        books_api.files[0].services[0].name = "x"


def test_library_proto(corpus):
    api = corpus_api(corpus, "google/example/library/v1/library.proto")
    (svc,) = api.services
    assert svc.full_name == "google.example.library.v1.LibraryService"
    std = {m.name: m.standard for m in svc.methods}
    assert std["MergeShelves"] is None and std["MoveBook"] is None  # custom methods
    assert std["CreateBook"].parent_field == "parent" and std["CreateBook"].id_field == ""
    assert std["ListBooks"].resource.pattern == "shelves/{shelf}/books/{book}"
    assert std["ListBooks"].resource.parent_pattern == "shelves/{shelf}"
    assert std["UpdateBook"].verb == "update" and std["DeleteShelf"].verb == "delete"
    assert std["GetShelf"].resource.pattern == "shelves/{shelf_id}"
    move = next(m for m in svc.methods if m.name == "MoveBook")
    assert move.http == schema.HttpRule("post", "/v1/{name=shelves/*/books/*}:move", "*")


def test_pubsub_proto_streaming_and_maps(corpus):
    api = corpus_api(corpus, "google/pubsub/v1/pubsub.proto")
    kinds = {m.name: m.kind for s in api.services for m in s.methods}
    assert kinds["StreamingPull"] == "stream_stream"
    assert kinds["Publish"] == "unary_unary"
    assert {s.name for s in api.services} == {"Publisher", "Subscriber"}
    topic = api.message("google.pubsub.v1.Topic")
    labels = topic.field("labels")
    assert labels.is_map and labels.map_key == "string" and labels.map_value.type == "string"
    assert not labels.repeated
    assert api.resources["pubsub.googleapis.com/Topic"].pattern == "projects/{project}/topics/{topic}"


def test_secretmanager_oneof_and_enums(corpus):
    api = corpus_api(corpus, "google/cloud/secretmanager/v1/resources.proto")
    secret = api.message("google.cloud.secretmanager.v1.Secret")
    assert secret.field("expire_time").oneof == "expiration"
    assert "expiration" in secret.oneofs
    state = api.enums["google.cloud.secretmanager.v1.SecretVersion.State"]
    assert state.python_name == "SecretVersion.State" and ("ENABLED", 1) in state.values
