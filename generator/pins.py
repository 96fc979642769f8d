"""Versions a generated neuron pins in requirements.txt.

grpcio packages are pinned to the grpcio-tools that generated the stubs and protobuf to the
runtime that grpcio-tools generates for, so generated code and runtime always match.
"""

from __future__ import annotations

from importlib import metadata

PYTHON_IMAGE = "python:3.11-slim"
# Used when the package is not installed next to scaffold (only its [runtime] extra has it).
FALLBACK = {
    "google-cloud-firestore": "2.34.1",
}


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def requirements(uses_firestore: bool) -> list[tuple[str, str]]:
    tools = _installed("grpcio-tools")
    pins = [
        ("grpcio", tools),
        ("grpcio-health-checking", tools),
        ("grpcio-reflection", tools),
        ("protobuf", _installed("protobuf")),
        ("googleapis-common-protos", _installed("googleapis-common-protos")),
    ]
    if uses_firestore:
        pins.append(("google-cloud-firestore", _installed("google-cloud-firestore") or FALLBACK["google-cloud-firestore"]))
    return [(name, version) for name, version in pins if version]
