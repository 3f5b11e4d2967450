"""Long work of the napari panels: thread workers, their progress row, and main-thread task
queues.

Workers run in napari's thread pool and talk to the panel through Qt signals only; their
callbacks become no-ops once the panel is deleted. The progress row shows a bar with Cancel
for work that lasts. A task queue spreads small main-thread steps (adding layers, first draws)
over event-loop turns so that the window keeps answering.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Qt, QTimer
from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QWidget

log = logging.getLogger(__name__)


def one_shot_timer(parent: QObject | None, ms: int, slot: Callable[[], Any]) -> QTimer:
    """A single-shot ``QTimer`` of ``ms`` milliseconds calling ``slot``, not started: the
    panels' debounces and "at the next turn" updates (``ms = 0``)."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(ms)
    timer.timeout.connect(slot)
    return timer


class ProgressRow(QWidget):
    """A progress bar with a Cancel button, shown only for work that lasts.

    ``start()`` arms it; it appears after ``SHOW_AFTER_MS`` if the work is still running (no
    flicker for quick updates); ``step(done, total, text)`` moves it (``total == 0``: busy
    indicator); ``stop()`` hides it. ``cancel`` is the button (connect its ``clicked``).

    A step is shown at the next event-loop turn, not at once: ``QProgressBar.setValue``
    repaints at once, and repainting a widget of napari's window first renders a pending
    canvas draw, which would add that draw to the caller's own work in one freeze.
    """

    SHOW_AFTER_MS = 300

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar(self)
        self.bar.setTextVisible(True)
        self.cancel = QPushButton("Cancel", self)
        self.cancel.setToolTip("stop this computation (the maps shown stay as they are)")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.bar, 1)
        lay.addWidget(self.cancel)
        self._timer = one_shot_timer(self, self.SHOW_AFTER_MS, self.show)
        self._latest: tuple[int, int, str] = (0, 0, "")
        self._step_timer = one_shot_timer(self, 0, self._show_step)
        self.hide()

    def start(self, text: str) -> None:
        self.step(0, 0, text)
        self.cancel.setEnabled(True)
        if self.isHidden():
            self._timer.start()

    def step(self, done: int, total: int, text: str) -> None:
        self._latest = (done, total, text)
        if not self._step_timer.isActive():
            self._step_timer.start()

    def _show_step(self) -> None:
        done, total, text = self._latest
        self.bar.setRange(0, max(total, 0))
        self.bar.setValue(min(done, total) if total else 0)
        self.bar.setFormat(f"{text}  %p%" if total else text)

    def stop(self) -> None:
        self._timer.stop()
        self.hide()

    @property
    def shown(self) -> bool:
        """The bar is shown (in the panel; the panel itself may be hidden)."""
        return not self.isHidden()


def new_worker(
    fn: Callable[[], Any],
    *,
    errored: Callable[[BaseException], Any],
    finished: Callable[[], Any],
    returned: Callable[[Any], Any] | None = None,
    yielded: Callable[[Any], Any] | None = None,
) -> Any:
    """A napari thread worker for ``fn`` with its signals connected, not started yet.

    ``fn`` may be a generator function: its yielded values go to ``yielded``, its ``return``
    value to ``returned``, and ``worker.quit()`` stops it at its next ``yield``. Exceptions go
    to ``errored`` only (not re-raised); store the worker, then ``.start()`` it.
    """
    generator = inspect.isgeneratorfunction(fn)
    job, close = _generator_job(fn) if generator else (fn, None)
    worker = create_worker(job, _start_thread=False, _ignore_errors=True)
    if close is not None:
        # in the worker's thread, as it stops: napari quits every worker when it closes and
        # waits for them while the main thread's event loop no longer runs
        worker.aborted.connect(close, Qt.ConnectionType.DirectConnection)
    if returned is not None:
        worker.returned.connect(_while_alive(returned))
    if yielded is not None:
        worker.yielded.connect(_while_alive(yielded))
    worker.errored.connect(_while_alive(lambda exc: errored(_unwrap(exc))))
    worker.finished.connect(_while_alive(finished))
    return worker


class _CarriedRuntimeError(Exception):
    """A RuntimeError of a generator job, carried past superqt (see _generator_job)."""

    def __init__(self, original: RuntimeError) -> None:
        super().__init__(str(original))
        self.original = original


def _generator_job(
    fn: Callable[[], Generator[Any, Any, Any]],
) -> tuple[Callable[[], Generator[Any, Any, Any]], Callable[[], None]]:
    """``(job, close)``: the generator function ``fn`` for superqt's worker, with two mends.

    * ``job`` wraps ``fn``'s RuntimeErrors: superqt's generator worker takes one for a
      deleted Qt object and only warns, emitting neither ``errored`` nor ``finished``, so the
      panel would stay busy with no message (torch raises RuntimeErrors, e.g.
      ``torch.OutOfMemoryError`` when the GPU's memory is full).
    * ``close()`` closes ``fn``'s generator, for a worker aborted by ``quit()``: superqt
      leaves it suspended, so its ``finally`` and ``with`` blocks never ran (a training run
      kept its run folder's lock, and a folder that nothing was written to).
    """
    running: list[Generator[Any, Any, Any]] = []

    @functools.wraps(fn)
    def job() -> Generator[Any, Any, Any]:
        gen = fn()
        running.append(gen)
        try:
            return (yield from gen)
        except RuntimeError as exc:
            raise _CarriedRuntimeError(exc) from exc

    def close() -> None:
        for gen in running:
            try:
                gen.close()
            except Exception:  # a worker's thread must not raise out of a signal
                log.exception("closing an aborted job")

    return job, close


