"""``scaffold neuron deploy``: build the image with Cloud Build, then terraform init/apply.

The steps are computed first as a :class:`DeployPlan` (what ``--dry-run`` prints); running
them checks the tools and credentials up front, so a missing ``gcloud`` or ``terraform``, no
login or no project each stop with one message before anything runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from generator.errors import ToolError, UsageError
from generator.workspace import Workspace

DIGEST = "<digest of the image just built>"


@dataclass(frozen=True)
class Step:
    what: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class DeployPlan:
    image: str
    variables: tuple[tuple[str, str], ...]
    steps: tuple[Step, ...]


def make_plan(ws: Workspace, root: Path, project: str | None, region: str | None, tag: str | None,
              repository: str = "neurons") -> DeployPlan:
    project = project or ws.gcp_project
    if not project:
        raise UsageError(
            "no Google Cloud project: pass --project P",
            hint="or set [gcp] project in scaffold.toml (scaffold init --gcp-project P)",
        )
    region = region or ws.region
    tag = tag or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    image = f"{region}-docker.pkg.dev/{project}/{repository}/{root.name}:{tag}"
    tf = root / "terraform"
    if not (tf / "cloudrun.tf").is_file():
        raise UsageError(f"{tf} has no Terraform", hint="run `scaffold neuron update` to render it")
    variables = (("project_id", project), ("region", region), ("image", f"{image.rsplit(':', 1)[0]}@{DIGEST}"))
    steps = (
        Step("build and push the image with Cloud Build",
             ("gcloud", "builds", "submit", str(root), f"--project={project}", f"--region={region}", f"--tag={image}", "--quiet")),
        Step("look up the digest of the pushed image",
             ("gcloud", "artifacts", "docker", "images", "describe", image, f"--project={project}",
              "--format=value(image_summary.digest)")),
        Step("initialise Terraform", ("terraform", f"-chdir={tf}", "init", "-input=false")),
        Step("apply", ("terraform", f"-chdir={tf}", "apply", "-input=false", "-auto-approve",
                       *(f"-var={k}={v}" for k, v in variables))),
    )
    return DeployPlan(image, variables, steps)


def describe(plan: DeployPlan, echo) -> None:
    echo(f"image:     {plan.image}")
    for k, v in plan.variables:
        echo(f"variable:  {k} = {v}")
    for i, step in enumerate(plan.steps, 1):
        echo(f"step {i}:    {step.what}")
        echo(f"  $ {shlex.join(step.argv)}")


def preflight() -> None:
    """gcloud and terraform on PATH, and gcloud logged in; one message naming the fix."""
    for tool, fix in (
        ("gcloud", "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"),
        ("terraform", "install Terraform 1.5 or later: https://developer.hashicorp.com/terraform/install"),
    ):
        if shutil.which(tool) is None:
            raise ToolError(f"{tool} is not installed (not found on PATH)", hint=fix)
    r = subprocess.run(["gcloud", "auth", "print-access-token", "--quiet"], capture_output=True, text=True,
                       check=False, env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"})
    if r.returncode != 0 or not r.stdout.strip():
        raise ToolError(
            "no Google Cloud credentials: gcloud is not logged in",
            hint="run `gcloud auth login` (Cloud Build) and `gcloud auth application-default login` (Terraform)",
        )


def run(plan: DeployPlan, echo) -> None:
    preflight()
    digest = ""
    for i, step in enumerate(plan.steps, 1):
        argv = tuple(a.replace(DIGEST, digest) for a in step.argv)
        echo(f"step {i}: {step.what}")
        capture = step.argv[1:3] == ("artifacts", "docker")
        r = subprocess.run(argv, capture_output=capture, text=True, check=False)
        if r.returncode != 0:
            raise ToolError(f"step {i} ({step.what}) failed with exit code {r.returncode}: {shlex.join(argv)}",
                            hint=(r.stderr or "").strip()[-500:] or None)
        if capture:
            digest = r.stdout.strip()
            if not digest.startswith("sha256:"):
                raise ToolError(f"could not read the digest of {plan.image}: {r.stdout.strip()!r}")
