"""What made a neuron: ``scaffold-neuron.toml``, a small file committed with the neuron.

It records the scaffold and scaffold-runtime versions, the proto source (so ``neuron update
--all`` and ``neuron check --all`` can rebuild every neuron without arguments), a hash of the
compiled proto descriptors, and a sha256 per generated file. With it, scaffold can tell a
hand-edited generated file (a conflict), a proto that changed since the last generation, a
runtime older than the one installed, and an attempt to downgrade.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

FILENAME = "scaffold-neuron.toml"


def sha256(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Record:
    scaffold: str
    runtime: str
    descriptors: str  # sha256 of the FileDescriptorSet the neuron was generated from
    name: str = ""  # ORG.PRODUCT.KIND-NAME-VERSION, when made from a name
    protos: tuple[str, ...] = ()  # --proto files (workspace-relative when inside it)
    includes: tuple[str, ...] = ()  # -I folders, likewise
    out: str = ""  # the folder under neurons/
    files: dict[str, str] = field(default_factory=dict)  # generated file -> sha256
    # [stubs]: set when the proto's stubs come from a released package (`--stubs released`)
    stubs_distribution: str = ""
    stubs_version: str = ""
    stubs_protos: tuple[str, ...] = ()

    def render(self) -> str:
        def q(value: str) -> str:
            return json.dumps(value, ensure_ascii=False)

        def arr(values) -> str:
            return "[" + ", ".join(q(v) for v in values) + "]"

        lines = [
            "# What made this neuron; written by scaffold, commit it. `scaffold neuron check` compares",
            "# it with the proto and the installed scaffold; `scaffold neuron update` rewrites it.",
            f"scaffold = {q(self.scaffold)}",
            f"runtime = {q(self.runtime)}",
            f"descriptors = {q(self.descriptors)}",
            "",
            "[source]",
            f"name = {q(self.name)}",
            f"protos = {arr(self.protos)}",
            f"includes = {arr(self.includes)}",
            f"out = {q(self.out)}",
            "",
        ]
        if self.stubs_distribution:
            lines += [
                "[stubs]  # the proto's stubs are installed from this release, not carried in protobuf/",
                f"distribution = {q(self.stubs_distribution)}",
                f"version = {q(self.stubs_version)}",
                f"protos = {arr(self.stubs_protos)}",
                "",
            ]
        lines += [
            "[files]  # sha256 of each generated file as scaffold wrote it",
        ]
        lines += [f"{q(path)} = {q(digest)}" for path, digest in sorted(self.files.items())]
        return "\n".join(lines) + "\n"


def load(root: Path) -> Record | None:
    """The record in ``root``, or None for a neuron made before records existed."""
    import tomllib

    path = root / FILENAME
    if not path.is_file():
        return None
    from generator.errors import ConflictError

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        source = data.get("source", {})
        stubs = data.get("stubs", {})
        return Record(
            scaffold=str(data["scaffold"]),
            runtime=str(data["runtime"]),
            descriptors=str(data["descriptors"]),
            name=str(source.get("name", "")),
            protos=tuple(str(p) for p in source.get("protos", [])),
            includes=tuple(str(p) for p in source.get("includes", [])),
            out=str(source.get("out", "")),
            files={str(k): str(v) for k, v in data.get("files", {}).items()},
            stubs_distribution=str(stubs.get("distribution", "")),
            stubs_version=str(stubs.get("version", "")),
            stubs_protos=tuple(str(p) for p in stubs.get("protos", [])),
        )
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, AttributeError) as exc:
        raise ConflictError(f"cannot read {path}: {exc}",
                            hint="restore it from version control, or delete it and run `scaffold neuron update --force`") from None


def version_tuple(version: str) -> tuple[int, ...]:
    """``0.10.2`` -> (0, 10, 2); pre-release or odd parts count as 0."""
    out = []
    for part in version.split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)
