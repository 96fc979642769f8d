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


def format_sources(files: dict[str, str], config: str) -> dict[str, str]:
    """``files`` (relative path -> Python source) formatted with the ruff.toml text ``config``."""
    ruff = _ruff()
    if ruff is None or not files:
        return files
    with tempfile.TemporaryDirectory(prefix="scaffold-fmt-") as tmp:
        root = Path(tmp)
        (root / "ruff.toml").write_text(config, encoding="utf-8")
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text, encoding="utf-8")
        r = subprocess.run([ruff, "format", "--quiet", "--config", str(root / "ruff.toml"), "--no-cache", str(root)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:  # a template produced invalid Python: keep it as rendered, tests will say so
            return files
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
