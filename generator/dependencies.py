"""Neurons that call neurons: the record (``dependencies.toml``) generation reads.

A's dependencies live in ``neurons/A/dependencies.toml``, a file of A's owner (generation
reads it and never writes it, so ``neuron update`` and ``update --all`` keep it)::

    [books]                                  # the alias: deps.clients.books, DEP_BOOKS_TARGET
    folder = "resources-books-v1"            # B's folder under neurons/

From it A gets ``deps_clients.py`` (a typed client per dependency, on
``scaffold_runtime.neuron_client``), B's stubs in its ``protobuf/``, and Terraform that reads
B's URL and grants A's service account ``roles/run.invoker`` on B. B, in turn, learns its
callers by scanning the workspace: its Terraform turns on ``AUTH_MODE=id-token`` with their
service accounts in ``AUTH_ALLOWED_CALLERS``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from generator.errors import UsageError
from generator.workspace import Workspace

FILENAME = "dependencies.toml"
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
HEADER = ("# Neurons this neuron calls; `scaffold neuron depend A B` adds one. Yours: scaffold reads this\n"
          "# file and never rewrites it. Each table is an alias (deps.clients.ALIAS, DEP_ALIAS_TARGET)\n"
          "# and the folder of the called neuron under neurons/.\n")


@dataclass(frozen=True)
class Dependency:
    alias: str  # "books"
    folder: str  # "resources-books-v1"

    @property
    def env(self) -> str:
        """The prefix of its settings: ``DEP_BOOKS``."""
        return f"DEP_{self.alias.upper()}"


def load(root: Path) -> tuple[Dependency, ...]:
    """The dependencies ``root/dependencies.toml`` lists (none when the file is absent); raises
    UsageError for a file that cannot be read or names an invalid alias."""
    path = root / FILENAME
    if not path.is_file():
        return ()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", hint="fix the file, or restore it from version control") from None
    out = []
    for alias, table in data.items():
        folder = table.get("folder") if isinstance(table, dict) else None
        if not ALIAS_RE.match(alias) or not isinstance(folder, str) or not folder:
            raise UsageError(f"{path}: [{alias}] needs an alias of lower-case letters, digits and _ and a folder = \"…\"",
                             hint='e.g. [books] folder = "resources-books-v1"')
        out.append(Dependency(alias, folder))
    return tuple(out)


def render(deps) -> str:
    """The text of dependencies.toml for ``deps``."""
    return HEADER + "".join(f'\n[{d.alias}]\nfolder = "{d.folder}"\n' for d in deps)



def default_alias(ws: Workspace, root: Path) -> str:
    """The alias a dependency on ``root`` gets: its NAME part (``books``), else its folder's."""
    from generator import names, provenance

    record = provenance.load(root)
    base = names.parse(record.name).name if record is not None and record.name else root.name
    return re.sub(r"[^a-z0-9_]", "_", base.lower()).strip("_")[:31] or "dep"


def callers(ws: Workspace, root: Path) -> tuple[str, ...]:
    """Folders of the workspace's neurons whose dependencies name ``root`` (sorted)."""
    out = []
    for other in sorted(p.parent for p in ws.neurons_root.glob("*/server.py")):
        if other != root and any(d.folder == root.name for d in load(other)):
            out.append(other.name)
    return tuple(sorted(out))


def _reaches(ws: Workspace, start: str, goal: str) -> bool:
    """Whether neuron folder ``start`` calls ``goal``, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        folder = todo.pop()
        if folder == goal:
            return True
        if folder in seen or not (ws.neurons_root / folder).is_dir():
            continue
        seen.add(folder)
        todo += [d.folder for d in load(ws.neurons_root / folder)]
    return False


def add(ws: Workspace, a: Path, b: Path, alias: str | None = None) -> tuple[Dependency, tuple[Dependency, ...]]:
    """A's dependencies with one on B added: (the new one, the full list); raises UsageError
    for a neuron depending on itself, a cycle, an alias taken or invalid, a repeat."""
    if a == b:
        raise UsageError(f"{a.name} cannot depend on itself", hint="name two different neurons: scaffold neuron depend A B")
    deps = load(a)
    if any(d.folder == b.name for d in deps):
        raise UsageError(f"{a.name} already depends on {b.name}", hint=f"see {a / FILENAME}")
    if _reaches(ws, b.name, a.name):
        raise UsageError(f"{b.name} already calls {a.name} (directly or through others): a cycle cannot be deployed",
                         hint="each neuron's Terraform needs the URL of the ones it calls, so one must come first")
    alias = alias or default_alias(ws, b)
    if not ALIAS_RE.match(alias):
        raise UsageError(f"invalid alias {alias!r}: use lower-case letters, digits and _, starting with a letter",
                         hint="pass --as ALIAS, e.g. --as books")
    if any(d.alias == alias for d in deps):
        raise UsageError(f"{a.name} already has a dependency called {alias!r}", hint="pass --as ANOTHER_ALIAS")
    new = Dependency(alias, b.name)
    return new, (*deps, new)
