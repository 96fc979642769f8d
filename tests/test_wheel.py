"""The built wheel, installed in a fresh virtual environment, does the whole first job.

A template left out of the wheel fails here, not on a user's machine.
"""

import os
import subprocess
import sys
import venv

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(REPO)])
    (wheel,) = (tmp / "dist").glob("scaffold-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel)])
    return env_dir


def test_installed_scaffold_runs_the_first_job(installed, tmp_path):
    exe = str(installed / "bin" / "scaffold")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = run([str(installed / "bin" / "python"), "-c", "import generator; print(generator.__file__)"], cwd=tmp_path, env=env)
    assert str(installed) in where.stdout  # the wheel, not the source checkout
    assert "proto" in run([exe, "--help"], cwd=tmp_path, env=env).stdout
    run([exe, "init", "ws", "--org", "xmpl", "--product", "br"], cwd=tmp_path, env=env)
    ws = tmp_path / "ws"
    run([exe, "proto", "create", "xmpl.br.resources-books-v1"], cwd=ws, env=env)
    run([exe, "proto", "gen", "xmpl.br.resources-books-v1"], cwd=ws, env=env)
    probe = run(
        [str(installed / "bin" / "python"), "-c", "from xmpl.br.resources.books.v1 import books_pb2_grpc; print('ok')"],
        cwd=ws, env={**env, "PYTHONPATH": str(ws / "protobuf/python")},
    )
    assert probe.stdout.strip() == "ok"
