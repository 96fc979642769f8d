"""Golden files pin the generated Books neuron and skeletons byte for byte.

Refresh after an intended template change with:
    SCAFFOLD_UPDATE_GOLDENS=1 .venv/bin/python -m pytest tests/test_golden.py
then review the diff in git like any other change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SCAFFOLD_UPDATE_GOLDENS") == "1"


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts
    }


def check(name: str, produced: Path) -> None:
    golden = GOLDEN / name
    got = snapshot(produced)
    if UPDATE:
        shutil.rmtree(golden, ignore_errors=True)
        for rel, data in got.items():
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden / rel).write_bytes(data)
        return
    assert golden.is_dir(), f"no golden files for {name}: run with SCAFFOLD_UPDATE_GOLDENS=1"
    want = snapshot(golden)
    assert sorted(got) == sorted(want), "files differ from the goldens"
    for rel in want:
        assert got[rel] == want[rel], f"{name}/{rel} differs from its golden file (SCAFFOLD_UPDATE_GOLDENS=1 refreshes)"


def test_books_proto_skeleton(workspace, scaffold):
    assert scaffold("proto", "create", "xmpl.br.resources-books-v1").code == 0
    check("proto-resources-books", workspace / "proto/xmpl/br/resources/books/v1")


def test_translator_proto_skeleton(workspace, scaffold):
    assert scaffold("proto", "create", "xmpl.br.services-translator-v1").code == 0
    check("proto-services-translator", workspace / "proto/xmpl/br/services/translator/v1")


def test_books_neuron(workspace, scaffold):
    assert scaffold("proto", "create", "xmpl.br.resources-books-v1").code == 0
    assert scaffold("neuron", "create", "xmpl.br.resources-books-v1").code == 0
    check("neuron-resources-books-v1", workspace / "neurons/resources-books-v1")


@pytest.mark.skipif(UPDATE, reason="refreshing goldens")
def test_goldens_cover_every_template():
    """A template added without a golden that exercises it fails here."""
    root = Path(__file__).parent.parent / "templates" / "neuron"
    rendered = {p.name.removesuffix(".j2") for p in root.rglob("*") if p.is_file() and not p.name.startswith("_")}
    golden = {p.name for p in (GOLDEN / "neuron-resources-books-v1").rglob("*") if p.is_file()}
    missing = {n for n in rendered if n not in golden and n not in ("test_service.py", "dockerignore")}
    assert not missing, missing
