"""The generator's layers: a module imports only from its own layer or the ones below it, so the
pipeline (proto -> model -> render -> write, with thin commands on top) stays visible and a
low-level piece never depends on a command. Checked on the source (imports anywhere in a
module, including the lazy ones inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

GENERATOR = Path(__file__).resolve().parent.parent / "generator"

# Lowest first. Within a layer, modules may import each other (without cycles).
LAYERS = {
    "base": {"errors", "names", "provenance", "pyformat", "writer", "runtime_dist", "pins", "usercache"},
    "model": {"protoc", "protoc_cache", "schema", "aip", "model"},
    "render": {"render", "render_cache", "openapi", "indexes"},
    "library": {"workspace", "proto", "lint", "merge", "neuron", "dependencies", "depend", "release", "deploy", "certs",
                "call"},
    "commands": {"cli", "__main__"},
}
RANK = {module: i for i, (_layer, modules) in enumerate(LAYERS.items()) for module in modules}


def imports_of(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "generator":
            out |= {a.name for a in node.names if a.name != "__version__"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("generator."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("generator.")}
    return out


def test_every_module_has_a_layer():
    modules = {p.stem for p in GENERATOR.glob("*.py")} - {"__init__"}
    assert modules - set(RANK) == set(), "give each new generator module a layer in tests/test_layers.py"


def test_no_module_imports_a_higher_layer():
    problems = []
    for path in sorted(GENERATOR.glob("*.py")):
        if path.stem == "__init__":
            continue
        for dep in sorted(imports_of(path)):
            if RANK.get(dep, -1) > RANK[path.stem]:
                problems.append(f"{path.stem} ({_layer(path.stem)}) imports {dep} ({_layer(dep)})")
    assert problems == []


def test_no_import_cycles():
    graph = {p.stem: imports_of(p) for p in GENERATOR.glob("*.py") if p.stem != "__init__"}
    seen: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph.get(node, ())):
            if seen.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in seen:
                visit(dep, [*stack, dep])
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert cycles == []


def _layer(module: str) -> str:
    return next(name for name, modules in LAYERS.items() if module in modules)
