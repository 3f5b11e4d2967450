"""Keep Python's full garbage collections out of a panel's opening.

A full (generation 2) collection walks every object the collector tracks while holding the GIL,
so the window freezes whichever thread starts it: a few hundred milliseconds once napari and
torch are loaded (benchmarks/RESULTS.md). CPython starts one when the objects promoted to the
oldest generation since the last full collection exceed a quarter of what that one kept. Opening
the Loss Explorer (torch's import in a worker, the grid, the map layers) makes about three such
quarters, the Train and Predict panels (torch's import) about two: freezes in the first seconds,
when the user watches the window most.

:class:`CollectorPause` switches the collector off for that burst and then moves everything made
meanwhile into the oldest generation in one step (``gc.freeze()`` then ``gc.unfreeze()``),
which CPython does without a walk and without counting it towards the next full collection. The
objects stay collectable: the next full collection, whenever the program's own activity starts
it, walks them as usual; cyclic garbage made during the pause waits for that collection (no
leak, unlike a ``gc.freeze()`` kept in place, which would keep a layer deleted later in memory).
"""

from __future__ import annotations

import gc
import threading

from qtpy.QtCore import QObject, QTimer

_lock = threading.Lock()
_paused = 0  # pauses in progress (several panels may open at once)
_was_enabled = True  # the collector's state before the first of them
_keep_frozen = False  # what the pauses made stays frozen until release_frozen (see below)


def pause_collection() -> None:
    """Switch the cyclic collector off until the matching :func:`resume_collection`."""
    global _paused, _was_enabled
    with _lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1


def resume_collection(keep_frozen: bool = False) -> None:
    """End one :func:`pause_collection`; after the last, hand what was made to the oldest
    generation without a walk (see the module docstring) and switch the collector back on.

    ``keep_frozen``: everything that exists then stays out of the collector's reach
    (``gc.freeze``) until :func:`release_frozen`, so that full collections walk only what is
    made later (the Compare panel, after importing napari's, torch's and smp's millions of
    long-lived objects). Pauses ending meanwhile keep theirs frozen too.
    """
    global _paused, _keep_frozen
    with _lock:
        if _paused == 0:
            return
        _paused -= 1
        _keep_frozen = _keep_frozen or keep_frozen
        if _paused:
            return
        gc.freeze()
        if not _keep_frozen:
            gc.unfreeze()
        if _was_enabled:
            gc.enable()


def release_frozen() -> None:
    """End ``keep_frozen``: everything frozen is visible to the collector again (a frozen
    object that became cyclic garbage, e.g. a removed napari layer, is collected only after
    this)."""
    global _keep_frozen
    with _lock:
        _keep_frozen = False
        if _paused == 0:  # else the last pause's end unfreezes
            gc.unfreeze()


class CollectorPause:
    """One pause of the collector, from its creation until :meth:`end` (idempotent), the
    owner's destruction or ``limit_s`` seconds at the latest, whichever comes first: a panel
    that fails while opening or is deleted before its loader reports cannot leave the collector
    off (the timer is not the owner's child, so it fires after the owner is gone)."""

    def __init__(self, owner: QObject, limit_s: float = 30.0) -> None:
        self._active = True
        pause_collection()
        QTimer.singleShot(int(limit_s * 1000), self.end)
        owner.destroyed.connect(self.end)

    @property
    def active(self) -> bool:
        return self._active

    def end(self, *_: object) -> None:
        if self._active:
            self._active = False
            resume_collection()
