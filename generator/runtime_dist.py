"""The scaffold-runtime wheel neurons carry, built from the runtime source scaffold ships.

The wheel is made here, byte for byte reproducibly (sorted entries, fixed timestamps), so the
same runtime source always gives the same sha256: a neuron's hash pin only changes when the
runtime does. Metadata (name, version, dependencies per extra) comes from the runtime's own
``pyproject.toml`` and ``__init__.__version__``, so this wheel and one built by hatchling from
``runtime/`` declare the same things (a test compares them).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from generator.errors import ToolError

DIST = "scaffold-runtime"
PACKAGE = "scaffold_runtime"
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class RuntimeWheel:
    version: str
    filename: str
    data: bytes
    sha256: str
    core: tuple[str, ...]  # Requires-Dist of the core, e.g. "grpcio>=1.62"
    extras: dict  # extra -> tuple of requirement strings

    def requirement(self, extras: tuple[str, ...]) -> str:
        """``scaffold-runtime[a,b]==X.Y.Z`` for a requirements file."""
        suffix = f"[{','.join(sorted(extras))}]" if extras else ""
        return f"{DIST}{suffix}=={self.version}"


def source_root() -> Path:
    """The runtime project folder: inside an installed scaffold, or the repository's ``runtime/``."""
    here = Path(__file__).resolve().parent
    for root in (here / "_runtime", here.parent / "runtime"):
        if (root / "pyproject.toml").is_file() and (root / "src" / PACKAGE / "__init__.py").is_file():
            return root
    raise ToolError("scaffold-runtime's source is missing from this scaffold install",
                    hint="reinstall scaffold: pip install --force-reinstall scaffold")


def version() -> str:
    text = (source_root() / "src" / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if not match:
        raise ToolError("scaffold-runtime's __init__.py has no __version__")
    return match.group(1)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _metadata(ver: str, core: list[str], extras: dict[str, list[str]], summary: str) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {DIST}", f"Version: {ver}", f"Summary: {summary}",
             "License: Apache-2.0", "Requires-Python: >=3.11"]
    lines += [f"Requires-Dist: {r}" for r in core]
    for extra, reqs in extras.items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f"Requires-Dist: {r}; extra == '{extra}'" for r in reqs]
    return "\n".join(lines) + "\n"


@functools.cache
def wheel() -> RuntimeWheel:
    """Build (once per process) the runtime wheel from the shipped source; the zip itself is
    reused from the user cache when the same content was built before."""
    import tomllib

    root = source_root()
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    ver = version()
    core = list(project.get("dependencies", []))
    extras = {k: list(v) for k, v in sorted(project.get("optional-dependencies", {}).items())}
    files: list[tuple[str, bytes]] = []
    pkg = root / "src" / PACKAGE
    for path in sorted(pkg.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed", ".json"):
            files.append((f"{PACKAGE}/{path.relative_to(pkg).as_posix()}", path.read_bytes()))
    info = f"{PACKAGE}-{ver}.dist-info"
    files.append((f"{info}/METADATA", _metadata(ver, core, extras, project.get("description", "")).encode()))
    files.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: scaffold\nRoot-Is-Purelib: true\nTag: py3-none-any\n"))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files) + f"{info}/RECORD,,\n"
    files.append((f"{info}/RECORD", record.encode()))
    # RECORD hashes every file, so it names the wheel's content: reuse a wheel built before.
    key = hashlib.sha256(record.encode()).hexdigest()
    data = _cached(key)
    if data is None:
        data = _zip(files)
        _store(key, data)
    return RuntimeWheel(
        version=ver,
        filename=f"{PACKAGE}-{ver}-py3-none-any.whl",
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        core=tuple(core),
        extras={k: tuple(v) for k, v in extras.items()},
    )


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    """The wheel's bytes: entries in the given order, fixed timestamps and modes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            entry = zipfile.ZipInfo(name, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    return buf.getvalue()


def _cache_dir() -> Path:
    """Built wheels, per user (as render.py caches compiled templates): ~/.cache/scaffold/runtime."""
    from generator import usercache

    return usercache.directory("runtime")


def _cached(key: str) -> bytes | None:
    """The wheel built before from the content ``key`` names, or None. Its file name carries
    the wheel's own sha256, checked on reading, so a damaged file is never used."""
    try:
        for path in _cache_dir().glob(f"{key}-*.whl"):
            data = path.read_bytes()
            if path.stem == f"{key}-{hashlib.sha256(data).hexdigest()}":
                return data
    except OSError:
        pass
    return None


def _store(key: str, data: bytes) -> None:
    """Keep ``data`` for the next run (atomically); a cache that cannot be written is skipped."""
    folder = _cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, folder / f"{key}-{hashlib.sha256(data).hexdigest()}.whl")
    except OSError:
        pass


def requirement_name(req: str) -> str:
    """``grpcio>=1.62`` -> ``grpcio``."""
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip()
