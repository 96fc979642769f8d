"""Run protoc (grpcio-tools, in-process) for stubs and a descriptor set.

protoc's own messages (``file:line:col: message``) are captured from file descriptor 2 and
raised as :class:`ProtoError`, with paths as the user typed them.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from generator import usercache
from generator.errors import ProtoError, ToolError, UsageError
from generator.writer import display_path

_LOCK = threading.Lock()  # protoc in-process is not re-entrant; fd 2 is process-wide


@functools.cache
def bundled_includes() -> tuple[Path, ...]:
    """Include roots shipped by packages: protobuf's well-known types and googleapis protos."""
    import importlib.util

    roots: list[Path] = []
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.origin:
        raise ToolError(
            "grpcio-tools is not installed", hint="pip install grpcio-tools (scaffold depends on it)"
        )
    roots.append(Path(spec.origin).parent / "_proto")
    api = importlib.util.find_spec("google.api")
    if api is None or not api.submodule_search_locations:
        raise ToolError(
            "googleapis-common-protos is not installed (google/api/*.proto are missing)",
            hint="pip install googleapis-common-protos",
        )
    for loc in api.submodule_search_locations:
        if (Path(loc) / "annotations.proto").is_file():
            roots.append(Path(loc).parent.parent)
            break
    longrunning = _longrunning_root(roots[-1])
    if longrunning is not None:
        roots.append(longrunning)
    return tuple(roots)


def _longrunning_root(common: Path) -> Path | None:
    """An include root holding ``google/longrunning/operations.proto``, or None.

    googleapis-common-protos ships that file's text as ``operations_proto.proto`` (its
    ``operations_pb2`` module registers it under the usual name), so protoc cannot find the
    import. The same text is copied, once per content, to a folder under the temp dir named by
    its hash (written atomically: concurrent runs agree)."""
    import hashlib

    if (common / "google" / "longrunning" / "operations.proto").is_file():
        return None  # a later googleapis-common-protos ships it under its own name
    src = common / "google" / "longrunning" / "operations_proto.proto"
    if not src.is_file():
        return None
    data = src.read_bytes()
    root = Path(tempfile.gettempdir()) / f"scaffold-include-{hashlib.sha256(data).hexdigest()[:16]}"
    target = root / "google" / "longrunning" / "operations.proto"
    if not (target.is_file() and target.read_bytes() == data) and not usercache.store(target, data):
        return None  # an unwritable temp folder: protoc then says operations.proto is missing
    return root


def is_bundled(virtual_name: str, includes: tuple[Path, ...]) -> bool:
    """True when ``virtual_name`` resolves inside a package's include root (stubs ship there)."""
    bundled = bundled_includes()
    for inc in includes:
        if (inc / virtual_name).is_file():
            return inc in bundled
    return False


@dataclass(frozen=True)
class Source:
    """Which proto files to compile, as protoc sees them (virtual names under include roots)."""

    files: tuple[str, ...]
    includes: tuple[Path, ...]  # user roots first, then bundled ones

    def locate(self, virtual_name: str) -> Path | None:
        for inc in self.includes:
            if (inc / virtual_name).is_file():
                return inc / virtual_name
        return None


def source_for(
    files: list[Path], user_includes: list[Path], extra_roots: tuple[Path, ...] = ()
) -> Source:
    """Map real proto paths onto protoc's virtual names, checking each path exists."""
    includes: list[Path] = []
    for inc in [*extra_roots, *user_includes]:
        inc = inc.resolve()
        if not inc.is_dir():
            what = "is a file, not a folder" if inc.exists() else "does not exist"
            raise UsageError(f"include folder {inc} {what}", hint="check the -I option")
        if inc not in includes:
            includes.append(inc)
    virtual: list[str] = []
    for f in files:
        path = f.resolve()
        if not path.is_file():
            what = "is a folder: name a .proto file in it" if path.is_dir() else "does not exist"
            raise UsageError(f"proto file {f} {what}")
        if path.suffix != ".proto":
            raise UsageError(f"{f} is not a .proto file")
        for inc in includes:
            if path.is_relative_to(inc):
                virtual.append(path.relative_to(inc).as_posix())
                break
        else:
            includes.append(path.parent)
            virtual.append(path.name)
    return Source(tuple(virtual), tuple(includes) + bundled_includes())


def _run(args: list[str], cwd: Path | None = None) -> tuple[int, str]:
    from grpc_tools import protoc

    with _LOCK, tempfile.TemporaryFile(mode="w+b") as err:
        saved = os.dup(2)
        old_cwd = os.getcwd()
        try:
            os.dup2(err.fileno(), 2)
            if cwd is not None:
                os.chdir(cwd)
            code = protoc.main(["protoc", *args])
        finally:
            os.chdir(old_cwd)
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    return code, text


