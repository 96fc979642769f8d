"""Golden files pin each kind of generated neuron (resources, services, nested, streaming,
several services in one file) and the proto skeletons byte for byte; every golden neuron also
passes its own tests.

Refresh after an intended template change with:
    SCAFFOLD_UPDATE_GOLDENS=1 .venv/bin/python -m pytest tests/test_golden.py
then review the diff in git like any other change.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_neuron_tests

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SCAFFOLD_UPDATE_GOLDENS") == "1"


# What a golden pins: the files scaffold renders. protoc's stubs (protobuf/) are grpcio-tools'
# output, the runtime wheel is checked by runtime/tests, and scaffold-neuron.toml holds hashes of
# the rest; leaving them out keeps each golden small enough to review.
UNPINNED = ("protobuf/", "wheels/", "scaffold-neuron.toml")
PROTOS = Path(__file__).parent / "protos" / "golden"
KINDS = {  # golden folder -> how the neuron is made
    "neuron-resources-books-v1": ("name", "xmpl.br.resources-books-v1"),
    "neuron-services-translator-v1": ("name", "xmpl.br.services-translator-v1"),
    "neuron-nested": ("proto", "nested/v1/nested.proto"),
    "neuron-streaming": ("proto", "streaming/v1/streaming.proto"),
    "neuron-multi": ("proto", "multi/v1/multi.proto"),
}


def _pinned(rel: str, data: bytes) -> bytes:
    """The runtime wheel's sha256 changes with every runtime edit: goldens hold a placeholder
    (test_requirements_pin_the_carried_wheel checks the real value)."""
    if rel == "requirements-runtime.txt":
        return re.sub(rb"sha256:[0-9a-f]{64}", b"sha256:<scaffold-runtime wheel>", data)
    return data


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        rel: _pinned(rel, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts
        and not (rel := p.relative_to(root).as_posix()).startswith(UNPINNED)
    }


def check(name: str, produced: Path) -> None:
    golden = GOLDEN / name
    got = snapshot(produced)
    if UPDATE:
        shutil.rmtree(golden, ignore_errors=True)
        for rel, data in got.items():
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden / rel).write_bytes(data)
        return
    assert golden.is_dir(), f"no golden files for {name}: run with SCAFFOLD_UPDATE_GOLDENS=1"
    want = snapshot(golden)
    assert sorted(got) == sorted(want), "files differ from the goldens"
    for rel in want:
        assert got[rel] == want[rel], f"{name}/{rel} differs from its golden file (SCAFFOLD_UPDATE_GOLDENS=1 refreshes)"


def make(kind: str, workspace: Path, scaffold) -> Path:
    how, what = KINDS[kind]
    if how == "name":
        assert scaffold("proto", "create", what).code == 0
        r = scaffold("neuron", "create", what)
    else:
        r = scaffold("neuron", "create", "--proto", str(PROTOS / what), "-I", str(PROTOS), "--out", kind.removeprefix("neuron-"))
    assert r.code == 0, r.output
    return next(p.parent for p in (workspace / "neurons").glob("*/server.py"))


def test_books_proto_skeleton(workspace, scaffold):
    assert scaffold("proto", "create", "xmpl.br.resources-books-v1").code == 0
    check("proto-resources-books", workspace / "proto/xmpl/br/resources/books/v1")


def test_translator_proto_skeleton(workspace, scaffold):
    assert scaffold("proto", "create", "xmpl.br.services-translator-v1").code == 0
    check("proto-services-translator", workspace / "proto/xmpl/br/services/translator/v1")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_neuron_golden(kind, workspace, scaffold, emulator):
    """Each kind of neuron, byte for byte; then its own tests pass (the golden also runs)."""
    root = make(kind, workspace, scaffold)
    check(kind, root)
    if UPDATE:
        return
    r = run_neuron_tests(root, emulator=emulator)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
    assert " passed" in r.stdout and " failed" not in r.stdout


@pytest.mark.skipif(UPDATE, reason="refreshing goldens")
def test_goldens_cover_every_template():
    """A template added without a golden that exercises it fails here."""
    root = Path(__file__).parent.parent / "templates" / "neuron"
    rendered = {p.name.removesuffix(".j2") for p in root.rglob("*") if p.is_file() and not p.name.startswith("_")}
    golden = {p.name for kind in KINDS for p in (GOLDEN / kind).rglob("*") if p.is_file()}
    # deps_clients.py exists only with `neuron depend` (two neurons): tests/test_depend.py covers it.
    # requirements-stubs.txt exists only with --stubs released: tests/test_release_neuron.py covers it.
    exempt = ("test_service.py", "test_contract.py", "dockerignore", "deps_clients.py", "requirements-stubs.txt")
    missing = {n for n in rendered if n not in golden and n not in exempt}
    assert not missing, missing


def test_requirements_pin_the_carried_wheel(workspace, scaffold):
    from generator.runtime_dist import wheel

    root = make("neuron-multi", workspace, scaffold)
    w = wheel()
    assert f"--hash=sha256:{w.sha256}" in (root / "requirements-runtime.txt").read_text()
    assert (root / "wheels" / w.filename).read_bytes() == w.data


def test_a_caller_cancelling_a_server_stream_is_logged_as_cancelled(workspace, scaffold):
    """Hostile or just impatient callers: a cancelled server stream ended as UNKNOWN, logged at
    ERROR with a traceback (the stream's generator is closed with GeneratorExit), so cancelling
    streams filled the error log. It is CANCELLED, one warning line."""
    import time

    import grpc

    from tests.helpers import ServerProcess, import_stubs

    root = make("neuron-streaming", workspace, scaffold)
    methods = root / "methods.py"
    methods.write_text(methods.read_text().replace(
        '        # TODO: implement WatchTicks.\n        context.abort(grpc.StatusCode.UNIMPLEMENTED, "WatchTicks is not implemented yet")',
        "        import time\n\n        while True:\n            yield streaming_pb2.TickResponse(id=request.id)\n            time.sleep(0.01)",
    ))
    pb = import_stubs(root, "streaming.v1.streaming_pb2")
    pb_grpc = import_stubs(root, "streaming.v1.streaming_pb2_grpc")
    server = ServerProcess(root)
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.TickServiceStub(ch)
            for _ in range(3):
                call = stub.WatchTicks(pb.TickRequest(id="t"), timeout=10)
                assert next(call).id == "t"
                call.cancel()
            for _ in range(2):  # and a stream its deadline ends is DEADLINE_EXCEEDED, not CANCELLED
                with pytest.raises(grpc.RpcError) as err:
                    for _tick in stub.WatchTicks(pb.TickRequest(id="t"), timeout=0.3):
                        pass
                assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.5)  # the server notices at its next message
    finally:
        out = server.stop()
    assert server.proc.returncode == 0, out
    ends = [line for line in out.splitlines() if "WatchTicks" in line]
    codes = sorted(e.split('"grpc.code": "')[1].split('"')[0] for e in ends)
    assert codes == ["CANCELLED"] * 3 + ["DEADLINE_EXCEEDED"] * 2, out
    assert all('"severity": "WARNING"' in e for e in ends), out
    assert "Traceback" not in out and "UNKNOWN" not in out, out
