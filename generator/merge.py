"""Add what is new to user-owned files, never changing a line the user wrote.

``scaffold neuron update`` renders the neuron as if new, then, for each user-owned file that
already exists, this module works out what the proto added since: a stub (or, when the store
it needs is already set up, the standard implementation) for each new RPC inside the user's
own servicer class, a whole class for a new service, imports the new code needs, and tests for
new stubs. It edits the syntax tree with libcst and only appends; RPCs the proto no longer has
are reported, never deleted.
"""

from __future__ import annotations

from pathlib import Path

from generator.errors import ConflictError
from generator.writer import FileOwner, Plan, PlannedFile

_NOTES: list[str] = []
_NEW_STUBS: set[str] = set()  # "Service.Method" stubs the current run added to methods.py


def _parse(path: Path):
    import libcst as cst

    try:
        return cst.parse_module(path.read_text(encoding="utf-8"))
    except cst.ParserSyntaxError as exc:
        raise ConflictError(
            f"{path}:{exc.raw_line}:{exc.raw_column}: cannot read your file: {exc.message}",
            hint="fix the syntax error, then run the update again (nothing was written)",
        ) from None


def _imported_names(module) -> set[str]:
    import libcst as cst

    names: set[str] = set()
    for stmt in module.body:
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
                    for alias in small.names:
                        names.add(alias.asname.name.value if alias.asname else alias.name.value)
                elif isinstance(small, cst.Import):
                    for alias in small.names:
                        names.add((alias.asname.name.value if alias.asname else cst.helpers.get_full_name_for_node(alias.name)).split(".")[0])
    return names


def _add_imports(module, neuron, wanted_aliases: set[str], needs_iterator: bool = False):
    """Insert ``from pkg import mod`` lines for aliases the new code uses but the file lacks."""
    import libcst as cst

    have = _imported_names(module)
    lines = []
    if needs_iterator and "Iterator" not in have:
        lines.append(cst.parse_statement("from collections.abc import Iterator\n"))
    for imp in neuron.imports:
        if imp.alias in wanted_aliases and imp.alias not in have:
            alias = f" as {imp.alias}" if imp.alias != imp.name else ""
            text = f"from {imp.package} import {imp.name}{alias}" if imp.package else f"import {imp.name}{alias}"
            lines.append(cst.parse_statement(text + "\n"))
    if not lines:
        return module
    body = list(module.body)
    last_import = -1
    for i, stmt in enumerate(body):
        if isinstance(stmt, cst.SimpleStatementLine) and any(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body):
            last_import = i
    body[last_import + 1:last_import + 1] = lines
    return module.with_changes(body=body)


def _methods_of(classdef) -> set[str]:
    import libcst as cst

    return {s.name.value for s in classdef.body.body if isinstance(s, cst.FunctionDef)}


def _class_nodes(module) -> dict:
    import libcst as cst

    return {s.name.value: s for s in module.body if isinstance(s, cst.ClassDef)}


def _aliases_in(text: str, neuron) -> set[str]:
    return {imp.alias for imp in neuron.imports if f"{imp.alias}." in text}


def _merge_methods(path: Path, neuron) -> tuple[str, list[str]]:
    import libcst as cst

    from generator.render import environment

    module = _parse(path)
    classes = _class_nodes(module)
    method_tpl = environment().get_template("neuron/_method.py.j2")
    added: list[str] = []
    new_text = ""
    additions: dict[str, list] = {}
    new_classes: list[str] = []
    for svc in neuron.services:
        name = svc.service.name
        if name not in classes:
            body = environment().get_template("neuron/_servicer.py.j2").render(s=svc, neuron=neuron)
            new_classes.append(body)
            new_text += body
            added.append(f"class {name} (new service)")
            _NEW_STUBS.update(f"{name}.{m.method.name}" for m in svc.methods if m.store is None)
            continue
        existing = _methods_of(classes[name])
        class_src = module.code_for_node(classes[name])
        for m in svc.methods:
            if m.method.name in existing:
                continue
            if m.store is not None and f"self.{m.store.attr} =" not in class_src:
                m = type(m)(m.method, m.request, m.response, None)  # no store in the user's class: a stub
            text = method_tpl.render(m=m, neuron=neuron)
            new_text += text
            snippet = cst.parse_module("class _New:\n" + text)
            additions.setdefault(name, []).extend(snippet.body[0].body.body)
            added.append(f"{name}.{m.method.name}")
            if m.store is None:
                _NEW_STUBS.add(f"{name}.{m.method.name}")
        for gone in sorted(existing - {m.method.name for m in svc.methods} - {"__init__"}):
            if not gone.startswith("_"):
                _NOTES.append(f"{path.name}: {name}.{gone} is not an RPC of the proto any more; kept as you wrote it")

    class Adder(cst.CSTTransformer):
        def leave_ClassDef(self, original, updated):
            extra = additions.get(updated.name.value)
            if not extra:
                return updated
            return updated.with_changes(body=updated.body.with_changes(body=[*updated.body.body, *extra]))

    module = module.visit(Adder())
    module = _add_imports(module, neuron, _aliases_in(new_text, neuron), "Iterator[" in new_text)
    code = module.code
    for body in new_classes:
        code = code.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    return code, added


def _merge_tests(path: Path, svc, neuron, new_stubs: set[str]) -> tuple[str, list[str]]:
    """Append a test for each RPC whose stub this run added to methods.py (and only those)."""
    from generator.render import environment

    module = _parse(path)
    have = _functions(module)
    tpl = environment().get_template("neuron/tests/_unimplemented.py.j2")
    methods_src = ""
    added = []
    for m in svc.methods:
        test_name = f"test_{_snake(m.method.name)}_is_a_stub_until_implemented"
        if f"{svc.service.name}.{m.method.name}" in new_stubs and test_name not in have:
            methods_src += tpl.render(m=m, neuron=neuron)
            added.append(test_name)
    if not added:
        return module.code, []

    module = _add_imports(module, neuron, _aliases_in(methods_src, neuron))
    return module.code.rstrip("\n") + "\n" + methods_src.rstrip("\n") + "\n", added


def _functions(module) -> set[str]:
    import libcst as cst

    return {s.name.value for s in module.body if isinstance(s, cst.FunctionDef)}


def _snake(name: str) -> str:
    from generator.render import snake

    return snake(name)


def merge_user_files(root: Path, plan: Plan, neuron) -> Plan:
    """Replace planned user-owned files that exist with the user's file plus what is new."""
    _NOTES.clear()
    _NEW_STUBS.clear()
    merged = Plan()
    tests_by_path = {f"tests/{s.test_module}.py": s for s in neuron.services}
    for f in plan.files:
        target = root / f.path
        if f.owner is not FileOwner.USER or not target.exists():
            merged.files.append(f)
            continue
        if f.path == "methods.py":
            code, added = _merge_methods(target, neuron)
        elif f.path in tests_by_path:
            code, added = _merge_tests(target, tests_by_path[f.path], neuron, _NEW_STUBS)
        else:
            merged.files.append(f)
            continue
        for a in added:
            _NOTES.append(f"{f.path}: added {a}")
        if added:
            merged.files.append(PlannedFile(f.path, code, FileOwner.USER, replace=True))
        else:
            merged.files.append(f)
    return merged
