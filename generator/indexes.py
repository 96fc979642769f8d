"""Firestore composite indexes a neuron declares, rendered as Terraform.

A neuron lists the List queries it serves with filters or order_by that need a composite
index in ``indexes.toml`` (next to ``scaffold.neuron.toml``)::

    # One entry per query shape: equality fields first, then the order_by / range fields.
    [[index]]
    collection = "books"                     # collection id (the last id in the pattern)
    fields = [["publisher", "ASCENDING"], ["create_time", "DESCENDING"]]

    [[index]]
    collection = "books"
    fields = [["tags", "CONTAINS"], ["title", "ASCENDING"]]

Directions are ASCENDING, DESCENDING or CONTAINS (for ``tags:"x"`` filters). Firestore adds
``__name__`` with the last field's direction, which is the tiebreak runtime/ordering.py uses.
The Firestore emulator does not enforce indexes: a missing one only shows in the real
database, as FAILED_PRECONDITION naming the fields (runtime/ordering.py: missing_index).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

from generator.errors import UsageError

_ID = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
DIRECTIONS = ("ASCENDING", "DESCENDING", "CONTAINS")


@dataclass(frozen=True)
class Index:
    collection: str
    fields: tuple[tuple[str, str], ...]

    @property
    def resource_name(self) -> str:
        short = {"ASCENDING": "asc", "DESCENDING": "desc", "CONTAINS": "contains"}
        parts = [self.collection] + [f"{p}_{short[d]}" for p, d in self.fields]
        return re.sub(r"[^a-z0-9_]", "_", "_".join(parts).lower())


def load(text: str, source: str = "indexes.toml") -> list[Index]:
    """The indexes declared in TOML ``text``; UsageError naming the entry if one is malformed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source} is not valid TOML: {exc}", hint="see generator/indexes.py for the format") from None
    entries = data.get("index", [])
    unknown = set(data) - {"index"}
    if unknown or not isinstance(entries, list):
        raise UsageError(f"{source}: only [[index]] entries are allowed (found {', '.join(sorted(unknown)) or 'index'})")
    out: list[Index] = []
    for n, entry in enumerate(entries, 1):
        where = f"{source}: index #{n}"
        if not isinstance(entry, dict) or set(entry) != {"collection", "fields"}:
            raise UsageError(f"{where} needs exactly collection = \"...\" and fields = [[\"field\", \"ASCENDING\"], ...]")
        collection, fields = entry["collection"], entry["fields"]
        if not isinstance(collection, str) or not _ID.match(collection):
            raise UsageError(f"{where}: collection {collection!r} is not a collection id")
        if not isinstance(fields, list) or len(fields) < 2:
            raise UsageError(f"{where}: a composite index needs at least two fields (Firestore indexes single fields itself)")
        pairs = []
        for field in fields:
            if (not isinstance(field, list) or len(field) != 2 or not isinstance(field[0], str)
                    or not _FIELD.match(field[0]) or field[1] not in DIRECTIONS):
                raise UsageError(f"{where}: {field!r} must be [\"field.path\", one of {', '.join(DIRECTIONS)}]")
            pairs.append((field[0], field[1]))
        if len({p for p, _ in pairs}) != len(pairs):
            raise UsageError(f"{where}: a field is listed twice")
        index = Index(collection, tuple(pairs))
        if index in out:
            raise UsageError(f"{where} repeats an earlier index")
        out.append(index)
    return out


def render_terraform(indexes: list[Index], database: str = "(default)") -> str:
    """``google_firestore_index`` resources (HCL) for ``indexes``, using ``var.project_id``."""
    blocks = []
    for index in indexes:
        lines = [f'resource "google_firestore_index" "{index.resource_name}" {{',
                 "  project    = var.project_id",
                 f'  database   = "{database}"',
                 f'  collection = "{index.collection}"']
        for path, direction in index.fields:
            key = "array_config" if direction == "CONTAINS" else "order"
            width = max(len(key), len("field_path"))
            lines += ["", "  fields {", f'    {"field_path":<{width}} = "{path}"', f'    {key:<{width}} = "{direction}"', "  }"]
        lines.append("}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")
