"""Progress bars: tqdm's in a terminal, plain lines without escape codes in a log file."""

from __future__ import annotations

import io
import re
import sys
import types

import pytest
from tqdm.std import tqdm

from napari_segloss import progress
from napari_segloss.progress import LogProgress, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_tqdm_and_a_file_gets_plain_lines() -> None:
    bar = progress_bar(total=3, desc="t", file=FakeTerminal())
    assert isinstance(bar, tqdm)
    bar.close()
    log = io.StringIO()
    bar = progress_bar(total=3, desc="t", file=log, dynamic_ncols=True)  # tqdm-only: ignored
    assert isinstance(bar, LogProgress)
    bar.update(3)
    bar.close()
    assert re.fullmatch(r"t: 100% 3/3 \[00:00<00:00, +[\d.?]+it/s\]\n", log.getvalue())
    assert "\x1b" not in log.getvalue() and "\r" not in log.getvalue()


def test_log_lines_come_at_most_every_interval_and_once_at_the_end() -> None:
    log = io.StringIO()
    bar = LogProgress(total=4, desc="train dice", file=log, interval=3600)
    bar.update(1)
    bar.set_postfix(loss="0.5000")
    bar.update(3)
    bar.close()
    bar.close()  # closing twice says nothing more
    (line,) = log.getvalue().splitlines()
    assert line.startswith("train dice: 100% 4/4 [") and line.endswith(", loss=0.5000]")

    log = io.StringIO()
    bar = LogProgress(total=2, desc="d", file=log, interval=0)  # every update
    bar.update(1)
    bar.update(1)
    bar.close()  # its last line already said 2/2
    assert [s.split(" [")[0] for s in log.getvalue().splitlines()] == ["d:  50% 1/2", "d: 100% 2/2"]


def test_a_transient_bar_stays_silent_unless_it_lasted(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    for item in LogProgress(range(3), desc="validation", leave=False, file=log, interval=3600):
        assert item in range(3)
    assert log.getvalue() == ""  # a quick nested pass adds nothing to the log
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    bar = progress_bar(desc="slow", total=2, leave=False, file=log)  # the module's interval
    bar.update(1)
    bar.interval = 3600  # the next update comes too soon for a line ...
    bar.update(1)
    bar.close()  # ... but a bar that printed says where it ended
    assert [s.split(" [")[0] for s in log.getvalue().splitlines()] == [
        "slow:  50% 1/2",
        "slow: 100% 2/2",
    ]
    LogProgress(total=1, disable=True, file=log).close()
    assert log.getvalue().count("\n") == 2


def test_a_jupyter_kernel_keeps_tqdm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel's stderr is no terminal, but Jupyter draws tqdm (a widget, or without
    ipywidgets a text bar redrawn in place): keep it there."""
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    bar = progress_bar(total=1, file=io.StringIO())
    assert isinstance(bar, tqdm)
    bar.close()
    shell.config = {"TerminalIPythonApp": {}}  # IPython in a terminal: as any program
    assert isinstance(progress_bar(total=1, file=io.StringIO()), LogProgress)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert isinstance(progress_bar(total=1, file=io.StringIO()), LogProgress)
