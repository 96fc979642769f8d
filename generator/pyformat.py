"""Generated Python leaves scaffold formatted the way the neuron's own ruff.toml wants.

Templates get the shape right; ``ruff format`` (run once per generation over every freshly
rendered ``.py`` file, never over a user's existing file) settles line wrapping that depends on
the proto's names. ruff is a dependency of scaffold; if its binary is missing the files are
written as rendered (valid Python, possibly wider than the line length).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def _ruff() -> str | None:
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError:
        return None
    try:
        return find_ruff_bin()
    except FileNotFoundError:
        return None


def _cache_dir() -> Path:
    """Formatted sources, per user (as render.py caches compiled templates): ~/.cache/scaffold/ruff."""
    from generator import usercache

    return usercache.directory("ruff")


def _cache_key(ruff: str, config: str, rel: str, text: str) -> str:
    """What ``ruff format`` gives for ``text`` depends on the binary, the config, the path and the text."""
    import hashlib
    import os

    st = os.stat(ruff)
    h = hashlib.sha256(f"{ruff}\0{st.st_size}\0{st.st_mtime_ns}\0{rel}\0".encode())
    for part in (config, text):
        h.update(part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def format_sources(files: dict[str, str], config: str) -> dict[str, str]:
    """``files`` (relative path -> Python source) formatted with the ruff.toml text ``config``.

    Each result is kept under ~/.cache/scaffold/ruff by a hash of the ruff binary, config, path
    and text, so only files not formatted before run through ruff (one subprocess for them all).
    A cache that cannot be read or written is skipped."""
    ruff = _ruff()
    if ruff is None or not files:
        return files
    cache = _cache_dir()
    keys = {rel: _cache_key(ruff, config, rel, text) for rel, text in files.items()}
    out: dict[str, str] = {}
    for rel, key in keys.items():
        try:
            out[rel] = (cache / f"{key}.py").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    todo = {rel: text for rel, text in files.items() if rel not in out}
    if not todo:
        return out
    formatted = _format(ruff, todo, config)
    if formatted is None:  # a template produced invalid Python: keep it as rendered, tests will say so
        return files
    from generator import usercache

    for rel, text in formatted.items():
        usercache.store(cache / f"{keys[rel]}.py", text.encode("utf-8"))
    return {rel: out.get(rel, formatted.get(rel)) for rel in files}


def _format(ruff: str, files: dict[str, str], config: str) -> dict[str, str] | None:
    """``ruff format`` over ``files`` in a temporary folder; None when ruff fails."""
    with tempfile.TemporaryDirectory(prefix="scaffold-fmt-") as tmp:
        root = Path(tmp)
        (root / "ruff.toml").write_text(config, encoding="utf-8")
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text, encoding="utf-8")
        r = subprocess.run([ruff, "format", "--quiet", "--config", str(root / "ruff.toml"), "--no-cache", str(root)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return None
        return {rel: (root / rel).read_text(encoding="utf-8") for rel in files}


def sort_imports(text: str, config: str, name: str = "module.py") -> str:
    """``text`` with its import block sorted as ruff's isort (I001) wants; nothing else moves.

    Used after scaffold adds an import to a user's file: their import lines stay, in order.
    """
    ruff = _ruff()
    if ruff is None:
        return text
    with tempfile.TemporaryDirectory(prefix="scaffold-fmt-") as tmp:
        root = Path(tmp)
        (root / "ruff.toml").write_text(config, encoding="utf-8")
        target = root / name
        target.write_text(text, encoding="utf-8")
        subprocess.run([ruff, "check", "--quiet", "--no-cache", "--config", str(root / "ruff.toml"), "--select", "I001",
                        "--fix", str(target)], capture_output=True, text=True, check=False)
        return target.read_text(encoding="utf-8")
