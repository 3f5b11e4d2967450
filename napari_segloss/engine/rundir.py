"""A training run directory: its files, a lock that keeps a second run out, atomic writes.

Layout (the public contract): ``config.yaml``, ``metrics.csv`` (one row per epoch),
``checkpoint.pt`` (resumable, written atomically), ``best.pt`` and ``eval.json``.

**Lock.** A run holds ``.segloss.lock`` in its directory from set-up to the end: an OS file lock
(``flock``; ``msvcrt.locking`` on Windows) on a file that records the owner's pid, host and
start time. A second ``segloss train`` / ``segloss compare`` / napari run into the same
directory is refused with that owner named. The OS drops the lock when its process dies, even
on ``kill -9``, so a lock file left behind by a dead process is taken over with a message.

**Nothing half-written.** Files are written to a temporary name and renamed over the target;
temporaries left by a process killed mid-write (``.checkpoint.pt.*.tmp``) are removed when the
next run of the directory starts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

try:  # POSIX
    import fcntl

    msvcrt = None
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt  # type: ignore[no-redef]

__all__ = [
    "LOCK_NAME",
    "PENDING_SUFFIX",
    "RUN_FILES",
    "RunDirBusy",
    "RunLock",
    "RunPaths",
    "locked",
    "remove_stale_temporaries",
    "write_atomic",
    "write_metrics_csv",
    "write_text_atomic",
]

log = logging.getLogger(__name__)

#: Lock file inside a run (or compare) directory.
LOCK_NAME = ".segloss.lock"
#: Files a finished or interrupted run leaves; any of them means "this folder holds a run".
RUN_FILES = (
    "config.yaml",
    "metrics.csv",
    "checkpoint.pt",
    "best.pt",
    "eval.json",
    "predictions.npz",
)
#: a run file saved before the run's first checkpoint waits as ``<name>.pending`` (run_state)
PENDING_SUFFIX = ".pending"
#: metrics.csv columns present in every row (more follow with validation)
BASE_COLUMNS = ("epoch", "iteration", "lr", "train_loss")


class RunDirBusy(ValueError):
    """Another live process holds the directory's lock (one line naming it)."""


class RunPaths:
    """The files of one run directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.metrics = self.root / "metrics.csv"
        self.checkpoint = self.root / "checkpoint.pt"
        self.best = self.root / "best.pt"
        self.eval = self.root / "eval.json"
        #: predicted labels of the images eval.json scores (``iter_train(save_predictions=True)``)
        self.predictions = self.root / "predictions.npz"

    def existing(self) -> list[str]:
        """Names of the run files (``RUN_FILES``) present in the directory."""
        return [name for name in RUN_FILES if (self.root / name).exists()]

    def remove_run_files(self) -> None:
        """Delete the run files (an overwritten run must leave nothing of the old one)."""
        for name in RUN_FILES:
            (self.root / name).unlink(missing_ok=True)


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename:
    readers never see half a file, and a failure (disk full, Ctrl-C) leaves neither a half
    file nor the temporary one. (Checkpoints add an fsync: ``checkpoint.save_checkpoint``.)"""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_atomic`)."""
    data = text.encode("utf-8")
    write_atomic(path, lambda fh: fh.write(data))


def write_metrics_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite metrics.csv from the history (atomic): it always matches the checkpoint."""
    columns: list[str] = list(BASE_COLUMNS)
    for row in history:
        for k in row:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    write_text_atomic(path, buf.getvalue())


def remove_stale_temporaries(root: Path) -> list[str]:
    """Delete temporaries of interrupted writes (``.<run file>.*tmp``) and the files of a run
    killed before its first checkpoint (``<run file>.pending``); returns their names.

    Call it only while holding the directory's lock: then no live writer owns them.
    """
    removed = []
    for name in RUN_FILES:
        for tmp in [*root.glob(f".{name}*.tmp"), root / f"{name}{PENDING_SUFFIX}"]:
            if not tmp.exists():
                continue
            tmp.unlink(missing_ok=True)
            removed.append(tmp.name)
    if removed:
        log.warning(
            "removed %d temporary file(s) left in %s by an interrupted write: %s",
            len(removed),
            root,
            ", ".join(sorted(removed)),
        )
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but not ours (or the platform cannot tell): assume alive
    return True


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:  # pragma: no cover - Windows
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _read_owner(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 4096):
        raw += chunk
    try:
        owner = json.loads(raw.decode("utf-8") or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "another process"
    host = owner.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {owner.get('pid', '?')}{where} (started {owner.get('started', '?')})"


class RunLock:
    """Exclusive lock on a directory for the lifetime of a run (context manager).

    ``acquire`` creates the directory if needed and raises :class:`RunDirBusy` when a live
    process holds the lock. ``release`` deletes the lock file, and the directory too when this
    lock created it and nothing else was written (a refused or failed start leaves no trace).
    """

    def __init__(self, root: Path | str, *, what: str = "run") -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.what = what
        self.created_dir = False
        self.took_over: dict[str, Any] | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this RunLock")
        if self.root.exists() and not self.root.is_dir():
            raise RunDirBusy(f"output {str(self.root)!r} exists and is not a directory")
        self.created_dir = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                owner = _read_owner(fd)
                os.close(fd)
                self._discard_dir()
                raise RunDirBusy(
                    f"output {str(self.root)!r} is busy: {_describe(owner)} is writing a "
                    f"{self.what} there; wait for it to finish or choose another output"
                )
            # The file may have been deleted (and re-created) by its previous owner between our
            # open and our lock: then we locked an orphan inode; start again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            _unlock(fd)
            os.close(fd)
        owner = _read_owner(fd)
        if owner:  # a lock file nobody holds: its process died (kill -9, power loss)
            self.took_over = owner
            alive = _pid_alive(int(owner.get("pid", -1)))
            log.warning(
                "%s: took over a stale lock: the %s of %s %s",
                self.root,
                self.what,
                _describe(owner),
                "no longer holds it" if alive else "is no longer running",
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv[:6]),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode("utf-8"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # Delete before unlocking: a waiting process then sees a new file (samestat above).
        self.path.unlink(missing_ok=True)
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None
        self._discard_dir()

    def _discard_dir(self) -> None:
        if self.created_dir:
            with contextlib.suppress(OSError):  # not empty: something was written, keep it
                self.root.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


@contextlib.contextmanager
def locked(
    root: Path | str, *, enabled: bool = True, what: str = "run"
) -> Iterator[RunLock | None]:
    """``with locked(dir):`` hold :class:`RunLock` on ``dir`` (a no-op when not ``enabled``,
    e.g. on the ranks of a distributed job that write nothing)."""
    if not enabled:
        yield None
        return
    with RunLock(root, what=what) as lock:
        yield lock
