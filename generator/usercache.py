"""scaffold's per-user caches (``$XDG_CACHE_HOME/scaffold/<name>``, else ``~/.cache/scaffold/<name>``).

Every cache is an optimisation only: anything that cannot be read or written is treated as a
miss, and files are written atomically (a temporary file in the same folder, renamed into
place), so concurrent runs and a run killed mid-write never leave a partial entry under its
final name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def directory(name: str) -> Path:
    """The cache folder ``name`` (not created). A relative ``XDG_CACHE_HOME`` is ignored, as the
    XDG spec asks, so a cache never lands inside the current folder."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "scaffold" / name


def read(path: Path) -> bytes | None:
    """The bytes of ``path``, or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def store(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically, creating its folder; False (nothing written) on any
    OSError, e.g. a read-only or full cache folder."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


def prune(folder: Path, keep: int) -> None:
    """Keep the ``keep`` most recently modified entries of ``folder`` named by a sha256 (64 hex
    digits; files or folders), removing the rest; errors are ignored (a concurrent run may be
    pruning too)."""
    import shutil

    try:
        found = [e for e in os.scandir(folder) if len(e.name) == 64]
        if len(found) <= keep:
            return
        found.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime_ns, reverse=True)
    except OSError:
        return
    for e in found[keep:]:
        try:
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
            else:
                os.unlink(e.path)
        except OSError:
            pass


def touch(path: Path) -> None:
    """Mark ``path`` as just used (for :func:`prune`); ignored when it cannot be."""
    try:
        os.utime(path)
    except OSError:
        pass
