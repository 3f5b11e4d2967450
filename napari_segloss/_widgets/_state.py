"""State shared between panels: the checkpoints trained (or opened) in this session.

The Train panel registers each finished run's checkpoint here; the Predict & Compare panel and
the Loss Explorer list them at once, most recent first.  Module level on purpose: panels are
created independently by napari, and this is the simplest object they all see.
"""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal


class CheckpointRegistry:
    """An ordered, de-duplicated list of checkpoint paths with a ``changed`` signal."""

    changed = Signal()
    MAX = 20

    def __init__(self) -> None:
        self._paths: list[Path] = []

    def add(self, path: str | Path) -> None:
        p = Path(path).resolve()
        if p in self._paths:
            self._paths.remove(p)
        self._paths.insert(0, p)
        del self._paths[self.MAX :]
        self.changed.emit()

    def paths(self) -> list[Path]:
        """Registered checkpoints that still exist, most recent first."""
        return [p for p in self._paths if p.exists()]

    def clear(self) -> None:
        self._paths.clear()
        self.changed.emit()


CHECKPOINTS = CheckpointRegistry()
