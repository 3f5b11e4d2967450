"""Panels stay legible when several are docked (issue 17 point 7: labels squashed to "qamma").

napari stacks dock widgets in one column without scrolling. Two of our panels used to need
about 1,900 pixels together: the window was forced taller than a screen (without a window
manager, as here, it simply grows), and where it cannot grow Qt squashes the rows. Now each
panel scrolls inside its share, and every label keeps the room its text needs.
"""

from __future__ import annotations

import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import QApplication, QLabel

from napari_segloss._widgets._layout import PanelScrollArea

WINDOW = (1400, 950)  # a laptop-sized napari window
PLUGIN = "napari-segloss"


def _settle(qtbot, ms: int = 300) -> None:
    qtbot.wait(ms)
    QApplication.processEvents()


def _clipped_labels(panel) -> list[str]:
    """Visible labels narrower or lower than their text needs."""
    bad = []
    for label in panel.findChildren(QLabel):
        if not label.isVisibleTo(panel) or not label.text() or label.wordWrap():
            continue
        need = label.minimumSizeHint()
        if label.width() < need.width() or label.height() < label.fontMetrics().height():
            bad.append(f"{label.text()!r}: {label.width()}x{label.height()} < {need}")
    return bad


@pytest.mark.parametrize("second", ["Train / Fine-tune", "Predict & Compare"])
def test_two_docked_panels_are_legible(make_napari_viewer, qtbot, second):
    viewer = make_napari_viewer(show=True)  # sizes are laid out in a shown window only
    window = viewer.window._qt_window
    window.resize(*WINDOW)
    _, explorer = viewer.window.add_plugin_dock_widget(PLUGIN, "Loss Explorer")
    _, other = viewer.window.add_plugin_dock_widget(PLUGIN, second)
    qtbot.waitUntil(lambda: explorer.ready, timeout=60_000)
    if hasattr(other, "ready"):
        qtbot.waitUntil(lambda: other.ready, timeout=60_000)
    explorer.loss_list.setCurrentRow(explorer.selected_losses().index("dice"))
    _settle(qtbot)

    # the panels fit the window instead of forcing it taller than a screen
    assert window.height() <= WINDOW[1], window.size()
    for panel in (explorer, other):
        assert panel.isVisible()
        area = panel.findChild(PanelScrollArea)
        assert area is not None
        assert panel.height() >= PanelScrollArea.MIN_HEIGHT  # neither is reduced to a row
        # the content keeps its natural height and scrolls; never squashed below it
        content = area.widget()
        assert content.height() >= content.minimumSizeHint().height()
        assert not _clipped_labels(panel), _clipped_labels(panel)

    if second == "Train / Fine-tune":
        gamma = next(
            lb for lb in other.param_form("pm_dice").findChildren(QLabel) if lb.text() == "gamma"
        )
        assert gamma.width() >= gamma.fontMetrics().horizontalAdvance("gamma")
        assert gamma.height() >= gamma.fontMetrics().height()


def test_a_narrow_dock_does_not_cut_the_forms(make_napari_viewer, qtbot):
    """The dock cannot get narrower than the form (no clipped labels, no horizontal scroll)."""
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Train / Fine-tune")
    qtbot.waitUntil(lambda: widget.ready, timeout=60_000)
    area = widget.findChild(PanelScrollArea)
    content = area.widget()
    assert area.minimumSizeHint().width() >= content.minimumSizeHint().width()
    viewer.window._qt_window.resize(600, 700)  # as narrow as the window allows
    _settle(qtbot)
    assert content.width() >= content.minimumSizeHint().width()
    assert not _clipped_labels(widget), _clipped_labels(widget)


