import json
import os
from pathlib import Path

import pytest

from generator.errors import UsageError
from generator.writer import TXN_DIR, Action, FileOwner, Plan, decide, recover, write


def plan(**files):
    p = Plan()
    for path, (content, owner) in files.items():
        p.add(path.replace("__", "/"), content, owner)
    return p


def test_create_identical_update_skip(tmp_path):
    root = tmp_path / "n"
    first = write(root, plan(gen__a=("1\n", FileOwner.GENERATED), user=("mine\n", FileOwner.USER)))
    assert [o.action for o in first] == [Action.CREATE, Action.CREATE]
    (root / "user").write_text("edited by the user\n")
    again = write(root, plan(gen__a=("2\n", FileOwner.GENERATED), user=("mine\n", FileOwner.USER)))
    assert [o.action for o in again] == [Action.UPDATE, Action.SKIP]
    assert (root / "gen/a").read_text() == "2\n"
    assert (root / "user").read_text() == "edited by the user\n"
    same = write(root, plan(gen__a=("2\n", FileOwner.GENERATED), user=("x", FileOwner.USER)))
    assert [o.action for o in same] == [Action.IDENTICAL, Action.SKIP]


def test_dry_run_writes_nothing_and_shows_a_diff(tmp_path):
    write(tmp_path, plan(a=("old\n", FileOwner.GENERATED)))
    outcomes = write(tmp_path, plan(a=("new\n", FileOwner.GENERATED)), dry_run=True)
    assert outcomes[0].action is Action.UPDATE
    assert "-old" in outcomes[0].diff and "+new" in outcomes[0].diff
    assert (tmp_path / "a").read_text() == "old\n"


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_paths_outside_the_root_are_refused(bad):
    with pytest.raises(UsageError):
        Plan().add(bad, "x", FileOwner.GENERATED)


def test_uncommitted_transaction_is_dropped_and_old_tree_kept(tmp_path):
    write(tmp_path, plan(a=("old\n", FileOwner.GENERATED)))
    staged = tmp_path / TXN_DIR / "files" / "a"
    staged.parent.mkdir(parents=True)
    staged.write_text("half\n")  # killed before COMMIT was written
    recover(tmp_path)
    assert (tmp_path / "a").read_text() == "old\n"
    assert not (tmp_path / TXN_DIR).exists()


def test_committed_transaction_is_finished_by_the_next_run(tmp_path):
    write(tmp_path, plan(a=("old\n", FileOwner.GENERATED), b=("old\n", FileOwner.GENERATED)))
    txn = tmp_path / TXN_DIR
    (txn / "files").mkdir(parents=True)
    (txn / "files" / "b").write_text("new\n")  # "a" was already moved before the kill
    (tmp_path / "a").write_text("new\n")
    (txn / "COMMIT").write_text(json.dumps([{"path": "a"}, {"path": "b"}]))
    outcomes = decide(tmp_path, plan(a=("new\n", FileOwner.GENERATED)))
    assert outcomes[0].action is Action.IDENTICAL
    write(tmp_path, plan(a=("new\n", FileOwner.GENERATED)))
    assert (tmp_path / "b").read_text() == "new\n"
    assert not txn.exists()


def test_failure_while_staging_a_new_tree_leaves_nothing(tmp_path, monkeypatch):
    import generator.writer as w

    calls = []
    real = os.fsync

    def boom(fd):  # the second fsync fails (in one of the writer's threads), as on a full disk
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(w.os, "fsync", boom)
    with pytest.raises(OSError):
        write(tmp_path / "new", plan(a=("1", FileOwner.GENERATED), b=("2", FileOwner.GENERATED)))
    assert not (tmp_path / "new").exists()
    assert list(tmp_path.iterdir()) == []


def test_every_staged_file_is_fsynced_once_before_it_is_moved_into_place(tmp_path, monkeypatch):
    """The crash-safety contract: one fsync per written file (overlapping in threads), all before
    the new tree (or the COMMIT manifest) appears; the COMMIT manifest gets its own."""
    import generator.writer as w

    synced: list[str] = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        assert not (tmp_path / "tree").exists()  # nothing is moved into place before every fsync
        return real(fd)

    files = {f"f{i}.txt": (f"content {i}\n", FileOwner.GENERATED) for i in range(70)}  # more than one batch
    monkeypatch.setattr(w.os, "fsync", spy)
    write(tmp_path / "tree", plan(**files))
    assert sorted(Path(p).name for p in synced) == sorted(files)
    assert all((tmp_path / "tree" / name).read_text() == text for name, (text, _) in files.items())

    synced.clear()
    monkeypatch.setattr(w.os, "fsync", real)
    changed = {**files, "f0.txt": ("changed\n", FileOwner.GENERATED)}

    def spy_update(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        assert (tmp_path / "tree" / "f0.txt").read_text() == "content 0\n"  # not yet replaced
        return real(fd)

    monkeypatch.setattr(w.os, "fsync", spy_update)
    write(tmp_path / "tree", plan(**changed))
    assert sorted(Path(p).name for p in synced) == ["COMMIT", "f0.txt"]
    assert (tmp_path / "tree" / "f0.txt").read_text() == "changed\n"
