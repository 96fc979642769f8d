"""What the commands print: changes and a one-line summary, quick failures, visible progress."""

from __future__ import annotations

from generator.cli import summary
from tests.conftest import REPO
from tests.helpers import free_port

BOOKS = "xmpl.br.resources-books-v1"


def test_summary_counts_changes_first_and_unknown_actions_as_themselves():
    actions = ["identical"] * 27 + ["update", "create", "update", "conflict"]
    assert summary(actions) == "2 updated, 1 created, 1 conflict, 27 identical"
    assert summary(["skip", "identical"], dry_run=True) == "dry run, nothing written: 1 kept (yours), 1 identical"
    assert summary([]) == "no files"


def test_neuron_update_prints_changes_and_a_summary_identical_only_with_verbose(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    created = scaffold("neuron", "create", BOOKS)
    assert created.code == 0 and "create  neurons/resources-books-v1/server.py" in created.out
    count = created.out.count("   create  ")
    assert f"{count} created" in created.out
    quiet = scaffold("neuron", "update", BOOKS)
    assert quiet.code == 0, quiet.output
    assert "identical  " not in quiet.out and quiet.out.splitlines() == [f"{count} identical"]
    server = workspace / "neurons/resources-books-v1/server.py"
    server.write_text(server.read_text() + "# edited\n")
    refused = scaffold("neuron", "update", BOOKS)  # a hand edit of a generated file is a conflict
    assert refused.code == 1 and "edited by hand: server.py" in refused.err
    changed = scaffold("neuron", "update", BOOKS, "--force")
    assert changed.out.splitlines() == ["   update  neurons/resources-books-v1/server.py", f"1 updated, {count - 1} identical"]
    verbose = scaffold("neuron", "update", BOOKS, "--verbose")
    assert "identical  neurons/resources-books-v1/server.py" in verbose.out
    assert verbose.out.splitlines()[-1] == f"{count} identical"


def test_proto_gen_summary(workspace, scaffold):
    assert scaffold("proto", "create", BOOKS).code == 0
    first = scaffold("proto", "gen", BOOKS)
    count = first.out.count("   create  ")
    assert first.code == 0 and count and first.out.splitlines()[-1] == f"{count} created"
    again = scaffold("proto", "gen", BOOKS)
    assert again.out.splitlines() == [f"{count} identical"]


def test_call_to_a_dead_address_gives_up_quickly_and_says_how_long_it_waited(scaffold):
    dead = f"127.0.0.1:{free_port()}"
    r = scaffold("call", dead, "a.b.S/M")
    assert r.code == 1 and f"cannot connect to {dead} within 3 s" in r.err and "--connect-timeout" in r.err
    r = scaffold("call", dead, "a.b.S/M", "--connect-timeout", "0.2")
    assert r.code == 1 and "within 0.2 s" in r.err


def test_demo_announces_the_install_and_lets_pip_show_progress():
    """A static check (running the demo builds a fresh venv: minutes): the install step is
    announced before pip runs, and pip's per-package lines are not silenced."""
    lines = (REPO / "scripts/demo.sh").read_text().splitlines()
    pip = next(i for i, line in enumerate(lines) if " -m pip install" in line)
    assert any(line.startswith('step "[1/5] installing') for line in lines[:pip])
    assert "--quiet" not in lines[pip] and " -q " not in lines[pip]
    assert "Collecting" in lines[pip + 1]