def test_four_docked_panels_scroll_instead_of_growing_the_window(make_napari_viewer, qtbot):
    """All four panels docked in a 1200x900 window: the window stays 900 px high (it grew to
    1411 px: each panel's minimum height was the dock's), and a panel taller than its dock
    scrolls there."""
    size = (1200, 900)
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*size)
    _settle(qtbot)
    names = ["Loss Explorer", "Train / Fine-tune", "Predict & Compare", "Compare Losses"]
    panels = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in names]
    explorer, train, predict, compare = panels
    # loaded (the lists fill the forms), and no worker left to outlive the viewer
    qtbot.waitUntil(lambda: explorer.ready and train.ready and not compare.busy, timeout=120_000)
    qtbot.waitUntil(lambda: not predict._devices_worker.is_running, timeout=60_000)
    _settle(qtbot, 500)
    assert window.height() <= size[1], window.size()
    for name, panel in zip(names, panels, strict=True):
        area = panel.findChild(PanelScrollArea)
        assert area is not None, name
        assert panel.height() >= PanelScrollArea.MIN_HEIGHT, (name, panel.height())
        content, bar = area.widget(), area.verticalScrollBar()
        assert content.height() >= content.minimumSizeHint().height(), name  # not squashed
        if content.height() > area.viewport().height():
            assert bar.isVisible() and bar.maximum() > 0, name
        assert not _clipped_labels(panel), (name, _clipped_labels(panel))
    # four docks this small are taller than their share: at least one of them scrolls
    assert any(p.findChild(PanelScrollArea).verticalScrollBar().isVisible() for p in panels)


def _page_gap(stack) -> int:
    """How much taller a stack of forms is than the page it shows."""
    return stack.height() - stack.currentWidget().sizeHint().height()


