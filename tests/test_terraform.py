"""Deploy with Terraform, checked by every offline means: fmt, parsing, policy scans, dry run.

The Google provider cannot be downloaded here, so `terraform validate` and `plan` cannot run;
what we ship is parsed and its settings asserted instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, need

BOOKS = "xmpl.br.resources-books-v1"
NEURON_VARIABLES = {
    "project_id", "region", "service_name", "image", "min_instances", "max_instances", "concurrency",
    "cpu", "memory", "timeout", "env", "secret_env", "allow_unauthenticated", "invoker_members",
    "deletion_protection", "gateway", "gateway_allow_unauthenticated", "firestore_location", "ingress",
    "gateway_vpc_network", "gateway_vpc_subnetwork", "gateway_mode",
}


@pytest.fixture
def deployed_ws(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    assert scaffold("neuron", "create", BOOKS).code == 0
    return workspace


def parse(path: Path) -> dict:
    import hcl2

    with path.open() as fh:
        return hcl2.load(fh)


def blocks(doc: dict, kind: str) -> dict:
    """{name: body} of resource/variable/output blocks; hcl2 keeps names quoted in v8."""
    out = {}
    for entry in doc.get(kind, []):
        for name, body in entry.items():
            name = name.strip('"')
            if kind == "resource":
                for rname, rbody in body.items():
                    out[f"{name}.{rname.strip(chr(34))}"] = rbody
            else:
                out[name] = body
    return out


def unq(value):
    return value.strip('"') if isinstance(value, str) else value


def terraform() -> str:
    exe = shutil.which("terraform")
    need(exe is not None, "terraform")
    return exe


def test_every_tf_file_is_formatted(deployed_ws):
    for folder in (REPO / "terraform", deployed_ws):
        r = subprocess.run([terraform(), "fmt", "-check", "-recursive", "-diff", str(folder)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_module_settings(deployed_ws):
    module = deployed_ws / "terraform/modules/grpc-service"
    main = parse(module / "main.tf")
    res = blocks(main, "resource")
    svc = res["google_cloud_run_v2_service.service"]
    (template,) = svc["template"]
    (container,) = template["containers"]
    (port,) = container["ports"]
    assert unq(port["name"]) == '${var.protocol == "grpc" ? "h2c" : "http1"}' and port["container_port"] == "${local.port}"
    assert main["locals"][0]["port"] == 8080
    variables = blocks(parse(module / "variables.tf"), "variable")
    assert unq(variables["protocol"]["default"]) == "grpc"  # h2c unless the gateway asks for http1
    (startup,) = container["startup_probe"]
    grpc_startup = {unq(k): v for d in startup["dynamic"] for k, v in d.items()}["grpc"]
    assert grpc_startup["for_each"] == '${var.protocol == "grpc" ? [1] : []}'
    assert grpc_startup["content"][0]["port"] == "${local.port}"
    assert "service" not in grpc_startup["content"][0]  # "" = the whole server
    liveness = {unq(k): v for d in container["dynamic"] for k, v in d.items()}["liveness_probe"]
    assert liveness["content"][0]["grpc"][0]["port"] == "${local.port}"
    envs = {unq(e["name"]): e.get("value") for e in container["env"] if "name" in e}
    assert envs["GOOGLE_CLOUD_PROJECT"] == "${var.project_id}"
    roles = res["google_project_iam_member.roles"]
    assert roles["for_each"] == "${toset(var.project_roles)}"
    assert variables["project_roles"]["default"] == []  # no project-wide role by default
    # Firestore: the service's own database, and datastore.user on that database alone.
    database = res["google_firestore_database.own"]
    assert unq(database["name"]) == "${var.firestore_database}" and unq(database["type"]) == "FIRESTORE_NATIVE"
    firestore = res["google_project_iam_member.firestore"]
    assert unq(firestore["role"]) == "roles/datastore.user"
    (condition,) = firestore["condition"]
    assert condition["expression"] == '"resource.name == \\"projects/${var.project_id}/databases/${var.firestore_database}\\""'
    assert main["locals"][0]["database_env"] == '${var.firestore_database == "" ? {} : {FIRESTORE_DATABASE = var.firestore_database}}'
    # Concurrency and workers together: the server admits var.concurrency calls, with 2 workers more.
    grpc_env = main["locals"][0]["grpc_env"]
    assert "GRPC_MAX_CONCURRENT_RPCS = tostring(var.concurrency)" in grpc_env
    assert "GRPC_MAX_WORKERS = tostring(var.concurrency + 2)" in grpc_env
    assert "so a liveness probe or a refusal always finds a free" in (module / "main.tf").read_text()
    assert unq(svc["ingress"]) == "${local.ingress[var.ingress]}"
    ingress = {unq(k): unq(v) for k, v in main["locals"][0]["ingress"].items()}
    assert ingress["internal-and-cloud-load-balancing"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    assert unq(variables["ingress"]["default"]) == "all"
    assert unq(template["service_account"]) == "${google_service_account.service.email}"
    public = res["google_cloud_run_v2_service_iam_member.public"]
    assert unq(public["member"]) == "allUsers" and public["count"] == "${var.allow_unauthenticated ? 1 : 0}"
    invokers = res["google_cloud_run_v2_service_iam_member.invokers"]
    assert unq(invokers["role"]) == "roles/run.invoker" and "var.invoker_members" in invokers["for_each"]
    outputs = blocks(parse(module / "outputs.tf"), "output")
    assert set(outputs) == {"url", "grpc_target", "service_account_email"}


def test_neuron_terraform(deployed_ws):
    tf = deployed_ws / "neurons/resources-books-v1/terraform"
    main = parse(tf / "main.tf")
    settings = main["terraform"][0]
    assert unq(settings["required_version"]).startswith(">=")
    google = settings["required_providers"][0]["google"]
    assert unq(google["source"]) == "hashicorp/google" and "<" in unq(google["version"])
    assert 'backend "gcs"' in (tf / "main.tf").read_text()  # commented, with how to enable it
    variables = blocks(parse(tf / "variables.tf"), "variable")
    assert set(variables) == NEURON_VARIABLES
    for name, body in variables.items():
        assert body.get("description") and body.get("type"), name
    assert variables["allow_unauthenticated"]["default"] is False
    assert variables["invoker_members"]["default"] == []
    for name in ("region", "memory", "cpu", "project_id", "invoker_members"):
        assert variables[name].get("validation"), name
    module = {k.strip(chr(34)): v for k, v in parse(tf / "cloudrun.tf")["module"][0].items()}["service"]
    assert unq(module["source"]) == "../../../terraform/modules/grpc-service"
    assert (tf / unq(module["source"])).resolve().is_dir()
    assert module["allow_unauthenticated"] == "${var.allow_unauthenticated}"
    outputs = blocks(parse(tf / "outputs.tf"), "output")
    assert set(outputs) == {"url", "grpc_target", "service_account_email", "gateway_url"}
    assert variables["gateway"]["default"] is False
    gateway = {k.strip(chr(34)): v for k, v in parse(tf / "cloudrun.tf")["module"][1].items()}["gateway"]
    assert unq(gateway["protocol"]) == "http" and gateway["project_roles"] == []
    assert gateway["count"] == "${var.gateway ? 1 : 0}"
    # gateway_mode: in-process (default) serves the methods itself with the service's database
    # (access, not a second database), secrets and environment; proxy reads no database.
    assert unq(variables["gateway_mode"]["default"]) == "in-process" and variables["gateway_mode"].get("validation")
    assert gateway["firestore_database"] == '${local.gateway_in_process ? var.service_name : ""}'
    assert gateway["firestore_database_create"] is False
    assert "local.service_secret_env" in gateway["secret_env"] and "local.gateway_in_process" in gateway["secret_env"]
    assert "local.service_env" in gateway["env"] and "local.gateway_proxy_env" in gateway["env"]
    grant = blocks(parse(tf / "cloudrun.tf"), "resource")["google_cloud_run_v2_service_iam_member.gateway_calls_service"]
    assert grant["count"] == "${var.gateway && !local.gateway_in_process ? 1 : 0}"  # no run.invoker when in-process
    shared = (tf / unq(module["source"]) / "main.tf").read_text()
    assert "var.firestore_database_create ? 1 : 0" in shared  # the module grants access without creating it
    # Its own Firestore database, named after the service.
    assert module["firestore_database"] == "${var.service_name}"
    # Ingress: internal-and-cloud-load-balancing when the gateway is the caller and reaches the
    # service through a VPC; all otherwise (an internal service would refuse a gateway outside one).
    cloudrun = parse(tf / "cloudrun.tf")
    assert module["ingress"] == "${local.ingress}"
    ingress = cloudrun["locals"][0]["ingress"]
    assert '"internal-and-cloud-load-balancing"' in ingress and "var.gateway_vpc_subnetwork" in ingress
    assert unq(variables["ingress"]["default"]) == "" and variables["concurrency"]["default"] == 14
    assert "GRPC_MAX_WORKERS to this + 2" in (tf / "variables.tf").read_text()  # the reason, next to the value
    # PAGE_TOKEN_KEY: a generated secret in Secret Manager, mounted by reference.
    res = blocks(cloudrun, "resource")
    assert res["random_password.page_token_key"]["length"] >= 32
    assert unq(res["google_secret_manager_secret.page_token_key"]["secret_id"]) == "${var.service_name}-page-token-key"
    assert unq(res["google_secret_manager_secret_version.page_token_key"]["secret_data"]) == "${random_password.page_token_key.result}"
    assert module["secret_env"] == "${local.service_secret_env}"
    secret_env = cloudrun["locals"][0]["service_secret_env"]
    assert "PAGE_TOKEN_KEY" in secret_env and "google_secret_manager_secret.page_token_key.secret_id" in secret_env
    providers = settings["required_providers"][0]
    assert unq(providers["random"]["source"]) == "hashicorp/random"


def test_dockerignore_keeps_secrets_out_of_the_image(deployed_ws):
    import fnmatch

    root = deployed_ws / "neurons/resources-books-v1"
    patterns = [p for p in (root / ".dockerignore").read_text().splitlines() if p and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p.replace("**/", "")) or fnmatch.fnmatch(path, p) or path.startswith(p.rstrip("/") + "/")
                   or fnmatch.fnmatch(path.rsplit("/", 1)[-1], p.replace("**/", "")) for p in patterns)

    for secret in ("certs/server.key", "certs/ca.pem", "tls.key", "sub/dir/client.pem", ".env", ".env.local", "sub/.env"):
        assert ignored(secret), secret
    for kept in ("server.py", "methods.py", "runtime/auth.py", "requirements.txt"):
        assert not ignored(kept), kept


def test_product_terraform(deployed_ws):
    res = blocks(parse(deployed_ws / "terraform/product/main.tf"), "resource")
    assert unq(res["google_firestore_database.default"]["type"]) == "FIRESTORE_NATIVE"
    assert unq(res["google_artifact_registry_repository.neurons"]["format"]) == "DOCKER"
    text = (deployed_ws / "terraform/product/main.tf").read_text()
    for api in ("run", "firestore", "artifactregistry", "cloudbuild", "iam"):
        assert f'"{api}.googleapis.com"' in text


def test_checkov_finds_nothing_unexplained(deployed_ws):
    checkov = REPO / ".cache/checkov-venv/bin/checkov"
    need(checkov.exists(), "checkov (scripts/test.sh installs it in .cache/checkov-venv)")
    r = subprocess.run([str(checkov), "-d", str(deployed_ws), "--framework", "terraform", "dockerfile",
                        "--compact", "--quiet", "--skip-download"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    text = (deployed_ws / "neurons/resources-books-v1/Dockerfile").read_text()
    assert "checkov:skip=CKV_DOCKER_2: " in text  # each accepted finding carries its reason


def test_deploy_dry_run_prints_the_exact_commands(deployed_ws, scaffold):
    r = scaffold("neuron", "deploy", BOOKS, "--project", "xmpl-br-dev", "--region", "europe-west1", "--tag", "v7", "--dry-run")
    assert r.code == 0, r.output
    root = deployed_ws / "neurons/resources-books-v1"
    image = "europe-west1-docker.pkg.dev/xmpl-br-dev/neurons/resources-books-v1"
    assert r.out.splitlines() == [
        f"image:     {image}:v7",
        "variable:  project_id = xmpl-br-dev",
        "variable:  region = europe-west1",
        f"variable:  image = {image}@<digest of the image just built>",
        "step 1:    build and push the image with Cloud Build",
        f"  $ gcloud builds submit {root} --project=xmpl-br-dev --region=europe-west1 --tag={image}:v7 --quiet",
        "step 2:    look up the digest of the pushed image",
        f"  $ gcloud artifacts docker images describe {image}:v7 --project=xmpl-br-dev '--format=value(image_summary.digest)'",
        "step 3:    initialise Terraform",
        f"  $ terraform -chdir={root}/terraform init -input=false",
        "step 4:    apply",
        (f"  $ terraform -chdir={root}/terraform apply -input=false -auto-approve -var=project_id=xmpl-br-dev "
         f"-var=region=europe-west1 '-var=image={image}@<digest of the image just built>'"),
    ]


def test_deploy_without_a_project_says_how_to_give_one(deployed_ws, scaffold):
    r = scaffold("neuron", "deploy", BOOKS, "--dry-run")
    assert r.code == 2 and "--project" in r.err and "scaffold.toml" in r.err


def deploy_cli(ws: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "generator", "neuron", "deploy", BOOKS, "--project", "xmpl-br-dev", "--tag", "t"],
                          cwd=ws, env=env, capture_output=True, text=True, timeout=120)


def test_deploy_without_terraform_or_gcloud_stops_before_running(deployed_ws, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "gcloud").symlink_to(shutil.which("gcloud") or "/bin/false")
    r = deploy_cli(deployed_ws, {**os.environ, "PATH": f"{bare}:/usr/bin/env-nothing"})
    assert r.returncode == 1 and "terraform is not installed" in r.stderr and "Traceback" not in r.stderr
    r = deploy_cli(deployed_ws, {**os.environ, "PATH": "/nonexistent"})
    assert r.returncode == 1 and "gcloud is not installed" in r.stderr


def test_deploy_without_credentials_says_how_to_log_in(deployed_ws, tmp_path):
    need(shutil.which("gcloud") is not None and shutil.which("terraform") is not None, "gcloud and terraform")
    config = tmp_path / "gcloud-config"
    config.mkdir()
    env = {**os.environ, "CLOUDSDK_CONFIG": str(config)}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    r = deploy_cli(deployed_ws, env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no Google Cloud credentials" in r.stderr and "gcloud auth login" in r.stderr
    assert "step 1: build" not in r.stdout  # nothing ran
