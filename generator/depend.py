"""``scaffold neuron depend A B``: record that neuron A calls neuron B, then regenerate both.

The record and what generation makes of it are :mod:`generator.dependencies`.
"""

from __future__ import annotations

from pathlib import Path

from generator import names
from generator.dependencies import FILENAME, add, render
from generator.errors import UsageError
from generator.neuron import locate, update_recorded
from generator.workspace import Workspace

__all__ = ["FILENAME", "depend", "resolve"]


def resolve(ws: Workspace, ref: str) -> Path:
    """The folder of the neuron ``ref`` names: a folder under neurons/ or a NAME; raises UsageError."""
    if (ws.neurons_root / ref / "server.py").is_file():
        return ws.neurons_root / ref
    if "." not in ref:
        raise UsageError(f"no neuron folder {ref!r} under {ws.neurons_root}",
                         hint="give a NAME (xmpl.br.resources-books-v1) or the folder name of an existing neuron")
    names.parse(ref)
    return locate(ws, ref, None)


def depend(ws: Workspace, a_ref: str, b_ref: str, alias: str | None = None, *, force: bool = False):
    """Record that neuron A calls neuron B and regenerate both (A: its client of B, B's stubs,
    its Terraform; B: its Terraform's allowed callers). Returns (the dependency, the results of
    the two updates). Raises UsageError for a bad pair; when an update fails, A's
    dependencies.toml is put back as it was."""
    a, b = resolve(ws, a_ref), resolve(ws, b_ref)
    new, deps = add(ws, a, b, alias)
    path = a / FILENAME
    before = path.read_bytes() if path.is_file() else None
    path.write_text(render(deps), encoding="utf-8")
    try:
        results = (update_recorded(ws, a, force=force), update_recorded(ws, b, force=force))
    except BaseException:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        raise
    return new, results
