"""A ccache-style cache of protoc's results (stubs and descriptor set), per user.

Layout under ``$XDG_CACHE_HOME/scaffold/protoc`` (:mod:`generator.usercache`)::

    <key>/manifest.json   earlier results of this key, newest first: for each, every file
                          protoc read (virtual name -> [real path, sha256]) and the result's name
    <key>/<sha256>        a result: stubs and descriptor set, named by the sha256 of its bytes

``key`` hashes the protoc build (grpcio-tools' version file, its compiler extension's name, size
and mtime), protoc's arguments (include folders, outputs, file names) and the bytes of the files
named on the command line. A result serves only when every file it recorded (the descriptor
set's files: the sources and all their imports) still resolves, through the same include path,
to the same real path with the same sha256: an edited, added (shadowing) or removed import misses.

A result is stored only when the files protoc read did not change while it ran (each is
hashed and stat'ed before the run and again after it). Every file is written atomically and a
result is checked against its name when read, so a corrupted or partial entry is a miss and is
rewritten by that run. Any OSError (a read-only or missing cache folder) means no cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

from generator import usercache

FORMAT = b"scaffold-protoc-cache 1\n"
MAX_RESULTS = 8  # per key (the same sources with different imports)
MAX_KEYS = 64  # key folders kept; the least recently used go first

Locate = Callable[[str], "Path | None"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tool_id() -> bytes | None:
    """What identifies the protoc build: grpcio-tools' version file and its compiled extensions."""
    import importlib.util

    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent
    try:
        parts = [(folder / "grpc_version.py").read_bytes()]
        for name in sorted(os.listdir(folder)):
            if name.startswith("_protoc_compiler"):
                st = os.stat(folder / name)
                parts.append(f"{folder / name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    except OSError:
        return None
    return b"\0".join(parts) if len(parts) > 1 else None


def _state(path: Path) -> tuple[str, tuple[int, ...]] | None:
    """(sha256, (inode, size, mtime, ctime)) of ``path``, or None when it cannot be read."""
    try:
        before = os.stat(path)
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return _sha(data), (before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns)


def _pack(stubs: dict[str, bytes], descriptors: bytes) -> bytes:
    """One result as bytes: the descriptor set (under the empty name), then each stub file."""
    out = [FORMAT]
    for name, data in [("", descriptors), *sorted(stubs.items())]:
        raw = name.encode("utf-8")
        out += [struct.pack(">II", len(raw), len(data)), raw, data]
    return b"".join(out)


def _unpack(blob: bytes) -> tuple[dict[str, bytes], bytes] | None:
    """(stubs, descriptor set) from :func:`_pack`'s bytes; None when they are not well formed."""
    if not blob.startswith(FORMAT):
        return None
    pos, items = len(FORMAT), {}
    while pos < len(blob):
        if pos + 8 > len(blob):
            return None
        n, size = struct.unpack_from(">II", blob, pos)
        pos += 8
        if pos + n + size > len(blob):
            return None
        try:
            name = blob[pos:pos + n].decode("utf-8")
        except UnicodeDecodeError:
            return None
        items[name] = blob[pos + n:pos + n + size]
        pos += n + size
    descriptors = items.pop("", None)
    if descriptors is None or any(not name or name.startswith("/") or ".." in name.split("/") for name in items):
        return None
    return items, descriptors


class Lookup:
    """The cache entry of one protoc invocation: :meth:`get` a result, or :meth:`snapshot` the
    files before running protoc and :meth:`put` its result after."""

    def __init__(self, folder: Path, locate: Locate):
        self.folder = folder
        self.locate = locate
        self._seen: dict[str, tuple[str, tuple[int, ...]] | None] = {}
        self._before: dict[str, tuple[str, str, tuple[int, ...]]] | None = None

    @classmethod
    def start(cls, args: list[str], files: tuple[str, ...], locate: Locate) -> Lookup | None:
        """The entry for protoc ``args`` compiling ``files``; None (no caching) when the protoc
        build or a named file cannot be read."""
        tool = _tool_id()
        if tool is None:
            return None
        h = hashlib.sha256(FORMAT + tool + b"\0")
        for arg in args:
            h.update(arg.encode("utf-8", "surrogateescape") + b"\0")
        for name in files:
            path = locate(name)
            data = usercache.read(path) if path is not None else None
            if data is None:
                return None  # protoc reports it
            h.update(hashlib.sha256(data).digest())
        return cls(usercache.directory("protoc") / h.hexdigest(), locate)

    def _current(self, name: str) -> tuple[str, tuple[int, ...]] | None:
        """(real path, sha256) that ``name`` resolves to now (memoised for this run)."""
        if name not in self._seen:
            path = self.locate(name)
            state = _state(path) if path is not None else None
            self._seen[name] = (str(path), state[0]) if state is not None else None
        return self._seen[name]

    def _manifest(self) -> list[dict]:
        """The manifest's entries; empty when it is missing or not what this module writes."""
        raw = usercache.read(self.folder / "manifest.json")
        try:
            entries = json.loads(raw) if raw is not None else []
        except ValueError:
            return []
        if not isinstance(entries, list):
            return []
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("files"), dict)
                and isinstance(e.get("result"), str) and len(e["result"]) == 64
                and all(isinstance(v, list) and len(v) == 2 for v in e["files"].values())]

    def get(self) -> tuple[dict[str, bytes], bytes] | None:
        """(stubs, descriptor set) of an earlier run whose every read file is unchanged, or None."""
        for entry in self._manifest():
            if not all(self._current(name) == tuple(recorded) for name, recorded in entry["files"].items()):
                continue
            blob = usercache.read(self.folder / entry["result"])
            if blob is None or _sha(blob) != entry["result"]:
                continue  # gone or corrupted: this run rewrites it
            result = _unpack(blob)
            if result is not None:
                usercache.touch(self.folder)  # recently used: kept by usercache.prune
                return result
        return None

    def snapshot(self, names: list[str]) -> None:
        """Hash and stat ``names`` (the files protoc is expected to read) before it runs."""
        self._before = {}
        for name in names:
            path = self.locate(name)
            state = _state(path) if path is not None else None
            if state is not None:
                self._before[name] = (str(path), *state)

    def put(self, stubs: dict[str, bytes], descriptors: bytes) -> None:
        """Store a result, recording the descriptor set's files; skipped when one of them was not
        in :meth:`snapshot` or changed since (an edit during the run), or on any OSError."""
        from google.protobuf import descriptor_pb2

        if self._before is None:
            return
        fds = descriptor_pb2.FileDescriptorSet.FromString(descriptors)
        files: dict[str, list[str]] = {}
        for fd in fds.file:
            before = self._before.get(fd.name)
            path = self.locate(fd.name)
            now = _state(path) if path is not None else None
            if before is None or now is None or (str(path), *now) != before:
                return
            files[fd.name] = [before[0], before[1]]
        blob = _pack(stubs, descriptors)
        name = _sha(blob)
        if not usercache.store(self.folder / name, blob):
            return
        old = self._manifest()
        keep = [e for e in old if e["files"] != files and e["result"] != name][: MAX_RESULTS - 1]
        entries = [{"files": files, "result": name}, *keep]
        if not usercache.store(self.folder / "manifest.json", json.dumps(entries, indent=0).encode()):
            return
        for e in old:
            if e not in keep and e["result"] != name:
                try:
                    (self.folder / e["result"]).unlink(missing_ok=True)
                except OSError:
                    pass
        usercache.prune(self.folder.parent, MAX_KEYS)

