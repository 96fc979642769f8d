"""runtime.dev's supervision of its children (the emulator and the gateway)."""

import signal
import subprocess
import sys
import time

from scaffold_runtime.dev import Children


def _killed_by(sig: signal.Signals) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    proc.send_signal(sig)
    return proc


def _settle(children: Children) -> None:
    deadline = time.monotonic() + 10
    while children.failure is None and time.monotonic() < deadline and any(
            t.name.startswith("watch-") for t in __import__("threading").enumerate()):
        time.sleep(0.05)


def test_a_child_killed_by_the_ctrl_c_we_were_sent_is_no_failure():
    """The CI flake: Ctrl-C landed while the gateway was being forked (before its new session),
    so it died by SIGINT and the run reported "the HTTP/JSON gateway was killed by SIGINT"."""
    signalled = ["SIGINT"]
    children = Children(signalled)
    reported = []
    children.on_failure = reported.append
    children.watch("HTTP/JSON gateway", _killed_by(signal.SIGINT))
    _settle(children)
    assert children.failure is None and reported == []


def test_a_child_killed_while_nobody_asked_us_to_stop_is_a_failure():
    children = Children([])
    reported = []
    children.on_failure = reported.append
    children.watch("HTTP/JSON gateway", _killed_by(signal.SIGINT))
    _settle(children)
    assert children.failure == "the HTTP/JSON gateway was killed by SIGINT"
    assert reported == [children.failure]


def test_a_child_that_exits_with_an_error_after_ctrl_c_is_still_a_failure():
    """Only death by a signal is excused; a crash with a code says what failed."""
    children = Children(["SIGINT"])
    children.watch("Firestore emulator", subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
    _settle(children)
    assert children.failure == "the Firestore emulator exited with code 3"
