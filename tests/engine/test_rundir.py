"""The run directory: its lock (busy, released, stale), temporaries, metrics.csv."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_segloss.engine.rundir import (
    LOCK_NAME,
    RunDirBusy,
    RunLock,
    remove_stale_temporaries,
    write_metrics_csv,
)


def test_lock_is_exclusive_and_leaves_no_trace(tmp_path: Path) -> None:
    run = tmp_path / "a" / "run"
    with RunLock(run) as lock:
        owner = json.loads((run / LOCK_NAME).read_text())
        assert owner["pid"] == os.getpid() and lock.created_dir
        with pytest.raises(RunDirBusy, match=rf"'{run}' is busy: pid {os.getpid()}"):
            RunLock(run).acquire()  # a second holder, even in the same process
        assert (run / LOCK_NAME).is_file()  # the refused attempt removed nothing
    assert not run.exists()  # created by the lock, nothing written: removed again
    with RunLock(run):
        (run / "checkpoint.pt").write_bytes(b"x")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]


def test_a_file_is_not_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirBusy, match="not a directory"):
        RunLock(tmp_path / "f").acquire()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_file_is_taken_over_with_a_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.joinpath(LOCK_NAME).write_text(
        json.dumps({"pid": _dead_pid(), "host": "here", "started": "yesterday"})
    )
    with caplog.at_level(logging.WARNING), RunLock(tmp_path) as lock:
        assert lock.took_over is not None and lock.took_over["started"] == "yesterday"
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "took over a stale lock" in caplog.text and "is no longer running" in caplog.text
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_another_process_until_it_is_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    code = (
        "import sys, time; from napari_segloss.engine.rundir import RunLock; "
        f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=rf"pid {holder.pid} \(started "):
            RunLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the lock file stays
        holder.wait()
    assert (tmp_path / LOCK_NAME).is_file()
    deadline = time.monotonic() + 10
    with caplog.at_level(logging.WARNING):
        while True:  # the OS drops the dead process's lock at once; poll just in case
            try:
                lock = RunLock(tmp_path).acquire()
                break
            except RunDirBusy:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    lock.release()
    assert f"pid {holder.pid}" in caplog.text


def test_remove_stale_temporaries_only_touches_run_file_temporaries(tmp_path: Path) -> None:
    names = [".checkpoint.pt.abc.tmp", ".best.pt.x1.tmp", ".metrics.csv.tmp", ".config.yaml.tmp"]
    keep = ["checkpoint.pt", ".other.tmp", "notes.tmp", ".checkpoint.pt"]
    for name in names + keep:
        (tmp_path / name).write_text("x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_metrics_csv_of_an_empty_history_has_a_header(tmp_path: Path) -> None:
    write_metrics_csv(tmp_path / "metrics.csv", [])
    assert (tmp_path / "metrics.csv").read_text() == "epoch,iteration,lr,train_loss\n"
    write_metrics_csv(tmp_path / "metrics.csv", [{"epoch": 1, "val_dice": 0.5, "lr": 1e-3}])
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,iteration,lr,train_loss,val_dice", "1,,0.001,,0.5"]


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    """eval.json, metrics.csv and the npz files left their ``.<name>.tmp`` behind when the
    write failed (disk full, Ctrl-C)."""
    from napari_segloss.engine.rundir import write_atomic, write_text_atomic

    path = tmp_path / "eval.json"
    write_text_atomic(path, "old")

    def half_then_fail(fh) -> None:
        fh.write(b"half")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]
