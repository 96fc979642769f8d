"""How the view model reads the Books skeleton and real googleapis protos."""

import dataclasses

import pytest

from generator import model, protoc, schema


@pytest.fixture
def books_api(workspace, scaffold):
    assert scaffold("proto", "create", "xmpl.br.resources-books-v1").code == 0
    src = protoc.source_for([workspace / "proto/xmpl/br/resources/books/v1/books.proto"], [], (workspace / "proto",))
    return model.build(protoc.descriptor_set(src), src.files)


def corpus_api(corpus, path):
    src = protoc.source_for([corpus / path], [corpus])
    return model.build(protoc.descriptor_set(src), src.files)


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


def standard_methods(api):
    return {m.name: m.standard for s in api.services for m in s.methods}


def test_reference_fields_not_called_name_are_standard(corpus):
    """GetTopic binds {topic=projects/*/topics/*}; ListTopics binds {project=projects/*}."""
    std = standard_methods(corpus_api(corpus, "google/pubsub/v1/pubsub.proto"))
    assert (std["GetTopic"].verb, std["GetTopic"].name_field) == ("get", "topic")
    assert std["GetTopic"].resource.type == "pubsub.googleapis.com/Topic"
    assert (std["DeleteSubscription"].verb, std["DeleteSubscription"].name_field) == ("delete", "subscription")
    assert (std["ListTopics"].verb, std["ListTopics"].parent_field, std["ListTopics"].items_field) == ("list", "project", "topics")
    assert (std["UpdateTopic"].resource_field, std["UpdateTopic"].mask_field) == ("topic", "update_mask")
    # CreateTopic is PUT with the Topic itself as the request: not AIP-133's shape.
    assert std["CreateTopic"] is None and std["Publish"] is None


def test_bindings_on_other_fields_are_custom(corpus):
    """Cloud Build keys Get/List on /v1/projects/{project_id}/builds/{id}: not a name-based Get."""
    std = standard_methods(corpus_api(corpus, "google/devtools/cloudbuild/v1/cloudbuild.proto"))
    for name in ("GetBuild", "ListBuilds", "CreateBuild", "GetBuildTrigger", "DeleteBuildTrigger", "UpdateBuildTrigger"):
        assert std[name] is None, name
    why = aip_why(corpus, "google/devtools/cloudbuild/v1/cloudbuild.proto", "GetBuild")
    assert why == "its HTTP path binds project_id, id, not one resource name"


def aip_why(corpus, path, method):
    from generator import aip

    api = corpus_api(corpus, path)
    m = next(m for s in api.services for m in s.methods if m.name == method)
    return aip.Classifier(api.messages, api.resources).classify(m).why


def test_long_running_soft_delete_and_options_are_recorded(corpus):
    std = standard_methods(corpus_api(corpus, "google/cloud/run/v2/service.proto"))
    assert std["CreateService"].long_running and std["CreateService"].parent_field == "parent"
    assert std["CreateService"].id_field == "service_id"
    assert std["UpdateService"].long_running and std["UpdateService"].allow_missing_field == "allow_missing"
    delete = std["DeleteService"]  # returns Operation with response_type Service: soft delete, AIP-164
    assert delete.long_running and delete.soft_delete and delete.etag_field == "etag"
    lst = standard_methods(corpus_api(corpus, "google/cloud/secretmanager/v1/service.proto"))["ListSecrets"]
    assert (lst.filter_field, lst.parent_field) == ("filter", "parent")
    tasks = standard_methods(corpus_api(corpus, "google/cloud/tasks/v2/cloudtasks.proto"))
    assert tasks["ListQueues"].filter_field == "filter" and tasks["ListQueues"].order_by_field == ""


def test_custom_verbs_and_wrong_http_methods_are_custom(corpus):
    std = standard_methods(corpus_api(corpus, "google/cloud/bigquery/storage/v1/storage.proto"))
    assert std["GetWriteStream"] is None  # POST, not GET
    assert aip_why(corpus, "google/cloud/bigquery/storage/v1/storage.proto", "GetWriteStream") == \
        "it is bound to HTTP POST, not GET"
    assert aip_why(corpus, "google/cloud/tasks/v2/cloudtasks.proto", "GetIamPolicy") == \
        "its HTTP path ends in a custom verb (:getIamPolicy)"


def test_http_path_helpers():
    from generator import aip

    assert aip.path_variables("/v1/{name=shelves/*/books/*}:move") == (("name", "shelves/*/books/*"),)
    assert aip.path_variables("/v1/projects/{project_id}/builds/{id}") == (("project_id", "*"), ("id", "*"))
    assert aip.custom_verb("/v1/{name=shelves/*/books/*}:move") == "move"
    assert aip.custom_verb("/v1/{name=shelves/*}") == "" and aip.custom_verb("/v1/{book.name=a/*}") == ""


def test_undelete_and_batch_methods_are_classified(corpus):
    keys = standard_methods(corpus_api(corpus, "google/api/apikeys/v2/apikeys.proto"))
    assert keys["UndeleteKey"].verb == "undelete" and keys["UndeleteKey"].long_running
    teams = standard_methods(corpus_api(corpus, "google/ads/admanager/v1/team_service.proto"))
    create = teams["BatchCreateTeams"]
    assert (create.verb, create.requests_field, create.items_field, create.parent_field) == (
        "batch_create", "requests", "teams", "parent")
    assert teams["BatchUpdateTeams"].mask_field == "update_mask"
    assert teams["BatchActivateTeams"] is None  # a custom batch verb stays the user's
