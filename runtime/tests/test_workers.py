"""scaffold_runtime.workers: the gRPC server's pool (what grpc's sync server needs of it)."""

import logging
import threading

import pytest
from scaffold_runtime.workers import Workers


def test_each_task_runs_once_and_each_callback_once_even_when_added_after_it_ran():
    pool = Workers(4)
    ran, called = [], []
    lock = threading.Lock()
    tasks = []
    try:
        for i in range(2000):
            task = pool.submit(lambda i=i: ran.append(i))
            # grpc adds its callback right after submit: the task may already be done
            task.add_done_callback(lambda t, i=i: (lock.acquire(), called.append(i), lock.release()))
            tasks.append(task)
    finally:
        pool.shutdown(wait=True)
    assert sorted(ran) == list(range(2000))
    assert sorted(called) == list(range(2000))
    assert all(t.done for t in tasks)


def test_a_callback_added_to_a_finished_task_runs_at_once():
    pool = Workers(1)
    task = pool.submit(lambda: None)
    pool.shutdown(wait=True)
    seen = []
    task.add_done_callback(seen.append)
    assert seen == [task]


def test_threads_start_one_per_call_up_to_the_limit_and_stop_at_shutdown():
    pool = Workers(3)
    assert pool.threads == 0
    pool.submit(lambda: None)
    assert pool.threads == 1  # a cold start pays for one thread
    for _ in range(5):
        pool.submit(lambda: None)
    assert pool.threads == 3
    pool.shutdown(wait=True)
    assert pool.threads == 0
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(lambda: None)


def test_at_most_max_workers_tasks_run_at_once():
    pool = Workers(3)
    gate = threading.Event()
    running, peak = [0], [0]
    lock = threading.Lock()

    def task():
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(5)
        with lock:
            running[0] -= 1

    try:
        for _ in range(10):
            pool.submit(task)
        threading.Timer(0.3, gate.set).start()
    finally:
        pool.shutdown(wait=True)
    assert peak[0] == 3 and running[0] == 0


def test_an_exception_escaping_a_task_or_a_callback_is_logged_and_the_worker_goes_on(caplog):
    pool = Workers(1)
    done = threading.Event()
    with caplog.at_level(logging.ERROR, logger="server"):
        bad = pool.submit(lambda: 1 / 0)
        bad.add_done_callback(lambda _t: {}["missing"])
        pool.submit(done.set)
        assert done.wait(5)
        pool.shutdown(wait=True)
    messages = [r.getMessage() for r in caplog.records]
    assert "a call failed outside its handler" in messages
    assert "a call's completion callback failed" in messages
    assert bad.done


def test_max_workers_must_be_positive():
    with pytest.raises(ValueError):
        Workers(0)


def _race_shutdown() -> tuple[list, list]:
    pool = Workers(4)
    accepted, ran = [], []
    start = threading.Event()

    def submitter():
        start.wait()
        for _ in range(3000):
            try:
                task = pool.submit(ran.append, 1)
            except RuntimeError:
                return
            accepted.append(task)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for t in threads:
        t.start()
    start.set()
    threading.Event().wait(0.002)
    pool.shutdown(wait=True)
    for t in threads:
        t.join()
    return accepted, ran


def test_a_task_racing_shutdown_is_either_run_or_refused_never_lost():
    """submit() checked for shutdown, then queued: shutdown's stop markers could get in
    between, and the task was accepted but never run (its callbacks never called)."""
    for _ in range(30):
        accepted, ran = _race_shutdown()
        assert len(ran) == len(accepted)
        assert all(t.done for t in accepted)
