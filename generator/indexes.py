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

An entry may also name the List query it serves, ``filter = "publisher = \"x\""`` and/or
``order_by = "create_time desc"`` (``fields`` is then optional): the neuron's generated contract
tests run every declared query through its List RPC, so a query the server would refuse fails
the tests, not a client. ``scaffold neuron create`` writes a commented example; the file is
yours, ``neuron create`` / ``update`` render it into ``terraform/indexes.tf``.

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
    filter: str = ""  # the declared List query this index serves (optional)
    order_by: str = ""

    @property
    def summary(self) -> str:
        """The declared query in words, for a test's docstring."""
        parts = [f"filter {self.filter!r}" if self.filter else "", f"order_by {self.order_by!r}" if self.order_by else ""]
        return ", ".join(p for p in parts if p) or "no query"

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
        keys = set(entry) if isinstance(entry, dict) else set()
        if (not isinstance(entry, dict) or "collection" not in keys or not keys & {"fields", "filter", "order_by"}
                or keys - {"collection", "fields", "filter", "order_by"}):
            raise UsageError(f"{where} needs exactly collection = \"...\" plus fields = [[\"field\", \"ASCENDING\"], ...] "
                             "and/or the query: filter = \"...\", order_by = \"...\"")
        collection, fields = entry["collection"], entry.get("fields")
        query = {k: entry.get(k, "") for k in ("filter", "order_by")}
        for key, value in query.items():
            if not isinstance(value, str) or len(value) > 1024:
                raise UsageError(f"{where}: {key} must be text (at most 1024 characters)")
        if not isinstance(collection, str) or not _ID.match(collection):
            raise UsageError(f"{where}: collection {collection!r} is not a collection id")
        if fields is None:
            fields = []
        elif not isinstance(fields, list) or len(fields) < 2:
            raise UsageError(f"{where}: a composite index needs at least two fields (Firestore indexes single fields itself)")
        pairs = []
        for field in fields:
            if (not isinstance(field, list) or len(field) != 2 or not isinstance(field[0], str)
                    or not _FIELD.match(field[0]) or field[1] not in DIRECTIONS):
                raise UsageError(f"{where}: {field!r} must be [\"field.path\", one of {', '.join(DIRECTIONS)}]")
            pairs.append((field[0], field[1]))
        if len({p for p, _ in pairs}) != len(pairs):
            raise UsageError(f"{where}: a field is listed twice")
        index = Index(collection, tuple(pairs), **query)
        if index in out:
            raise UsageError(f"{where} repeats an earlier index")
        out.append(index)
    return out


def render_terraform(indexes: list[Index], database: str = "(default)") -> str:
    """``google_firestore_index`` resources (HCL) for ``indexes``, using ``var.project_id``."""
    blocks = []
    for index in indexes:
        if not index.fields:  # a declared query that needs no composite index
            continue
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


def render_ttl(collection: str, field: str, database: str = "(default)") -> str:
    """A ``google_firestore_field`` (HCL) giving ``collection``'s ``field`` a TTL policy:
    Firestore deletes each document some time after the time that field holds."""
    name = re.sub(r"[^a-z0-9_]", "_", f"{collection}_{field}_ttl".lower()).strip("_")
    return "\n".join([f'resource "google_firestore_field" "{name}" {{',
                      "  project    = var.project_id",
                      f'  database   = "{database}"',
                      f'  collection = "{collection}"',
                      f'  field      = "{field}"',
                      "",
                      "  ttl_config {}",
                      "}", ""])


EXAMPLE = """# Firestore queries this neuron serves (yours: scaffold never overwrites it).
# `scaffold neuron update` renders the indexes into terraform/indexes.tf, and the generated
# contract tests run each declared filter / order_by through the List RPC.
#
# [[index]]
# collection = "books"                                  # the collection id of the resource
# filter = 'display_name = "x"'                          # the List query (AIP-160 / AIP-132)
# order_by = "create_time desc"
# fields = [["display_name", "ASCENDING"], ["create_time", "DESCENDING"]]   # its composite index
"""
