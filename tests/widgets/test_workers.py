"""The panels' thread workers (``_widgets/_workers.py``)."""

from __future__ import annotations

import time

import pytest
from qtpy.QtWidgets import QWidget

from napari_segloss._widgets._workers import Pause, TaskQueue, new_worker


class _Oom(RuntimeError):  # what torch.OutOfMemoryError is
    pass


@pytest.mark.parametrize("generator", [True, False])
def test_a_runtime_error_of_the_job_reaches_errored_and_finished(qtbot, generator):
    """superqt drops a generator job's RuntimeError (taken for a deleted Qt object) with a
    warning and emits neither signal: a panel stayed busy forever on a CUDA out-of-memory."""
    seen: list[object] = []

    def steps():
        yield 1
        raise _Oom("CUDA out of memory. Tried to allocate 2.00 GiB")

    def call():
        raise _Oom("CUDA out of memory. Tried to allocate 2.00 GiB")

    worker = new_worker(
        steps if generator else call,
        errored=seen.append,
        finished=lambda: seen.append("finished"),
        yielded=seen.append if generator else None,
    )
    worker.start()
    qtbot.waitUntil(lambda: "finished" in seen, timeout=10_000)
    errors = [s for s in seen if isinstance(s, BaseException)]
    assert len(errors) == 1 and type(errors[0]) is _Oom  # the job's own exception
    assert seen[-1] == "finished"


def test_a_task_queue_runs_one_task_per_turn_and_waits_after_a_pause(qtbot):
    """Each task gets a turn of its own; a task returning a Pause delays the next one (e.g. for
    a canvas paint it let come), any other return value does not."""
    parent = QWidget()
    ran: list[tuple[str, float]] = []
    done: list[bool] = []

    def task(name: str, result: object = None):
        def run() -> object:
            ran.append((name, time.perf_counter()))
            return result

        return run

    queue = TaskQueue(parent, done=lambda: done.append(True), errored=pytest.fail)
    queue.run([task("a", 7), task("b", Pause(150)), task("c")])
    assert ran == []  # nothing runs inside run(): the caller's turn stays short
    qtbot.waitUntil(lambda: done == [True], timeout=5000)
    names = [name for name, _ in ran]
    times = dict(ran)
    assert names == ["a", "b", "c"]
    assert times["c"] - times["b"] >= 0.14
    assert times["b"] - times["a"] < 0.14  # an int is no pause


def test_tasks_queued_from_a_task_with_run_next_run_before_those_waiting(qtbot):
    parent = QWidget()
    ran: list[str] = []
    progress: list[tuple[int, int]] = []
    done: list[bool] = []
    queue = TaskQueue(
        parent,
        done=lambda: done.append(True),
        errored=pytest.fail,
        progress=lambda *count: progress.append(count),
    )

    def first() -> None:
        ran.append("first")
        queue.run_next([lambda: ran.append("x"), lambda: ran.append("y")])

    queue.run([first, lambda: ran.append("last")])
    qtbot.waitUntil(lambda: done == [True], timeout=5000)
    assert ran == ["first", "x", "y", "last"]
    assert progress == [(1, 4), (2, 4), (3, 4)]  # the total counts the tasks added
    # outside a task, on an idle queue: they start as run() would start them
    progress.clear()
    queue.run_next([lambda: ran.append("alone"), lambda: ran.append("then")])
    assert ran[-1] == "last"  # nothing runs inside run_next() either
    qtbot.waitUntil(lambda: done == [True, True], timeout=5000)
    assert ran[-2:] == ["alone", "then"] and progress == [(1, 2)]


def test_a_quit_worker_closes_its_job_so_that_it_releases_what_it_holds(qtbot, tmp_path):
    """superqt leaves an aborted job's generator suspended: a training run quit by napari's
    exit kept its run folder's lock, in a folder that nothing else was written to. The job is
    now closed in the worker's thread, while the main thread waits without an event loop (as
    napari waits for its workers when it quits)."""
    from napari_segloss.engine.rundir import LOCK_NAME, locked

    run_dir = tmp_path / "run"

    def job():
        with locked(run_dir):
            while True:
                yield 0
                time.sleep(0.01)

    worker = new_worker(job, errored=lambda exc: None, finished=lambda: None)
    worker.start()
    qtbot.waitUntil(lambda: (run_dir / LOCK_NAME).exists(), timeout=10_000)
    worker.quit()
    deadline = time.monotonic() + 10
    while run_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # no Qt events processed here
    assert not run_dir.exists()  # the lock released, the empty folder removed
