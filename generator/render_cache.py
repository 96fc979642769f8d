"""A neuron's rendered files kept per user (``$XDG_CACHE_HOME/scaffold/render``), so a create or
update whose inputs were all seen before skips building the view model (protobuf's import and
the descriptor set's parse), Jinja (its import alone is ~30 ms), the templates, openapi and ruff.

The key is a sha256 of everything the view model and the rendering read:

- the inputs :func:`generator.neuron.plan` is given: the descriptor set's sha256 and the
  source files (the Api is made from nothing else), the folder name and title, the neuron's own
  choices (methods.py using Firestore, indexes.toml), its dependency clients and callers, the
  release pin, the runtime index, and every installed distribution with its version (the pins
  come from them), each as its ``repr`` (frozen dataclasses and tuples whose every field is in
  their repr: a value without a faithful repr only makes the key never repeat, a miss, never
  a stale hit); and the runtime wheel (version, filename, requirements, sha256 of its bytes);
- what builds and renders them: Python's version, and the path, size and mtime of every file
  of scaffold's code and templates and of the installed packages in :data:`PACKAGES` and ruff
  (the check Python itself makes before trusting a ``.pyc``).

An entry is the files in plan order as JSON, behind the sha256 of that JSON (checked on read:
a damaged entry is a miss, and rewritten). Written atomically; an unusable cache folder means
no cache. Only a successful rendering is stored, so a proto that fails a check fails every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from generator import usercache
from generator.errors import UsageError
from generator.writer import FileOwner, Plan

FORMAT = "scaffold-render-cache 1"
MAX_ENTRIES = 64  # the least recently used go first


def _stat_line(path: str) -> str:
    st = os.stat(path)
    return f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n"


def _tree(root: Path) -> list[str]:
    """A stat line for every file under ``root`` (``__pycache__`` left out), in a fixed order."""
    lines = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        lines += [_stat_line(os.path.join(folder, f)) for f in sorted(files) if not f.endswith((".pyc", ".tmp"))]
    return lines


def _package(name: str) -> list[str]:
    """Stat lines of an installed package's files (``missing`` when it is not installed)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return [f"{name}: missing\n"]
    return [line for folder in spec.submodule_search_locations for line in _tree(Path(folder))]


# What parses the descriptor set (protobuf, its upb extension, the option extensions of
# googleapis-common-protos), renders (Jinja2) and inflects names (inflect).
PACKAGES = ("google.protobuf", "google._upb", "google.api", "google.longrunning", "jinja2", "inflect")


def _key(inputs: tuple, runtime) -> str | None:
    """The cache key of rendering ``inputs`` with ``runtime``; None when a file cannot be stat'ed."""
    from generator.pyformat import _ruff
    from generator.render import template_root

    ruff = _ruff()
    try:
        parts = [FORMAT, sys.version, *_tree(Path(__file__).parent), *_tree(template_root()),
                 *(line for name in PACKAGES for line in _package(name)), _stat_line(ruff) if ruff else "ruff: missing\n"]
    except OSError:
        return None
    h = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape"))
    described = (runtime.version, runtime.filename, runtime.core, sorted(runtime.extras.items()),
                 hashlib.sha256(runtime.data).hexdigest())
    for value in (*inputs, described):
        h.update(b"\0" + repr(value).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _dump(plan: Plan, runtime) -> bytes | None:
    """The plan's files as an entry; None when it holds bytes other than the runtime wheel."""
    files = []
    for f in plan.files:
        if isinstance(f.content, bytes):
            if f.content != runtime.data:
                return None
            content = None  # the wheel: its bytes are in the key, not in the entry
        else:
            content = f.content
        files.append([f.path, f.owner.value, f.replace, f.executable, f.private, content])
    body = json.dumps(files, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def _load(blob: bytes | None, runtime) -> Plan | None:
    """The plan an entry holds; None when it is missing or damaged."""
    if blob is None:
        return None
    digest, _, body = blob.partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != digest:
        return None
    try:
        plan = Plan()
        for path, owner, replace, executable, private, content in json.loads(body):
            plan.add(path, runtime.data if content is None else content, FileOwner(owner), force=replace,
                     executable=executable, private=private)
    except (ValueError, TypeError, UsageError):  # UsageError: a path outside the neuron folder
        return None
    return plan


def rendered(inputs: tuple, runtime, render: Callable[[], Plan]) -> Plan:
    """The plan ``render()`` makes from ``inputs`` and ``runtime`` (everything it reads besides
    scaffold's code and the packages the key stats), from the cache when it was made before."""
    key = _key(inputs, runtime)
    if key is None:
        return render()
    path = usercache.directory("render") / key
    cached = _load(usercache.read(path), runtime)
    if cached is not None:
        usercache.touch(path)
        return cached
    plan = render()
    entry = _dump(plan, runtime)
    if entry is not None and usercache.store(path, entry):
        usercache.prune(path.parent, MAX_ENTRIES)
    return plan
