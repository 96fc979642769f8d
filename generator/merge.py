"""Add what is new to user-owned files, never changing a line the user wrote.

``scaffold neuron update`` renders the neuron as if new, then, for each user-owned file that
already exists, this module works out what the proto added since: a stub for each new custom
RPC inside the user's servicer class (standard methods live in the generated base.py), a whole
class for a new service, imports the new code needs, It edits the
syntax tree with libcst and only appends. User methods whose RPC the proto no longer has, or
whose request type changed, are reported, never deleted.

Neurons made before base.py existed (scaffold 0.1) are migrated: their imports of the old
in-tree ``runtime`` package are rewritten to ``scaffold_runtime``; nothing else changes.
"""

from __future__ import annotations

from pathlib import Path

from generator.errors import ConflictError
from generator.writer import FileOwner, Plan, PlannedFile


class _Run:
    """What one merge found: notes for the user and the stubs it added."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.new_stubs: set[str] = set()  # "Service.Method" stubs added to methods.py


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
    if "grpc" in wanted_aliases and "grpc" not in have:
        lines.append(cst.parse_statement("import grpc\n"))
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
    return {imp.alias for imp in neuron.imports if f"{imp.alias}." in text} | ({"grpc"} if "grpc." in text else set())


def _annotation(fn, param: str) -> str:
    """The annotation text of parameter ``param`` of a libcst FunctionDef ("" if none)."""
    import libcst as cst

    for p in fn.params.params:
        if p.name.value == param and p.annotation is not None:
            return cst.Module([]).code_for_node(p.annotation.annotation)
    return ""


def _merge_methods(path: Path, neuron, run: _Run) -> tuple[str, list[str]]:
    import libcst as cst

    from generator.render import environment

    module = _parse(path)
    original_code = module.code
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
            run.new_stubs.update(f"{name}.{m.method.name}" for m in svc.custom_methods)
            continue
        functions = {s.name.value: s for s in classes[name].body.body if isinstance(s, cst.FunctionDef)}
        base_text = module.code_for_node(classes[name].bases[0]) if classes[name].bases else ""
        old_style = "base." not in base_text  # a 0.1 servicer: subclasses the grpc servicer itself
        for m in svc.methods:
            fn = functions.get(m.method.name)
            if fn is not None:
                given = _annotation(fn, "request") or _annotation(fn, "request_iterator")
                if given and m.request not in given:
                    run.notes.append(f"{path.name}: {name}.{m.method.name} takes {given}, but the proto now sends "
                                     f"{m.request}: update your override")
                if m.store is not None and not old_style and "TODO: implement" in module.code_for_node(fn):
                    run.notes.append(f"{path.name}: {name}.{m.method.name} is still a stub, but base.py now implements "
                                     "it on Firestore: delete the stub to use it")
                continue
            if m.store is not None and not old_style:
                continue  # the generated base implements it
            if m.store is not None:
                m = type(m)(m.method, m.request, m.response, None)  # an old-style class: a stub
            text = _formatted_member(method_tpl.render(m=m, neuron=neuron), path)
            new_text += text
            snippet = cst.parse_module("class _New:\n" + text)
            additions.setdefault(name, []).extend(snippet.body[0].body.body)
            added.append(f"{name}.{m.method.name}")
            run.new_stubs.add(f"{name}.{m.method.name}")
        rpcs = {m.method.name for m in svc.methods}
        for gone in sorted(set(functions) - rpcs - {"__init__"}):
            if not gone.startswith("_") and gone[:1].isupper():
                run.notes.append(f"{path.name}: {name}.{gone} is not an RPC of the proto any more; kept as you wrote it "
                                 "(delete it when you no longer need it)")
        if old_style:
            run.notes.append(f"{path.name}: {name} subclasses {base_text or 'no base'}; make it subclass "
                             f"base.{svc.base_class} to get the generated standard methods")

    class Adder(cst.CSTTransformer):
        def leave_ClassDef(self, original, updated):
            extra = additions.get(updated.name.value)
            if not extra:
                return updated
            body = [s for s in updated.body.body if not _is_pass(s)]
            return updated.with_changes(body=updated.body.with_changes(body=[*body, *extra]))

    module = module.visit(Adder())
    module = _add_imports(module, neuron, _aliases_in(new_text, neuron), "Iterator[" in new_text)
    if new_classes and "base" not in _imported_names(module):
        module = _append_import(module, "import base\n")
    code = module.code
    for body in new_classes:
        code = code.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    if code != original_code:
        from generator.pyformat import sort_imports

        config_path = path.parent / "ruff.toml"
        if config_path.is_file():
            code = sort_imports(code, config_path.read_text(encoding="utf-8"), path.name)
    return code, added


def _formatted_member(text: str, path: Path) -> str:
    """A rendered class member, formatted as the neuron's ruff.toml wants (the user's own lines
    are never reformatted: only what scaffold adds)."""
    from generator.pyformat import format_sources

    config_path = path.parent / "ruff.toml"
    config = config_path.read_text(encoding="utf-8") if config_path.is_file() else "line-length = 120\n"
    out = format_sources({"member.py": "class _New:\n" + text}, config)["member.py"]
    return "\n" + out.split("\n", 1)[1].strip("\n") + "\n"


def _is_pass(stmt) -> bool:
    import libcst as cst

    return isinstance(stmt, cst.SimpleStatementLine) and all(isinstance(x, cst.Pass) for x in stmt.body)


def _append_import(module, text: str):
    import libcst as cst

    body = list(module.body)
    last_import = max((i for i, stmt in enumerate(body) if isinstance(stmt, cst.SimpleStatementLine)
                       and any(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body)), default=-1)
    body.insert(last_import + 1, cst.parse_statement(text))
    return module.with_changes(body=body)


def _functions(module) -> set[str]:
    import libcst as cst

    return {s.name.value for s in module.body if isinstance(s, cst.FunctionDef)}


def _snake(name: str) -> str:
    from generator.render import snake

    return snake(name)


def migrate_runtime_imports(text: str) -> str:
    """Rewrite imports of a 0.1 neuron's in-tree ``runtime`` package to ``scaffold_runtime``."""
    import libcst as cst

    class Rewriter(cst.CSTTransformer):
        def leave_ImportFrom(self, original, updated):
            if updated.module is None or updated.relative:
                return updated
            full = cst.helpers.get_full_name_for_node(updated.module) or ""
            if full == "runtime" or full.startswith("runtime."):
                return updated.with_changes(module=cst.parse_expression("scaffold_" + full))
            return updated

    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError:
        return text
    return module.visit(Rewriter()).code


