"""The panels' thread workers (``_widgets/_workers.py``)."""

from __future__ import annotations

import pytest

from napari_segloss._widgets._workers import new_worker


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
