"""Shared set-up for test_filtering / test_ordering: the runtime modules, a compiled test
proto (tests/protos/filtering/shelf.proto) and a Firestore collection of real documents
written by scaffold_runtime.codec on the real emulator."""

from __future__ import annotations

import datetime
import importlib
import sys
from pathlib import Path

from tests.helpers import forget_package

REPO = Path(__file__).resolve().parent.parent


def load_runtime():
    """``(filtering, ordering, codec)`` from scaffold-runtime (what neurons run)."""
    return tuple(importlib.import_module(f"scaffold_runtime.{m}") for m in ("filtering", "ordering", "codec"))


_SHELF: list = []


def compile_shelf(out: Path):
    """The shelf_pb2 module, compiled with grpcio-tools (once per test session)."""
    if _SHELF:
        return _SHELF[0]
    from grpc_tools import protoc

    from generator.protoc import bundled_includes

    args = ["protoc", f"-I{REPO / 'tests' / 'protos' / 'filtering'}", *[f"-I{i}" for i in bundled_includes()],
            f"--python_out={out}", "shelf.proto"]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(out))
    try:
        forget_package("shelf_pb2")
        _SHELF.append(importlib.import_module("shelf_pb2"))
        return _SHELF[0]
    finally:
        sys.path.remove(str(out))


def ts(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def items(pb):
    """Eight Items covering every field kind; ids i0..i7."""
    Item, Author = pb.Item, pb.Author
    out = []
    for n in range(8):
        item = Item(name=f"items/i{n}", title=f"title {n % 4}", pages=n * 10, views=2**40 + n, price=n * 1.5,
                    state=(Item.DRAFT, Item.ACTIVE, Item.ARCHIVED)[n % 3], done=n % 2 == 1,
                    tags=["all", f"t{n}"] + (["even"] if n % 2 == 0 else []),
                    history=[Item.DRAFT] + ([Item.ACTIVE] if n >= 4 else []),
                    labels={"env": "prod" if n < 5 else "dev", "env-name": f"x{n}"},
                    author=Author(name=f"a{n}", country=("NO", "SE", "DK")[n % 3]))
        item.create_time.FromDatetime(ts(f"2024-01-0{n + 1}T12:00:00.123456Z"))
        item.author.born.FromDatetime(ts(f"19{50 + n}-06-01T00:00:00Z"))
        if n != 3:
            item.rating.value = n
        if n < 6:
            item.edition = n
        item.big = 2**64 - 1 if n == 7 else n
        out.append(item)
    return out
