"""generator/cli.py builds only the command it runs (issue 13 item 4): what each command
prints and returns is the same as with the whole app built."""

from __future__ import annotations

import pytest
import typer

from generator import cli


def paths() -> list[list[str]]:
    out = [[cli._name(info)] for info in cli.app.registered_commands]
    for group in cli.app.registered_groups:
        out += [[group.name, cli._name(info)] for info in group.typer_instance.registered_commands]
    return out


def whole_app(argv: list[str]) -> int:
    """What ``cli.run`` did before: the full app, every command built."""
    try:
        result = cli.app(args=argv, prog_name="scaffold", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0


def test_every_command_is_narrowed_to_itself():
    assert len(paths()) == 15
    for path in paths():
        narrowed = cli._only_command([*path, "--help"])
        assert narrowed is not cli.app
        group = narrowed.registered_groups[0].typer_instance if len(path) == 2 else narrowed
        assert [cli._name(i) for i in group.registered_commands] == [path[-1]]
    assert len(cli.app.registered_commands) == 3 and len(cli.app.registered_groups) == 3  # the app is untouched
    for argv in ([], ["--help"], ["--version"], ["neuron"], ["neuron", "--help"], ["neuron", "crate"], ["bogus"]):
        assert cli._only_command(argv) is cli.app


@pytest.mark.parametrize("extra", [["--help"], ["--no-such-option"], ["--out"]])
def test_help_and_usage_errors_match_the_whole_app(capsys, tmp_path, monkeypatch, extra):
    monkeypatch.chdir(tmp_path)  # no workspace here: nothing can run
    for path in paths():
        if path == ["neuron", "test"] and extra != ["--help"]:
            continue  # passes unknown options on to pytest
        code = cli.run([*path, *extra])
        narrowed = capsys.readouterr()
        assert code == whole_app([*path, *extra]) == (0 if extra == ["--help"] else 2), path
        assert capsys.readouterr() == narrowed and narrowed.out + narrowed.err, path
    for argv in (["--help"], ["neuron", "--help"], ["neuron", "crate"]):  # groups: the whole app, as before
        code = cli.run(argv)
        ran = capsys.readouterr()
        assert code == whole_app(argv) and capsys.readouterr() == ran and ran.out + ran.err
