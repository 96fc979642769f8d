"""Neuron folder names: valid Cloud Run service names, distinct per proto, --out checked at once."""

from __future__ import annotations

from pathlib import Path

import pytest

PROTO = """syntax = "proto3";
package {package};
service {service} {{ rpc Echo(Msg) returns (Msg); }}
message Msg {{ string text = 1; }}
"""


def write_proto(root: Path, rel: str, package: str, service: str = "Echo") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PROTO.format(package=package, service=service))
    return path


@pytest.fixture
def protos(tmp_path) -> Path:
    root = tmp_path / "protos"
    write_proto(root, "top.proto", "top")
    write_proto(root, "a/b/v1/x.proto", "a.b.v1x")
    write_proto(root, "a/b/v1/y.proto", "a.b.v1y")
    return root


def create(scaffold, protos: Path, rel: str, *extra: str, command: str = "create"):
    return scaffold("neuron", command, "--proto", str(protos / rel), "-I", str(protos), *extra)


def test_a_proto_at_the_include_root_gets_its_stem(workspace, scaffold, protos):
    r = create(scaffold, protos, "top.proto")
    assert r.code == 0, r.output
    assert (workspace / "neurons/top/server.py").is_file()
    assert "--out top" in r.out


def test_two_protos_of_one_package_folder_get_distinct_folders(workspace, scaffold, protos):
    assert create(scaffold, protos, "a/b/v1/x.proto").code == 0
    r = create(scaffold, protos, "a/b/v1/y.proto")
    assert r.code == 0, r.output
    assert (workspace / "neurons/a-b-v1-x/protobuf/a/b/v1/x_pb2.py").is_file()
    assert (workspace / "neurons/a-b-v1-y/protobuf/a/b/v1/y_pb2.py").is_file()


def test_a_folder_of_another_proto_is_refused_and_the_hint_works(workspace, scaffold, protos):
    assert create(scaffold, protos, "a/b/v1/x.proto").code == 0
    x_server = (workspace / "neurons/a-b-v1-x/server.py").read_bytes()
    for command in ("create", "update"):
        r = create(scaffold, protos, "a/b/v1/y.proto", "--out", "a-b-v1-x", command=command)
        assert r.code == 2, r.output
        assert "holds another neuron (a/b/v1/x.proto)" in r.err and "not one made from a/b/v1/y.proto" in r.err
        assert "--out a-b-v1-y" in r.err
    assert (workspace / "neurons/a-b-v1-x/server.py").read_bytes() == x_server
    assert not (workspace / "neurons/a-b-v1-x/protobuf/a/b/v1/y_pb2.py").exists()
    assert create(scaffold, protos, "a/b/v1/y.proto", "--out", "a-b-v1-y").code == 0
    assert create(scaffold, protos, "a/b/v1/x.proto", "--out", "a-b-v1-x", command="update").code == 0


@pytest.mark.parametrize("out", ["Books", "1books", "books-", "books--v1", "../books", "books_v1", "b" * 50])
def test_bad_out_is_refused_at_once(workspace, scaffold, protos, out):
    r = create(scaffold, protos, "a/b/v1/x.proto", "--out", out)
    assert r.code == 2, r.output
    assert f"invalid --out {out!r}" in r.err and "at most 49 characters" in r.err and "Traceback" not in r.err
    assert not (workspace / "neurons").exists()
    r = scaffold("neuron", "run", "--out", out)
    assert r.code == 2 and "invalid --out" in r.err


def test_longest_out_is_accepted(workspace, scaffold, protos):
    r = create(scaffold, protos, "a/b/v1/x.proto", "--out", "b" * 49, "--dry-run")
    assert r.code == 0, r.output


def test_a_default_that_is_no_service_name_asks_for_out_with_a_working_example(workspace, scaffold, tmp_path):
    root = tmp_path / "long"
    rel = f"{'very_long_folder_name_' * 2}/{'another_long_folder_' * 2}/v1/{'9lives'}.proto"
    write_proto(root, rel, "long.v1")
    r = scaffold("neuron", "create", "--proto", str(root / rel), "-I", str(root))
    assert r.code == 2, r.output
    assert "not a valid Cloud Run service name" in r.err and "e.g. --out neuron-9lives" in r.err
    assert not (workspace / "neurons").exists()
    r = scaffold("neuron", "create", "--proto", str(root / rel), "-I", str(root), "--out", "neuron-9lives")
    assert r.code == 0, r.output


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("link", ["neurons", "neurons/top/tests"])
def test_a_symlink_out_of_the_workspace_is_refused_and_nothing_is_written(workspace, scaffold, protos, tmp_path, link):
    outside = tmp_path / "outside"
    outside.mkdir()
    if link == "neurons/top/tests":  # an existing neuron whose tests/ folder was swapped for a link
        assert create(scaffold, protos, "top.proto").code == 0
        import shutil

        shutil.rmtree(workspace / link)
    (workspace / link).parent.mkdir(parents=True, exist_ok=True)
    (workspace / link).symlink_to(outside, target_is_directory=True)
    before = _tree(workspace)
    r = create(scaffold, protos, "top.proto", command="create" if link == "neurons" else "update")
    assert r.code != 0
    assert "leads outside" in r.err and "Nothing was written" in r.err and "Traceback" not in r.output
    assert _tree(outside) == []
    assert _tree(workspace) == before


def test_proto_gen_through_a_symlinked_output_folder_is_refused(workspace, scaffold, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    assert scaffold("proto", "create", "xmpl.br.resources-books-v1").code == 0
    (workspace / "protobuf").symlink_to(outside, target_is_directory=True)
    r = scaffold("proto", "gen", "xmpl.br.resources-books-v1")
    assert r.code != 0 and "leads outside" in r.err, r.output
    assert _tree(outside) == []


def test_a_folder_named_like_a_proto_or_scaffold_toml_gets_a_message_that_says_so(workspace, scaffold, protos, tmp_path):
    (protos / "dir.proto").mkdir()
    r = scaffold("neuron", "create", "--proto", str(protos / "dir.proto"), "-I", str(protos))
    assert r.code == 2 and "is a folder" in r.err, r.output
    odd = tmp_path / "odd"
    (odd / "scaffold.toml").mkdir(parents=True)
    r = scaffold("proto", "lint", cwd=odd)
    assert r.code != 0 and "is not a file" in r.err and "Traceback" not in r.output, r.output


def test_protos_importing_each_other_get_a_hint_about_the_circle(workspace, scaffold, tmp_path):
    root = tmp_path / "cyc"
    root.mkdir()
    (root / "a.proto").write_text('syntax = "proto3";\npackage a;\nimport "b.proto";\nmessage A {}\nservice S { rpc M(A) returns (A); }\n')
    (root / "b.proto").write_text('syntax = "proto3";\npackage b;\nimport "a.proto";\nmessage B {}\n')
    r = scaffold("neuron", "create", "--proto", str(root / "a.proto"), "-I", str(root))
    assert r.code != 0 and "recursively imports itself" in r.err and "in a circle" in r.err, r.output
    assert "add the folder that contains it" not in r.err
    assert not (workspace / "neurons" / "a").exists()
