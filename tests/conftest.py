"""Shared fixtures: a CLI runner, workspaces, and the googleapis proto corpus."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from generator import cli

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the slow tier (fuzzing, kills, load, wheel builds, the real-proto corpus)")


# The slow tier (`--slow`; CI runs it), by file, by test or by test id prefix: fuzzing, kills,
# outages and load, wheel builds, the real-proto corpus.
SLOW = ("test_fuzz.py", "test_cli_kill.py", "test_wheel.py", "test_reliability.py::test_database_outage",
        "test_reliability.py::test_bounded_load", "test_reliability.py::test_sigterm_during_load")
# Also slow: end-to-end paths the default tier already runs once (issue 13: the default tier in
# under 5 minutes). Each line names the default-tier test that keeps the behaviour.
SLOW += (
    # A googleapis neuron passes its own tests and lists its services: pubsub (two services) stays.
    "test_neuron.py::test_googleapis_neurons_pass_their_own_tests[google/example/",
    "test_neuron.py::test_googleapis_neurons_pass_their_own_tests[google/cloud/secretmanager/",
    # The generated books / translator neurons pass their own tests: test_golden.py runs both
    # (the same generation, byte-checked); reflection listing stays in the pubsub test above.
    "test_neuron.py::test_generated_books_neuron_passes_its_own_tests",
    "test_neuron.py::test_generated_services_neuron_passes_its_own_tests",
    # Real protos serving the patterns they declare: datapolicies stays, and
    # test_own_proto_neuron_serves_every_pattern covers every pattern.
    "test_aip_patterns.py::test_googleapis_neurons_serve_the_patterns_they_declare[google/cloud/saasplatform/",
    "test_aip_patterns.py::test_googleapis_neurons_serve_the_patterns_they_declare[google/cloud/video/",
    # The examples' own suites: books stays (test_depend.py covers neuron-to-neuron calls).
    "test_examples.py::test_example_passes_its_own_tests[teaclave-",
    "test_examples.py::test_example_passes_its_own_tests[translator-",
    # terraform fmt, hadolint, checkov and ruff on the examples: the default tier runs each on
    # freshly generated neurons (test_terraform.py: checkov and fmt on a books workspace with
    # its product Terraform; test_depend.py: on two wired neurons; test_neuron.py: hadolint, ruff).
    "test_examples.py::test_example_passes_the_offline_deploy_checks",
    # schemathesis against a live gateway: test_gateway.py's books run stays.
    "test_gateway.py::test_schemathesis_on_library",
    "test_gateway_hostile.py::test_schemathesis_finds_no_server_errors",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        file, sep, rest = item.nodeid.partition("::")
        where = file.rsplit("/", 1)[-1] + sep + rest  # test ids may hold "/" (proto paths)
        if any(where.startswith(s) for s in SLOW):
            item.add_marker(pytest.mark.slow)
    if config.getoption("--slow") or os.environ.get("SCAFFOLD_SLOW", "").lower() in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="slow tier: run with --slow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def need(condition: bool, what: str) -> None:
    """Skip when a real dependency is missing; under CI a missing dependency fails the test."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is missing under CI: .ci/run must install it")
    pytest.skip(f"{what} is not available (run the README's test command to install it)")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


@pytest.fixture
def scaffold(capsys, monkeypatch):
    """Run ``scaffold ARGS`` in-process from folder ``cwd``; return code, stdout, stderr."""

    def invoke(*args: str, cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = cli.run(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture
def workspace(tmp_path, scaffold):
    """An initialised xmpl/br workspace; the current folder is its root."""
    root = tmp_path / "ws"
    result = scaffold("init", str(root), "--org", "xmpl", "--product", "br", cwd=tmp_path)
    assert result.code == 0, result.output
    os.chdir(root)
    return root


def corpus_root() -> Path | None:
    """npm google-proto-files: every googleapis proto (installed by the test command)."""
    env = os.environ.get("SCAFFOLD_PROTO_CORPUS")
    candidates = [Path(env)] if env else []
    candidates.append(REPO / ".cache" / "node_modules" / "google-proto-files")
    for c in candidates:
        if (c / "google" / "example" / "library" / "v1" / "library.proto").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def corpus() -> Path:
    root = corpus_root()
    need(root is not None, "npm package google-proto-files (the googleapis corpus)")
    return root


def _neuron_testing():
    """scaffold-runtime's emulator helpers (the same every neuron's tests use)."""
    from scaffold_runtime import testing

    return testing


@pytest.fixture(scope="session")
def emulator():
    """The real Firestore emulator on a free 127.0.0.1 port (own process group)."""
    testing = _neuron_testing()
    need(testing.emulator_command() is not None, "the Firestore emulator (gcloud's cloud-firestore-emulator)")
    with testing.firestore_emulator() as emu:
        yield emu


def run_neuron_tests(root: Path, *args: str, emulator=None):
    """A generated neuron's own test suite, run the way a user runs it (pytest in its folder).

    With ``emulator`` (the session's), the suite uses it instead of starting its own, under a
    project id of its own so runs never see each other's data.
    """
    import subprocess
    import sys
    import uuid

    env = {k: v for k, v in os.environ.items() if k not in ("FIRESTORE_EMULATOR_HOST", "PYTHONPATH", "GOOGLE_CLOUD_PROJECT")}
    if emulator is not None:
        env["FIRESTORE_EMULATOR_HOST"] = emulator.host
        env["GOOGLE_CLOUD_PROJECT"] = f"demo-{uuid.uuid4().hex[:12]}"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
