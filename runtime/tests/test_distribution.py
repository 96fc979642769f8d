"""scaffold-runtime as a distribution: the wheel neurons carry is reproducible and declares
what hatchling's build of runtime/ declares; every extra's imports are covered by its
declared dependencies; the wheel installs and imports in a fresh environment."""

from __future__ import annotations

import email
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from generator import runtime_dist

RUNTIME = Path(__file__).resolve().parent.parent


def _metadata(data: bytes) -> email.message.Message:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(name))


def _names(data: bytes) -> set[str]:
    import io

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n for n in zf.namelist() if "dist-info" not in n}


def test_the_wheel_is_reproducible():
    first = runtime_dist.wheel.__wrapped__()
    second = runtime_dist.wheel.__wrapped__()
    assert first.data == second.data and first.sha256 == second.sha256
    assert first.filename == f"scaffold_runtime-{first.version}-py3-none-any.whl"


def test_version_is_semver_and_in_the_changelog():
    version = runtime_dist.version()
    assert len(version.split(".")) == 3 and all(p.isdigit() for p in version.split("."))
    assert f"## {version}" in (RUNTIME / "CHANGELOG.md").read_text(encoding="utf-8")


def test_each_extra_declares_what_its_modules_import():
    """A module's third-party imports must come from the core or from its extra."""
    import ast

    w = runtime_dist.wheel()
    provides = {  # distribution -> top-level import names
        "grpcio": {"grpc"}, "grpcio-health-checking": {"grpc_health"}, "grpcio-reflection": {"grpc_reflection"},
        "protobuf": {"google.protobuf"}, "googleapis-common-protos": {"google.api", "google.rpc", "google.type", "google.longrunning"},
        "google-cloud-firestore": {"google.cloud.firestore", "google.cloud.firestore_v1", "google.api_core"},
        "uvicorn": {"uvicorn"}, "httptools": {"httptools"}, "uvloop": {"uvloop"}, "google-auth": {"google.auth", "google.oauth2"},
        "requests": {"requests"}, "pytest": {"pytest"}, "lark": {"lark"}, "h11": {"h11"},
        "opentelemetry-api": {"opentelemetry.trace", "opentelemetry.context"},
        "opentelemetry-sdk": {"opentelemetry.sdk"},
        "opentelemetry-exporter-gcp-trace": {"opentelemetry.exporter.cloud_trace"},
        "grpcio-status": {"grpc_status"},
    }
    extra_of = {"store": "firestore", "gateway": "gateway", "pytest_plugin": "testing", "filtering": "firestore",
                "batch": "firestore", "softdelete": "firestore", "operations": "firestore",
                "ordering": "firestore", "tracing": "tracing"}

    def allowed(extra: str | None) -> set[str]:
        reqs = list(w.core) + (list(w.extras[extra]) if extra else [])
        return {name for r in reqs for name in provides.get(runtime_dist.requirement_name(r), set())}

    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path in sorted((RUNTIME / "src" / "scaffold_runtime").glob("*.py")):
        extra = extra_of.get(path.stem)
        ok = allowed(extra) | (allowed("id-token") if path.stem in ("auth", "gateway") else set())
        if path.stem == "deps":  # deps.firestore: created on first use, only by neurons with the firestore extra
            ok |= allowed("firestore")
        if path.stem in ("dev", "testing"):  # neuron run / tests start the emulator next to a Firestore neuron
            ok |= allowed("firestore") | allowed("testing")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for mod in mods:
                top = mod.split(".")[0]
                if top in stdlib or top in ("scaffold_runtime", "server", "methods", "client"):
                    continue
                if not any(mod == p or mod.startswith(p + ".") for p in ok):
                    problems.append(f"{path.name}: imports {mod}, not declared for extra {extra or 'core'}")
    assert problems == []


@pytest.mark.slow
def test_matches_hatchling_and_installs_in_a_fresh_environment(tmp_path):
    out = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(RUNTIME)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (built,) = out.glob("scaffold_runtime-*.whl")
    ours = runtime_dist.wheel()
    theirs, mine = _metadata(built.read_bytes()), _metadata(ours.data)
    assert theirs["Version"] == mine["Version"] and theirs["Name"] == mine["Name"]
    assert sorted(theirs.get_all("Requires-Dist")) == sorted(mine.get_all("Requires-Dist"))
    assert sorted(theirs.get_all("Provides-Extra")) == sorted(mine.get_all("Provides-Extra"))
    assert _names(built.read_bytes()) == _names(ours.data)

    wheel = tmp_path / ours.filename
    wheel.write_bytes(ours.data)
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = str(env / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # Its dependencies from this environment's site-packages (PYTHONPATH skips .pth files, so the
    # editable scaffold_runtime of this checkout stays invisible): no package index needed.
    import sysconfig

    deps = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"}
    r = subprocess.run([py, "-c", "import scaffold_runtime, scaffold_runtime.store as s; print(scaffold_runtime.__version__, s.__file__)"],
                       capture_output=True, text=True, cwd=tmp_path, env=deps)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == ours.version and str(env) in r.stdout
