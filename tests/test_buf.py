"""The skeletons pass `buf lint` with the workspace's checked-in buf config."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need


def buf() -> str | None:
    return shutil.which("buf") or (str(Path(sys.executable).parent / "buf") if (Path(sys.executable).parent / "buf").exists() else None)


@pytest.mark.parametrize("name, virtual", [
    ("xmpl.br.resources-books-v1", "xmpl/br/resources/books/v1/books.proto"),
    ("xmpl.br.services-translator-v1", "xmpl/br/services/translator/v1/translator.proto"),
])
def test_skeleton_passes_buf_lint(workspace, scaffold, name, virtual):
    exe = buf()
    need(exe is not None, "buf (pip install buf-bin)")
    assert scaffold("proto", "create", name).code == 0
    assert scaffold("proto", "gen", name).code == 0
    image = workspace / "protobuf/descriptors" / virtual.replace(".proto", ".binpb")
    r = subprocess.run([exe, "lint", str(image), "--config", "proto/buf.yaml", "--path", virtual],
                       cwd=workspace, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_buf_config_exceptions_are_needed(workspace, scaffold):
    """Each exception in buf.yaml is there because the skeleton would fail without it."""
    exe = buf()
    need(exe is not None, "buf (pip install buf-bin)")
    scaffold("proto", "create", "xmpl.br.resources-books-v1")
    scaffold("proto", "gen", "xmpl.br.resources-books-v1")
    strict = workspace / "strict.yaml"
    strict.write_text("version: v2\nlint:\n  use:\n    - STANDARD\n")
    virtual = "xmpl/br/resources/books/v1/books.proto"
    r = subprocess.run([exe, "lint", f"protobuf/descriptors/{virtual[:-6]}.binpb", "--config", str(strict), "--path", virtual],
                       cwd=workspace, capture_output=True, text=True)
    assert r.returncode != 0
    assert "should be named" in r.stdout and "multiple RPCs" in r.stdout
    config = (workspace / "proto/buf.yaml").read_text()
    assert "RPC_RESPONSE_STANDARD_NAME" in config and "RPC_REQUEST_RESPONSE_UNIQUE" in config
