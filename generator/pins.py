"""Versions a generated neuron pins in requirements.txt.

grpcio packages are pinned to the grpcio-tools that generated the stubs and protobuf to the
runtime that grpcio-tools generates for, so generated code and runtime always match.
"""

from __future__ import annotations

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
    wanted = re.sub(r"[-_.]+", "_", dist).lower()
    for entry in sys.path:
        folder = Path(entry or ".")
        if not folder.is_dir():
            continue
        for info in folder.glob("*.dist-info"):
            name, _, version = info.name[: -len(".dist-info")].partition("-")
            if re.sub(r"[-_.]+", "_", name).lower() == wanted:
                return version
    return None


FALLBACK.update({"starlette": "1.10.0", "uvicorn": "0.54.0", "lark": "1.3.1"})


def requirements(uses_firestore: bool, gateway: bool = False) -> list[tuple[str, str]]:
    tools = _installed("grpcio-tools")
    pins = [
        ("grpcio", tools),
        ("grpcio-health-checking", tools),
        ("grpcio-reflection", tools),
        ("protobuf", _installed("protobuf")),
        ("googleapis-common-protos", _installed("googleapis-common-protos")),
        # AUTH_MODE=id-token verifies Google-signed tokens with google-auth over requests.
        ("google-auth", _installed("google-auth")),
        ("requests", _installed("requests")),
    ]
    if gateway:  # gateway.py: the HTTP/JSON gateway
        pins += [(d, _installed(d) or FALLBACK[d]) for d in ("starlette", "uvicorn")]
    if uses_firestore:
        pins.append(("google-cloud-firestore", _installed("google-cloud-firestore") or FALLBACK["google-cloud-firestore"]))
        pins.append(("lark", _installed("lark") or FALLBACK["lark"]))  # runtime/filtering.py: AIP-160 grammar
    return [(name, version) for name, version in pins if version]