def _unwrap(exc: BaseException) -> BaseException:
    return exc.original if isinstance(exc, _CarriedRuntimeError) else exc


def _while_alive(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback``, made a no-op once the panel it updates is deleted.

    Closing napari (or the panel) while a worker runs deletes the panel's Qt objects; the
    worker's next signal then reaches a deleted widget, and PyQt aborts the whole process on
    the resulting RuntimeError (a Jupyter kernel dies with it). The signals are connected to
    plain callables, which Qt cannot disconnect when their widget goes away.
    """

    def call(*args: Any) -> Any:
        try:
            return callback(*args)
        except RuntimeError as exc:
            if "has been deleted" not in str(exc):
                raise
            return None

    return call


def progress_worker(
    progress: ProgressRow,
    job: Callable[[], Any],
    message: str,
    *,
    returned: Callable[[Any], Any],
    errored: Callable[[BaseException], Any],
    finished: Callable[[], Any],
) -> Any:
    """:func:`new_worker` for a generator ``job`` whose ``(done, total, text)`` steps move
    ``progress`` (armed with ``message`` here). Store the worker, then ``.start()`` it."""
    progress.start(message)
    return new_worker(
        job,
        returned=returned,
        yielded=lambda step: progress.step(*step),
        errored=errored,
        finished=finished,
    )


class ModelSlot:
    """A panel's :class:`~napari_segloss.engine.checkpoint.ModelCache` (the last checkpoint it
    ran, kept for the next run), made on first use: in a worker, because it imports torch,
    which opening a panel does not."""

    def __init__(self) -> None:
        self._cache: Any = None

    def get(self) -> Any:
        if self._cache is None:
            from napari_segloss.engine.checkpoint import ModelCache  # heavy: torch

            self._cache = ModelCache()
        return self._cache


def frame_progress(
    steps: Iterator[tuple[int, int]], what: str
) -> Generator[tuple[int, int, str], None, Any]:
    """Relabel ``(done, total)`` progress (e.g. the frames of
    :func:`napari_segloss.engine.inference.iter_predict_image`) as ``(done, total, text)``
    for :class:`ProgressRow`, text ``"<what> 3/10"``; returns ``steps``' result."""
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        yield done, total, f"{what} {min(done + 1, total)}/{total}"


@dataclass(frozen=True)
class Pause:
    """What a :class:`TaskQueue` task returns to make the next task wait ``ms`` milliseconds
    (e.g. for a paint it let come: see ``_grid.HeldPaint``)."""

    ms: int


class TaskQueue:
    """Small main-thread tasks run one per event-loop turn, so that the window repaints and
    answers between them (adding a napari layer and its first draw take up to ~0.2 s each;
    a dozen of them in one go would freeze the window for seconds).

    ``done()`` runs after the last task (and on :meth:`cancel`); a task's exception stops
    the queue and goes to ``errored``. ``progress(done, total)`` is called after each task.
    A task that returns a :class:`Pause` delays the next one.
    """

    def __init__(
        self,
        parent: QWidget,
        *,
        done: Callable[[], Any],
        errored: Callable[[BaseException], Any],
        progress: Callable[[int, int], Any] | None = None,
    ) -> None:
        self._tasks: deque[Callable[[], Any]] = deque()
        self._done = done
        self._errored = errored
        self._progress = progress
        self._count = (0, 0)  # (tasks run, tasks queued) since the queue was last empty
        self.cancelled = False
        self._in_task = False  # a task is running (run_next then queues ahead)
        self._timer = one_shot_timer(parent, 0, self._run_one)

    @property
    def active(self) -> bool:
        return bool(self._tasks)

    def run(self, tasks: Iterable[Callable[[], Any]]) -> None:
        if not self._tasks:
            self._count = (0, 0)
            self.cancelled = False
        self._tasks.extend(tasks)
        self._count = (self._count[0], self._count[0] + len(self._tasks))
        if self._tasks:
            self._timer.start()

    def run_next(self, tasks: Iterable[Callable[[], Any]]) -> None:
        """Queue ``tasks`` ahead of those waiting: called from a task, they run next."""
        tasks = list(tasks)
        if not self._tasks and not self._in_task:  # idle: as run() would start them
            self.run(tasks)
            return
        self._tasks.extendleft(reversed(tasks))
        self._count = (self._count[0], self._count[1] + len(tasks))

    def cancel(self) -> None:
        """Drop the tasks not run yet, then call ``done`` (not from inside a task)."""
        if self._tasks:
            self._tasks.clear()
            self.cancelled = True
            self._timer.stop()
            self._done()

    def _run_one(self) -> None:
        if not self._tasks:  # cancelled meanwhile
            return
        task = self._tasks.popleft()
        wait = 0
        self._in_task = True
        try:
            result = task()
            if isinstance(result, Pause):
                wait = result.ms
        except Exception as exc:  # shown by the panel; the queue must not stay half-run
            self._tasks.clear()
            self._errored(exc)
        finally:
            self._in_task = False
        self._count = (self._count[0] + 1, self._count[1])
        if self._progress is not None and self._tasks:
            self._progress(*self._count)
        if self._tasks:
            self._timer.start(wait)
        else:
            self._done()
