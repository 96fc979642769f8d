"""Library behind ``scaffold proto …``: create skeletons, generate stubs, load the view model."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from generator import names, protoc
from generator.errors import ConflictError, UsageError
from generator.workspace import Workspace
from generator.writer import FileOwner, Outcome, Plan, write


def _camel(word: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[_\-]", word) if p)




def create(ws: Workspace, name: str, *, force: bool = False, dry_run: bool = False) -> tuple[Path, list[Outcome]]:
    """Write the AIP-style skeleton for ``name``; refuse to overwrite an existing proto."""
    from generator.render import render

    n = names.parse(name, ws.org, ws.product)
    if (n.org, n.product) != (ws.org, ws.product):
        raise UsageError(
            f"{name!r} belongs to {n.org}.{n.product}, but this workspace is {ws.org}.{ws.product} "
            f"({ws.root / 'scaffold.toml'})",
            hint=f"use a name starting with {ws.org}.{ws.product}. (e.g. {ws.org}.{ws.product}.{n.kind}-{n.name}-{n.version})",
        )
    rel = f"proto/{n.proto_path}"
    target = ws.root / rel
    if target.exists() and not force:
        raise ConflictError(f"{target} already exists", hint="pass --force to overwrite it")
    if n.kind == "resources":
        r = names.nouns(n.name)
        text = render("proto/resources.proto.j2", n=n, r=r, service=f"{r.plural_type}Service",
                      resource_type=f"{n.name}.{n.product}.{n.org}/{r.type_name}")
    else:
        text = render(
            "proto/services.proto.j2",
            n=n,
            s={"service": f"{_camel(n.name)}Service", "words": " ".join(n.words)},
        )
    plan = Plan()
    plan.add(rel, text, FileOwner.USER, force=force)
    return target, write(ws.root, plan, dry_run=dry_run)


def resolve(
    ws: Workspace,
    name: str | None,
    proto_files: list[Path] | None = None,
    includes: list[Path] | None = None,
    all_protos: bool = False,
) -> protoc.Source:
    """Turn NAME, ``--proto FILE -I DIR`` or ``--all`` into the files protoc compiles."""
    given = sum(bool(x) for x in (name, proto_files, all_protos))
    if given != 1:
        raise UsageError(
            f"say which proto: a NAME (e.g. {names.example(ws.org, ws.product)}), --proto FILE, or --all"
        )
    if proto_files:
        return protoc.source_for(list(proto_files), list(includes or []), (ws.proto_root,) if ws.proto_root.is_dir() else ())
    if all_protos:
        found = sorted(p for p in ws.proto_root.rglob("*.proto")) if ws.proto_root.is_dir() else []
        if not found:
            raise UsageError(
                f"no .proto files under {ws.proto_root}",
                hint="create one with `scaffold proto create ORG.PRODUCT.KIND-NAME-VERSION`",
            )
        return protoc.source_for(found, list(includes or []), (ws.proto_root,))
    n = names.parse(name, ws.org, ws.product)
    path = ws.proto_root / n.proto_path
    if not path.is_file():
        raise UsageError(
            f"no proto for {name} at {path}",
            hint=f"create it with `scaffold proto create {name}`, or pass --proto FILE",
        )
    return protoc.source_for([path], list(includes or []), (ws.proto_root,))


def descriptor_path(ws: Workspace, virtual: str) -> Path:
    return ws.descriptor_root / (virtual[: -len(".proto")] + ".binpb")


def gen(ws: Workspace, source: protoc.Source, *, dry_run: bool = False) -> list[Outcome]:
    """Generate stubs for the sources (and their local imports) plus a descriptor set."""
    files = protoc.local_closure(source)
    plan = Plan()
    result = protoc.compile_source(source, files=files)
    data = result.descriptors
    folders: set[PurePosixPath] = set()
    for rel, stub in result.stubs.items():
        plan.add(f"protobuf/python/{rel}", stub, FileOwner.GENERATED)
        folders.update(p for p in PurePosixPath(rel).parents if p != PurePosixPath("."))
    for folder in sorted(folders):
        if folder.parts[0] in _namespace_owned():
            continue
        plan.add(f"protobuf/python/{folder.as_posix()}/__init__.py", "", FileOwner.GENERATED)
    for target in source.files:
        single = protoc.Source((target,), source.includes)
        rel = descriptor_path(ws, target).relative_to(ws.root).as_posix()
        same = len(source.files) == 1 and files == source.files
        plan.add(rel, data if same else protoc.descriptor_set(single), FileOwner.GENERATED)
    return write(ws.root, plan, dry_run=dry_run)


def _namespace_owned() -> frozenset[str]:
    """Top-level package names installed packages share as namespaces; never shadow them."""
    return frozenset({"google", "grpc", "grpc_tools"})


def load_api(source: protoc.Source):
    """Compile in memory and build the frozen view model for the source files."""
    from generator import model

    return model.build(protoc.descriptor_set(source), source.files)


