"""Versions a generated neuron pins in requirements.txt.

grpcio packages are pinned to the grpcio-tools that generated the stubs and protobuf to the
runtime that grpcio-tools generates for, so generated code and runtime always match.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

PYTHON_IMAGE = "python:3.11-slim"
# Used when the package is not installed next to scaffold (only its [runtime] extra has it).
FALLBACK = {
    "google-cloud-firestore": "2.34.1",
}


def _installed(dist: str) -> str | None:
    """The installed version, from the ``NAME-VERSION.dist-info`` folder on sys.path.
    (``importlib.metadata`` would cost ~20 ms of imports on every ``neuron create``.)
    """
    return _dist_versions().get(re.sub(r"[-_.]+", "_", dist).lower())


@functools.cache
def _dist_versions() -> dict[str, str]:
    """Normalised name -> version of every dist-info folder on sys.path, the first one found
    winning; scanned once per process instead of once per package."""
    found: dict[str, str] = {}
    for entry in sys.path:
        folder = Path(entry or ".")
        if not folder.is_dir():
            continue
        for info in folder.glob("*.dist-info"):
            name, _, version = info.name[: -len(".dist-info")].partition("-")
            found.setdefault(re.sub(r"[-_.]+", "_", name).lower(), version)
    return found


def installed() -> tuple[tuple[str, str], ...]:
    """Every distribution found on sys.path with its version, sorted: what the pins can come from."""
    return tuple(sorted(_dist_versions().items()))


FALLBACK.update({"uvicorn": "0.54.0", "httptools": "0.9.0", "uvloop": "0.23.0", "pytest": "8.4.2", "lark": "1.3.1", "h11": "0.16.0",
                 "grpcio-status": "1.85.1"})
FALLBACK.update({"opentelemetry-api": "1.45.2", "opentelemetry-sdk": "1.45.2", "opentelemetry-exporter-gcp-trace": "1.15.0"})
# Stubs and the gRPC runtime must match the grpcio-tools that generated them.
_TOOLS_PINNED = ("grpcio", "grpcio-health-checking", "grpcio-reflection", "grpcio-status")


def extras(uses_firestore: bool, gateway: bool = False) -> tuple[str, ...]:
    """The scaffold-runtime extras a neuron needs. ``id-token`` and ``tracing`` always: AUTH_MODE
    and TRACING are deploy-time choices (tracing costs one check per call while off)."""
    return tuple(e for e, on in (("firestore", uses_firestore), ("gateway", gateway), ("id-token", True),
                                 ("tracing", True)) if on)


def requirements(uses_firestore: bool, gateway: bool = False) -> list[tuple[str, str]]:
    """Exact pins for every dependency scaffold-runtime declares for the neuron's extras.

    Derived from the runtime's own metadata, so a neuron cannot miss what an extra needs.
    """
    from generator.runtime_dist import requirement_name, wheel

    w = wheel()
    names: list[str] = []
    for req in (*w.core, *(r for e in extras(uses_firestore, gateway) for r in w.extras[e])):
        name = requirement_name(req)
        if name not in names:
            names.append(name)
    tools = _installed("grpcio-tools")
    out = []
    for name in names:
        version = tools if name in _TOOLS_PINNED else (_installed(name) or FALLBACK.get(name))
        if version:
            out.append((name, version))
    return out
