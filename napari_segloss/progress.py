"""Progress bars that read well where they land: a terminal, a notebook or a log file.

:func:`progress_bar` gives tqdm's bar in a terminal (stderr is a TTY) and in a Jupyter kernel
(``tqdm.auto``: a widget, or a text bar that Jupyter redraws in place). Anywhere else (``segloss train ... 2> log``, a CI log, a batch job)
tqdm's redrawn line fills the file with carriage returns, and a bar nested under another (the
validation pass under the training bar) writes cursor-movement escape codes (``ESC[A``); there
it gives a :class:`LogProgress` instead: a plain line (no bar, no escape codes) at most every
:data:`LOG_INTERVAL_S` seconds, and a last one when a bar that stays (``leave=True``) or one
that has already printed ends. A short nested pass then prints nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as std_tqdm

__all__ = ["LOG_INTERVAL_S", "LogProgress", "is_terminal", "progress_bar"]

#: seconds between two lines of a :class:`LogProgress` (a log gains little from more)
LOG_INTERVAL_S = 30.0


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr``, where bars go) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _in_notebook() -> bool:
    """Inside a Jupyter kernel, as ``tqdm.autonotebook`` tells it: tqdm.auto draws a widget
    there, or without ipywidgets a text bar whose carriage returns Jupyter renders in place."""
    ipython = sys.modules.get("IPython")  # not imported: not a kernel (and no import cost)
    try:
        return "IPKernelApp" in ipython.get_ipython().config  # type: ignore[union-attr]
    except AttributeError:  # no IPython, or get_ipython() is None outside IPython
        return False


class LogProgress:
    """A progress report for a log file: the subset of tqdm's interface the package uses
    (``update``, ``set_postfix``, ``close``, iteration, ``with``), written as plain lines in
    tqdm's words (``train dice:  50% 3/6 [00:01<00:01,  2.00it/s, loss=0.4556]``)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str | None = None,
        unit: str = "it",
        initial: int = 0,
        leave: bool = True,
        disable: bool = False,
        file: IO[str] | None = None,
        interval: float | None = None,
        **_tqdm_only: Any,  # drawing options (dynamic_ncols, ...): nothing to draw here
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total
        self.desc = desc or ""
        self.unit = unit
        self.n = self.initial = initial
        self.leave = leave
        self.disable = disable
        self.file = file  # None: sys.stderr when writing (test captures replace it)
        self.interval = LOG_INTERVAL_S if interval is None else interval
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.shown: tuple[int, str] | None = None  # (n, postfix) of the last line written
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LogProgress: nothing to iterate (pass an iterable)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def line(self) -> str:
        """The report as it stands, in tqdm's format without the bar."""
        elapsed = time.monotonic() - self.start
        return std_tqdm.format_meter(
            self.n, self.total, elapsed, ncols=0, prefix=self.desc, unit=self.unit,
            postfix=self.postfix or None, initial=self.initial,
        )  # fmt: skip

    def _write(self) -> None:
        print(self.line(), file=self.file or sys.stderr, flush=True)
        self.shown = (self.n, self.postfix)
        self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.disable and time.monotonic() - self.last >= self.interval:
            self._write()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={str(v).strip()}" for k, v in items.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # a transient bar that printed nothing stays silent; one that did says where it ended,
        # unless its last line said so already
        ended = self.shown == (self.n, self.postfix)
        if not self.disable and (self.leave or self.shown is not None) and not ended:
            self._write()


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **kwargs)`` in a terminal or a notebook, else a
    :class:`LogProgress` with the same arguments (see the module docstring)."""
    if _in_notebook() or is_terminal(kwargs.get("file")):
        return auto_tqdm(iterable, **kwargs)
    return LogProgress(iterable, **kwargs)