def _explain(text: str, source: Source) -> str:
    """Rewrite protoc's virtual names to real paths; keep its file:line:col format."""
    lines = []
    for line in text.strip().splitlines():
        name, sep, rest = line.partition(":")
        real = source.locate(name) if sep else None
        if real is not None:
            line = f"{display_path(real)}:{rest}"
        lines.append(line)
    return "\n".join(lines) or "protoc failed without a message"


def _hint(text: str) -> str | None:
    if "recursively imports itself" in text:
        return "protos cannot import each other in a circle: move what both need into a third file that both import"
    if "File not found" in text or "was not found or had errors" in text:
        return (
            "an imported proto was not found: add the folder that contains it with -I DIR "
            "(google/api, google/type, google/rpc and google/protobuf are built in)"
        )
    return None


@dataclass(frozen=True)
class Compiled:
    """What one protoc run produced."""

    stubs: dict[str, bytes]  # path under the output folder -> bytes (empty when not asked for)
    descriptors: bytes  # FileDescriptorSet of the files, imports and source info included


def compile_source(source: Source, *, stubs: bool = True, files: tuple[str, ...] | None = None) -> Compiled:
    """Compile ``files`` (default: the source's) to stubs (``_pb2``, ``_pb2_grpc``, ``.pyi``;
    only with ``stubs``) and a descriptor set, from the user's protoc cache when every file
    protoc read before still reads the same (:mod:`generator.protoc_cache`).

    Raises ProtoError with protoc's messages (paths as the user knows them) when it fails."""
    from generator import protoc_cache

    files = tuple(files or source.files)
    args = [f"-I{inc}" for inc in source.includes]
    if stubs:
        args += ["--python_out=out", "--pyi_out=out", "--grpc_python_out=out"]
    args += ["--descriptor_set_out=set.binpb", "--include_imports", "--include_source_info", *files]
    cache = protoc_cache.Lookup.start(args, files, source.locate)
    hit = cache.get() if cache is not None else None
    if hit is not None:
        return Compiled(*hit)
    if cache is not None:
        cache.snapshot(imports_closure(files, source.locate))
    with tempfile.TemporaryDirectory(prefix="scaffold-protoc-") as tmp:
        root = Path(tmp)
        (root / "out").mkdir()
        # protoc runs in an empty folder: the output paths are relative to it, and an input
        # name can never match a file of the caller's current folder (the cache key holds no cwd).
        code, text = _run(args, cwd=root)
        if code != 0:
            raise ProtoError(_explain(text, source), hint=_hint(text))
        out = {p.relative_to(root / "out").as_posix(): p.read_bytes()
               for p in sorted((root / "out").rglob("*")) if p.is_file()}
        result = Compiled(out, (root / "set.binpb").read_bytes())
    if cache is not None:
        cache.put(result.stubs, result.descriptors)
    return result


def compile_protos(
    source: Source,
    *,
    python_out: Path | None = None,
    descriptor_out: Path | None = None,
    files: tuple[str, ...] | None = None,
) -> None:
    """Run protoc (:func:`compile_source`); write stubs to ``python_out`` and/or the descriptor set to
    ``descriptor_out``. Raises ProtoError."""
    result = compile_source(source, stubs=python_out is not None, files=files)
    if python_out is not None:
        python_out.mkdir(parents=True, exist_ok=True)
        for rel, data in result.stubs.items():
            (python_out / rel).parent.mkdir(parents=True, exist_ok=True)
            (python_out / rel).write_bytes(data)
    if descriptor_out is not None:
        descriptor_out.parent.mkdir(parents=True, exist_ok=True)
        descriptor_out.write_bytes(result.descriptors)


def descriptor_set(source: Source) -> bytes:
    """Compile to a FileDescriptorSet (imports and source info included) and return its bytes."""
    return compile_source(source, stubs=False).descriptors


_IMPORT = r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;'


def imports_closure(files: tuple[str, ...], locate, follow=lambda name: True) -> tuple[str, ...]:
    """``files`` and every import they reach (virtual names), read from import lines (cheap;
    protoc itself still checks every file). A name ``follow`` refuses is left out, its imports too;
    a name ``locate`` cannot find is left out (protoc reports it, at the import line)."""
    import re

    pattern = re.compile(_IMPORT, re.MULTILINE)
    seen: list[str] = []
    todo = list(files)
    while todo:
        name = todo.pop(0)
        if name in seen or not follow(name):
            continue
        path = locate(name)
        if path is None:
            continue
        seen.append(name)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        todo.extend(pattern.findall(text))
    return tuple(seen)


def local_closure(source: Source) -> tuple[str, ...]:
    """The source files plus every import they reach that no installed package ships stubs for."""
    return imports_closure(source.files, source.locate, lambda name: not is_bundled(name, source.includes))