def test_a_loss_with_few_parameters_leaves_no_gap_under_its_form(make_napari_viewer, qtbot):
    """A stack of parameter forms is as tall as the form it shows: Qt's stack took the height
    of its tallest page, so one parameter (ce: weight) sat above 200 px of empty panel."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    _, explorer = viewer.window.add_plugin_dock_widget(PLUGIN, "Loss Explorer")
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train / Fine-tune")
    qtbot.waitUntil(lambda: explorer.ready and train.ready, timeout=60_000)
    stacks = {"explorer": explorer.param_stack, "train": train.loss_params}
    heights = {}
    for loss in ("ce+pm_dice", "ce"):
        [item] = explorer.loss_list.findItems(loss, Qt.MatchFlag.MatchExactly)
        explorer.loss_list.setCurrentItem(item)
        train.loss.value = loss
        _settle(qtbot)
        for name, stack in stacks.items():
            assert abs(_page_gap(stack)) <= 2, (name, loss, _page_gap(stack))
            heights[name, loss] = stack.height()
    for name in stacks:  # the compound's nine parameters against ce's one
        assert heights[name, "ce"] < heights[name, "ce+pm_dice"] - 150, heights


def test_the_explorer_values_are_in_view_when_its_first_maps_come(
    make_napari_viewer, qtbot, wait_idle
):
    """The loss values sit under the list that ticks the losses, each row shown (no scroll bar
    of the table's own), without scrolling the panel of a laptop-sized window: they were at
    the panel's foot, below its fold."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    viewer.open_sample(PLUGIN, "kvasir")
    _, explorer = viewer.window.add_plugin_dock_widget(PLUGIN, "Loss Explorer")
    wait_idle(explorer, timeout=60_000)
    _settle(qtbot)
    table = explorer.table
    assert table.rowCount() == 2 + 4  # ce, dice and PM Dice at the four γ
    rows = sum(table.rowHeight(r) for r in range(table.rowCount()))
    assert table.viewport().height() >= rows
    assert table.verticalScrollBar().maximum() == 0
    area = explorer.findChild(PanelScrollArea)
    assert area.verticalScrollBar().value() == 0
    bottom = table.mapTo(area.viewport(), QPoint(0, table.height())).y()
    assert 0 < bottom <= area.viewport().height(), (bottom, area.viewport().height())
    above = explorer.param_stack.mapTo(area.viewport(), QPoint(0, 0)).y()
    assert bottom <= above  # before the parameters of the selected loss


def _field_x(widget) -> int:
    box = widget.parentWidget()
    while type(box).__name__ != "QGroupBox":
        box = box.parentWidget()
    return widget.mapTo(box, QPoint(0, 0)).x()


def test_the_fields_of_a_box_start_at_one_x(make_napari_viewer, qtbot):
    """The rows of a stacked page (what-if settings, folder, held-out data, new model) line up
    with the rows around it: each form sized its label column alone, and the page's fields
    started left or right of the others (27 px left in the Explorer's data box)."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    names = ["Loss Explorer", "Train / Fine-tune", "Compare Losses"]
    explorer, train, compare = (viewer.window.add_plugin_dock_widget(PLUGIN, n)[1] for n in names)
    qtbot.waitUntil(lambda: explorer.ready and train.ready and not compare.busy, timeout=60_000)
    train.source.value = "folder"
    _settle(qtbot)
    setup = compare.setup
    columns = {
        "explorer data": [explorer.image_picker, explorer.source.native,
                          explorer.whatif_kind.native, explorer.class_spin.native],
        "train data": [train.source.native, train.folder.native, train.folder_kind.native,
                       train.image_size.native],
        "train model": [train.start_from.native, train.arch.native, train.encoder.native],
        "compare data": [setup.source_combo, setup.image_picker, setup.val_spin],
    }  # fmt: skip
    for box, fields in columns.items():
        xs = [_field_x(w) for w in fields]
        assert max(xs) - min(xs) <= 1, (box, xs)


def _tab_chain(panel, wanted) -> list[str]:
    """The names of ``wanted`` (name -> widget) in the order Tab visits them in ``panel``."""
    by_id = {id(w): name for name, w in wanted.items()}
    seen, order = set(), []
    widget = next(iter(wanted.values()))
    for _ in range(2000):  # the chain is a ring: once round it
        if id(widget) in by_id and by_id[id(widget)] not in seen:
            seen.add(by_id[id(widget)])
            order.append(by_id[id(widget)])
        widget = widget.nextInFocusChain()
    return order


def _rotate(order: list[str], first: str) -> list[str]:
    i = order.index(first)
    return order[i:] + order[:i]


def test_tab_follows_the_rows_of_every_panel(dock, wait_idle, qtbot):
    """Tab visits each panel's controls top to bottom: a loss's parameters (made once the loss
    list has loaded) right after the loss, not after Start; Run model and Compare after their
    rows, not before them."""
    viewer, train = dock("Train / Fine-tune")
    qtbot.waitUntil(lambda: train.ready, timeout=60_000)
    gamma = train.param_form("pm_dice").editors["gamma"]
    wanted = {"loss": train.loss.native, "gamma": gamma, "epochs": train.epochs.native,
              "start": train.start_button, "stop": train.stop_button}  # fmt: skip
    assert _rotate(_tab_chain(train, wanted), "loss") == list(wanted)
    train.loss.value = "focal"  # a form made later joins the chain at its place too
    wanted["gamma"] = train.param_form("focal").editors["gamma"]
    assert _rotate(_tab_chain(train, wanted), "loss") == list(wanted)

    _, predict = dock("Predict & Compare", viewer)
    wanted = {"image": predict.image_picker, "checkpoint": predict.ckpt_picker.combo,
              "device": predict.device.native, "run": predict.run_button,
              "prediction": predict.pred_picker, "truth": predict.gt_picker,
              "compare": predict.compare_button}  # fmt: skip
    assert _rotate(_tab_chain(predict, wanted), "image") == list(wanted)

    _, compare = dock("Compare Losses", viewer)
    wait_idle(compare, timeout=120_000)
    setup = compare.setup
    wanted = {"loss": setup.loss_combo, "add": setup.add_button,
              "gamma": setup._form("pm_dice").editors["gamma"], "arch": setup.arch_combo,
              "start": compare.start_button}  # fmt: skip
    assert _rotate(_tab_chain(compare, wanted), "loss") == list(wanted)
