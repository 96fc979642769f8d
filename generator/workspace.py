"""The workspace: a folder with ``scaffold.toml`` that every command finds by walking up."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from generator.errors import ConflictError, UsageError, WorkspaceError
from generator.names import check_identifier

FILENAME = "scaffold.toml"
DEFAULT_REGION = "europe-west1"
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
NO_WORKSPACE_HINT = (
    "create one with `scaffold init --org ORG --product PRODUCT` (e.g. --org xmpl --product br), "
    "or run the command inside an existing workspace"
)


@dataclass(frozen=True)
class Workspace:
    root: Path
    org: str
    product: str
    gcp_project: str = ""
    region: str = DEFAULT_REGION
    release_repository_url: str = ""  # [release] repository_url: where `scaffold proto release` uploads
    runtime_index: str = ""  # [runtime] index_url: install scaffold-runtime from this index, not wheels/

    @property
    def proto_root(self) -> Path:
        return self.root / "proto"

    @property
    def python_out(self) -> Path:
        return self.root / "protobuf" / "python"

    @property
    def descriptor_root(self) -> Path:
        return self.root / "protobuf" / "descriptors"

    @property
    def neurons_root(self) -> Path:
        return self.root / "neurons"


def _render(ws: Workspace) -> str:
    return (
        "# scaffold workspace: every scaffold command run below this folder uses it.\n"
        "[workspace]\n"
        f'org = "{ws.org}"\n'
        f'product = "{ws.product}"\n'
        "\n[gcp]\n"
        "# The Google Cloud project and region neurons deploy to.\n"
        f'project = "{ws.gcp_project}"\n'
        f'region = "{ws.region}"\n'
    )


def init(
    directory: Path,
    org: str,
    product: str,
    gcp_project: str = "",
    region: str = DEFAULT_REGION,
    force: bool = False,
) -> Workspace:
    """Write ``scaffold.toml`` (and the buf config) into ``directory``; return the workspace."""
    check_identifier(org, "org")
    check_identifier(product, "product")
    if gcp_project and not _PROJECT_RE.match(gcp_project):
        raise UsageError(
            f"invalid --gcp-project {gcp_project!r}: a Google Cloud project id is 6-30 "
            "lower-case letters, digits or hyphens, starting with a letter (e.g. xmpl-br-dev)"
        )
    if not _REGION_RE.match(region):
        raise UsageError(f"invalid --region {region!r}: expected a region like europe-west1")
    directory = directory.resolve()
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a folder")
    target = directory / FILENAME
    if target.exists() and not force:
        raise ConflictError(
            f"{target} already exists", hint="pass --force to overwrite it"
        )
    ws = Workspace(directory, org, product, gcp_project, region)
    from generator.render import static_text
    from generator.writer import FileOwner, Plan, write

    plan = Plan()
    plan.add(FILENAME, _render(ws), FileOwner.USER, force=force)
    plan.add("proto/buf.yaml", static_text("workspace/buf.yaml"), FileOwner.USER)
    plan.add(".gitignore", static_text("workspace/gitignore"), FileOwner.USER)
    add_terraform(plan)
    write(directory, plan)
    return ws


def add_terraform(plan) -> None:
    """The shared module is generated (rewritten freely); the product config is the user's."""
    from generator.render import terraform_files
    from generator.writer import FileOwner

    for rel, text in terraform_files().items():
        owner = FileOwner.GENERATED if rel.startswith("modules/") else FileOwner.USER
        plan.add(f"terraform/{rel}", text, owner)


def load(path: Path) -> Workspace:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise WorkspaceError(f"cannot read {path}: {exc}", hint="fix the file or re-run scaffold init --force")
    section = data.get("workspace", {})
    gcp = data.get("gcp", {})
    release_url = str(data.get("release", {}).get("repository_url", "")) if isinstance(data.get("release"), dict) else ""
    try:
        org = check_identifier(str(section["org"]), "org")
        product = check_identifier(str(section["product"]), "product")
    except KeyError as exc:
        raise WorkspaceError(
            f"{path}: [workspace] has no {exc.args[0]!r}",
            hint="re-run scaffold init --force with --org and --product",
        ) from None
    except UsageError as exc:
        raise WorkspaceError(f"{path}: {exc.message}") from None
    index = str(data.get("runtime", {}).get("index_url", ""))
    if index and not re.match(r"^https?://\S+$", index):
        raise WorkspaceError(f"{path}: [runtime] index_url {index!r} is not an http(s) URL",
                             hint='e.g. index_url = "https://europe-west1-python.pkg.dev/PROJECT/REPO/simple/"')
    return Workspace(
        path.parent, org, product, str(gcp.get("project", "")), str(gcp.get("region", DEFAULT_REGION)), release_url,
        index,
    )


def find(start: Path | None = None) -> Workspace:
    """Walk up from ``start`` (the current folder) to the nearest ``scaffold.toml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / FILENAME
        if candidate.is_file():
            return load(candidate)
        if candidate.exists():
            raise WorkspaceError(f"{candidate} is not a file: scaffold.toml must be the workspace's settings file",
                                 hint=f"remove or rename that folder, then run `scaffold init {folder}` or restore the file")
    raise WorkspaceError(f"no {FILENAME} found in {here} or any folder above it", hint=NO_WORKSPACE_HINT)
