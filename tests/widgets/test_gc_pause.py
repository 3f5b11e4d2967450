"""The collector pause of a panel's opening (napari_segloss._widgets._gc)."""

from __future__ import annotations

import gc
import weakref

import pytest

from napari_segloss._widgets import _gc


@pytest.fixture
def full_collections():
    """A list that receives one entry per full (generation 2) collection started."""
    started: list[int] = []

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            started.append(1)

    gc.callbacks.append(on_gc)
    yield started
    gc.callbacks.remove(on_gc)


def test_pauses_nest_and_restore_the_previous_state():
    assert gc.isenabled()
    _gc.pause_collection()
    _gc.pause_collection()
    assert not gc.isenabled()
    _gc.resume_collection()
    assert not gc.isenabled()  # one pause is still running
    _gc.resume_collection()
    assert gc.isenabled()
    _gc.resume_collection()  # one too many: nothing happens
    assert gc.isenabled()
    gc.disable()
    try:
        _gc.pause_collection()
        _gc.resume_collection()
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def _burst(n: int) -> list:
    """``n`` new tracked objects that stay alive (as a big import leaves them)."""
    return [[i] for i in range(n)]


def _later_activity() -> None:
    for _ in range(200):
        [{"k": i} for i in range(1000)]  # young collections run meanwhile


@pytest.mark.parametrize("paused", [False, True])
def test_a_burst_made_in_a_pause_starts_no_full_collection(full_collections, paused):
    gc.collect()  # the reference point of CPython's "a quarter more" rule
    n = len(gc.get_objects()) // 2  # twice the quarter that starts a full collection
    full_collections.clear()
    if paused:
        _gc.pause_collection()
    kept = _burst(n)
    if paused:
        _gc.resume_collection()
    _later_activity()
    assert len(kept) == n
    if paused:
        assert full_collections == []
    else:  # the control: the same burst without a pause walks the whole heap
        assert len(full_collections) >= 1


def test_garbage_made_in_a_pause_is_still_collected():
    class Node:
        pass

    _gc.pause_collection()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    ref = weakref.ref(a)
    _gc.resume_collection()
    del a, b
    assert ref() is not None
    gc.collect()
    assert ref() is None


NAME = "Loss Explorer"


def test_explorer_pauses_the_collector_until_its_maps_are_drawn(
    make_napari_viewer, dock, wait_idle, qtbot
):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    assert widget._gc_pause.active and not gc.isenabled()
    wait_idle(widget, timeout=60_000)
    qtbot.waitUntil(lambda: not widget._gc_pause.active, timeout=10_000)
    assert gc.isenabled()
    assert [ly for ly in viewer.layers if ly.name.startswith("PM-Dice m")]
    # nothing stays out of the collector's reach (a frozen object is never collected)
    assert gc.get_freeze_count() == 0
    # each later update pauses it too, from its start until its maps are drawn (a full
    # collection of 0.4 s came while a ticked loss's map was drawn)
    widget.set_losses(["dice", "ce", "focal"])
    qtbot.waitUntil(lambda: widget._gc_pause.active, timeout=5_000)
    assert not gc.isenabled()
    wait_idle(widget, timeout=60_000)
    qtbot.waitUntil(lambda: not widget._gc_pause.active, timeout=10_000)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert [ly for ly in viewer.layers if ly.name.startswith("focal")]


def test_closing_the_explorer_early_ends_its_pause(make_napari_viewer, dock):
    viewer = make_napari_viewer()
    _, widget = dock(NAME, viewer)  # no layers: no maps will come
    assert not gc.isenabled()
    widget.close()
    assert gc.isenabled()


def test_a_pause_ends_by_itself_after_its_limit(qtbot):
    from qtpy.QtCore import QObject

    owner = QObject()
    pause = _gc.CollectorPause(owner, limit_s=0.05)
    assert not gc.isenabled()
    qtbot.waitUntil(gc.isenabled, timeout=2_000)
    assert not pause.active
    pause.end()  # idempotent
    assert gc.isenabled()


def test_a_pause_ends_with_its_owner(qtbot):
    """A panel deleted (or failing in its constructor) before its pause ended."""
    from qtpy.QtCore import QObject

    owner = QObject()
    pause = _gc.CollectorPause(owner, limit_s=60.0)
    assert not gc.isenabled()
    owner.deleteLater()
    qtbot.waitUntil(gc.isenabled, timeout=2_000)
    assert not pause.active


@pytest.mark.parametrize("name", ["Train / Fine-tune", "Predict & Compare"])
def test_train_and_predict_panels_pause_the_collector_while_torch_loads(dock, qtbot, name):
    _, widget = dock(name)
    assert widget._opening.active and not gc.isenabled()
    qtbot.waitUntil(lambda: not widget._opening.active, timeout=60_000)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    if name.startswith("Train"):
        assert widget.ready  # the pause ended when the loss list came
    else:
        assert "cpu" in widget.device.choices


def test_a_kept_freeze_survives_other_pauses_until_it_is_released():
    """The Compare panel keeps what its imports left frozen until it closes; a pause of another
    panel ending meanwhile unfroze it all (its own end did gc.unfreeze())."""
    assert gc.get_freeze_count() == 0
    try:
        _gc.pause_collection()  # the Compare panel's imports
        _gc.resume_collection(keep_frozen=True)
        kept = gc.get_freeze_count()
        assert kept > 0 and gc.isenabled()
        _gc.pause_collection()  # an Explorer update starts and ends
        made = _burst(1000)
        _gc.resume_collection()
        assert gc.get_freeze_count() >= kept + len(made)  # frozen with the rest
        assert gc.isenabled()
    finally:
        _gc.release_frozen()  # the Compare panel closes
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_release_during_a_pause_leaves_the_unfreeze_to_the_pause():
    try:
        _gc.pause_collection()
        _gc.resume_collection(keep_frozen=True)
        _gc.pause_collection()
        _gc.release_frozen()
        assert not gc.isenabled()
    finally:
        _gc.resume_collection()
    assert gc.get_freeze_count() == 0 and gc.isenabled()


def test_the_compare_panel_keeps_its_imports_frozen_until_it_is_closed(
    make_napari_viewer, dock, wait_idle, qtbot
):
    viewer = make_napari_viewer()
    _, widget = dock("Compare Losses", viewer)
    wait_idle(widget, timeout=120_000)  # its loss list loaded (torch imported, kept frozen)
    assert gc.get_freeze_count() > 0 and gc.isenabled()
    _gc.pause_collection()  # another panel's pause ending meanwhile keeps it frozen
    _gc.resume_collection()
    assert gc.get_freeze_count() > 0
    viewer.window.remove_dock_widget(widget.parent())  # napari's close button
    qtbot.waitUntil(lambda: gc.get_freeze_count() == 0, timeout=5_000)


def test_the_manifests_panels_are_imported_with_the_collector_paused():
    # napari's manifest names each panel through the package, whose __getattr__ imports the
    # panel's module in a pause: a fresh interpreter records the collector's state at that import
    import subprocess
    import sys
    import textwrap

    probe = textwrap.dedent(
        """
        import gc, sys
        seen = {}

        class Spy:
            def find_spec(self, name, path, target=None):
                if name.startswith("napari_segloss._widgets.") and name.endswith("_panel"):
                    seen[name] = gc.isenabled()

        sys.meta_path.insert(0, Spy())
        import napari_segloss._widgets as widgets
        widgets.PredictWidget
        print(seen.get("napari_segloss._widgets.predict_panel"), gc.isenabled())
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]
