"""Jinja2 environment over the ``templates/`` folder. Renders to strings; never touches disk."""

from __future__ import annotations

import functools
import re
from pathlib import Path

_PKG_TEMPLATES = Path(__file__).parent / "templates"  # inside an installed wheel
_REPO_TEMPLATES = Path(__file__).parent.parent / "templates"  # in a source checkout


def template_root() -> Path:
    root = _PKG_TEMPLATES if _PKG_TEMPLATES.is_dir() else _REPO_TEMPLATES
    if not root.is_dir():  # a broken install: say so instead of a Jinja traceback
        from generator.errors import ToolError

        raise ToolError(
            f"scaffold's templates are missing (looked in {_PKG_TEMPLATES} and {_REPO_TEMPLATES})",
            hint="reinstall scaffold: pip install --force-reinstall scaffold",
        )
    return root


def terraform_files() -> dict[str, str]:
    """The shared Terraform (module and product config), by path under ``terraform/``."""
    pkg = Path(__file__).parent / "terraform"
    root = pkg if pkg.is_dir() else Path(__file__).parent.parent / "terraform"
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.tf"))}


def snake(name: str) -> str:
    """``GetBookRequest`` -> ``get_book_request``."""
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


def pyrepr(value: object) -> str:
    """A Python literal; strings in double quotes, as ruff format would write them."""
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _bytecode_cache(jinja2):
    """Compiled templates cached per user (Jinja checks each template's source checksum and
    writes atomically); None (compile every time) when the folder cannot be made."""
    from generator import usercache

    folder = usercache.directory("jinja")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile every time
    return jinja2.FileSystemBytecodeCache(str(folder))


@functools.cache
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_root())),
        bytecode_cache=_bytecode_cache(jinja2),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["snake"] = snake
    env.filters["pyrepr"] = pyrepr
    return env


def _tidy(text: str) -> str:
    """Collapse runs of 3+ blank lines to 2 and end with exactly one newline."""
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.rstrip("\n") + "\n"


def render(name: str, **context: object) -> str:
    return _tidy(environment().get_template(name).render(**context))


def static_text(name: str) -> str:
    return (template_root() / name).read_text(encoding="utf-8")