def merge_user_files(root: Path, plan: Plan, neuron) -> tuple[Plan, list[str]]:
    """Replace planned user-owned files that exist with the user's file plus what is new.

    Returns the new plan and notes for the user (added stubs, overrides to look at).
    """
    run = _Run()
    merged = Plan()
    for f in plan.files:
        target = root / f.path
        if f.owner is not FileOwner.USER or not target.exists():
            merged.files.append(f)
            continue
        original = target.read_text(encoding="utf-8")
        migrated = migrate_runtime_imports(original) if "runtime" in original else original
        if migrated != original:
            run.notes.append(f"{f.path}: imports of the old runtime/ folder now use scaffold_runtime")
            target_text = migrated
        else:
            target_text = original
        if f.path == "methods.py":
            code, added = _merge_methods_text(target, target_text, neuron, run)
        else:  # user tests: scaffold's tests of stubs live in the generated contract files
            code, added = target_text, []
        for a in added:
            run.notes.append(f"{f.path}: added {a}")
        if code != original:
            merged.files.append(PlannedFile(f.path, code, FileOwner.USER, replace=True))
        else:
            merged.files.append(f)
    return merged, run.notes


def _with_text(path: Path, text: str, fn, *args):
    """Run a merge step on ``text`` as if it were the content of ``path``."""
    import tempfile

    if path.read_text(encoding="utf-8") == text:
        return fn(path, *args)
    with tempfile.TemporaryDirectory(prefix="scaffold-merge-") as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(text, encoding="utf-8")
        return fn(copy, *args)


def _merge_methods_text(path: Path, text: str, neuron, run: _Run):
    return _with_text(path, text, _merge_methods, neuron, run)
