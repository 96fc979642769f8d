import json

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

    def boom(path, content, mode):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, content, mode)

    real = w._fsync_write
    monkeypatch.setattr(w, "_fsync_write", boom)
    with pytest.raises(OSError):
        write(tmp_path / "new", plan(a=("1", FileOwner.GENERATED), b=("2", FileOwner.GENERATED)))
    assert not (tmp_path / "new").exists()
    assert list(tmp_path.iterdir()) == []
