"""What the Compare Losses panel shows: the runs as they train, the results table and each
loss's errors side by side in napari's grid.

* :class:`RunsTable`: one row per ``(loss, seed)`` run with its progress bar, live validation
  Dice and status, fed by the comparison events.
* :class:`ResultsTable`: the paper-shaped table of
  :meth:`napari_segloss.engine.compare_results.CompareResults.table` (mean ± std over seeds,
  rank), sortable by any column, the best loss highlighted.
* :class:`OverlayGrid`: for one held-out image
  (:meth:`~napari_segloss.engine.compare_results.CompareResults.view`), a grid cell with the
  image and its ground truth, then one per loss with its error overlay (TP green, FP red, FN
  blue: :data:`napari_segloss.overlay.ERROR_COLORS`) over the image, titled with the loss, its
  parameters and that image's Dice.

In napari's grid each layer has a cell of its own unless the grid's stride groups them: the
grid here runs with stride -2, so each overlay shares its cell with a copy of the image under
it, counted from the top of the layer list (the other layers are hidden while it is shown, and
shown again when it is turned off).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.colormaps import CyclicLabelColormap
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor, QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from napari_segloss.engine.events import (
    CompareRunDone,
    CompareRunInfo,
    CompareRunProgress,
    CompareRunStart,
    TrainEpoch,
    TrainStart,
)

from .._napari_io import mask_colormap
from ._common import (
    camera_of,
    error_layer_props,
    find_owned,
    glyph_steps,
    grid_of,
    index_of,
    is_owned,
    remove_owned,
    rename_layers,
    upsert_layer,
)
from ._grid import GridView

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

    from napari_segloss.engine.compare_results import CompareResults, ImageView, TableRow

PANEL = "compare"
#: layers per grid cell: the image copy under its overlay (negative: counted from the top)
GRID_STRIDE = -2
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
BEST_BRUSH = QBrush(QColor(60, 120, 60))
#: ground-truth outline of a binary mask (multi-class masks keep napari's label colours)
TRUTH_COLOR = (1.0, 0.85, 0.0, 1.0)
BEST_MARK = "★ "
#: outline width (pixels) of the ground truth in its cell
TRUTH_CONTOUR = 2
#: room for the sort arrow in the sorted column's header (pixels)
SORT_ARROW = 18


def _truth_colormap() -> CyclicLabelColormap:
    """Every label but 0 in ``TRUTH_COLOR`` (cyclic: no numba compile in napari, unlike a direct
    colormap)."""
    return CyclicLabelColormap(colors=[(0.0, 0.0, 0.0, 0.0), TRUTH_COLOR])


class _SortItem(QTableWidgetItem):
    """A table cell sorted by the number in ``SORT_ROLE`` (its text otherwise)."""

    def __lt__(self, other: QTableWidgetItem) -> bool:
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if isinstance(a, int | float) and isinstance(b, int | float):
            return a < b
        return super().__lt__(other)


def _item(text: str, key: float | str | None = None, *, right: bool = False) -> _SortItem:
    item = _SortItem(text)
    if key is not None:
        item.setData(SORT_ROLE, key)
    if right:
        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return item


def short_name(name: str, limit: int = 24) -> str:
    """A held-out item's file name (no folders), shortened to ``limit`` characters."""
    text = Path(name).name
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact(display: str) -> str:
    """A loss's display name with γ for gamma (table rows and grid titles are narrow)."""
    return display.replace("gamma=", "γ=")


def _run_name(run: CompareRunInfo) -> str:
    return f"{compact(run.display)} · seed {run.seed}"


class RunsTable(QTableWidget):
    """The runs of a comparison as they go: progress bar, live validation Dice, status."""

    COLUMNS = ("run", "progress", "val Dice", "status")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(self.COLUMNS))
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.bars: list[QProgressBar] = []
        #: per run: the validation Dice of each epoch so far (what the "val Dice" column shows)
        self.val_dice: list[list[float]] = []
        self._epochs: list[int] = []

    def start(self, runs: Sequence[CompareRunInfo], actions: Sequence[str]) -> None:
        self.setRowCount(len(runs))
        self.bars = []
        self.val_dice = [[] for _ in runs]
        self._epochs = [0 for _ in runs]
        for r, (run, action) in enumerate(zip(runs, actions, strict=True)):
            self.setItem(r, 0, _item(_run_name(run)))
            bar = QProgressBar(self)
            bar.setRange(0, 1000)
            bar.setValue(1000 if action == "reuse" else 0)
            bar.setTextVisible(True)
            bar.setFormat("%p%")
            self.setCellWidget(r, 1, bar)
            self.bars.append(bar)
            self.setItem(r, 2, _item("", right=True))
            waiting = {"reuse": "done before: reused", "resume": "to resume", "retry": "to retry"}
            self.setItem(r, 3, _item(waiting.get(action, "waiting")))

    def _set(self, row: int, column: int, text: str, tip: str = "") -> None:
        item = self.item(row, column)
        if item is not None:
            item.setText(text)
            item.setToolTip(tip or text)

    def on_event(self, event: Any) -> None:
        """Update from one comparison event (CompareRunStart / Progress / Done)."""
        if not isinstance(event, CompareRunStart | CompareRunProgress | CompareRunDone):
            return
        row = event.run.index
        if row >= len(self.bars):
            return
        if isinstance(event, CompareRunStart) and event.action != "reuse":
            verb = {"resume": "resuming", "retry": "retrying"}.get(event.action, "training")
            self._set(row, 3, f"{verb}…")
        elif isinstance(event, CompareRunProgress):
            self.bars[row].setValue(round(1000 * event.run_progress))
            inner = event.event
            if isinstance(inner, TrainStart):
                self._epochs[row] = inner.epoch
                self._set(row, 3, f"training on {inner.device}")
            elif isinstance(inner, TrainEpoch) and inner.val_dice is not None:
                self.val_dice[row].append(float(inner.val_dice))
                # in % as the results table and the "done" status beside it
                history = " → ".join(f"{100 * d:.1f}" for d in self.val_dice[row][-3:])
                self._set(row, 2, f"{100 * inner.val_dice:.1f} %", f"epochs … {history} (%)")
                self._set(row, 3, f"epoch {inner.epoch}")
        elif isinstance(event, CompareRunDone):
            if event.status == "ok":
                self.bars[row].setValue(1000)
                dice = event.metrics.get("mDice", math.nan)
                self._set(row, 3, f"done · mDice {dice:.1f} %", "held-out mean Dice (%)")
            elif event.status == "failed":
                self._set(row, 3, f"failed: {event.error}")
            else:
                self._set(row, 3, "stopped (Start resumes it)")

    def status_of(self, row: int) -> str:
        item = self.item(row, 3)
        return item.text() if item is not None else ""


#: what the table's metric columns average (header tooltips)
_COLUMN_NAMES = {
    "mDice": "Dice",
    "mIoU": "IoU (Jaccard index)",
    "mNSD": "normalised surface Dice at the NSD tolerance",
    "mPrec.": "precision",
    "mRec.": "recall",
}


def column_header(column: str) -> str:
    """A column's header: ``"Dice"`` for ``"mDice"`` (the tooltip says it is a mean), so that
    the table fits the dock's width; per-class columns (``"Dice RV"``) as they are."""
    return column[1:] if column[:1] == "m" and column[1:2].isupper() else column


def two_lines(cell: str) -> str:
    """``"82.00 ± 2.00"`` as ``"82.00\n±2.00"``: a column half as wide."""
    return cell.replace(" ± ", "\n±")


def column_tooltip(column: str) -> str:
    """What a results column holds, in which unit and which way is better."""
    seeds = "; mean ± std over seeds"
    if column == "mHD95":
        return (
            "95th-percentile Hausdorff distance, mean over the foreground classes and held-out "
            "images, in pixels (3D volumes: their voxel spacing, usually mm); lower is better"
            + seeds
        )
    if column.startswith("Dice "):
        name = column[5:]  # "RV", or "class 1" for classes without names
        named = name if name.startswith("class ") else f"class {name}"
        return f"Dice of {named} over the held-out images, in %" + seeds
    name = _COLUMN_NAMES.get(column, column)
    return (
        f"{name}, mean over the foreground classes and held-out images, in %; higher is better"
        + seeds
    )


class ResultsTable(QTableWidget):
    """One row per loss: mean ± std over seeds of each metric, rank, runs; sortable by a
    click on any header (numbers sort by value); the best loss in bold on green."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 0, parent)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        # the numbers as wide as they need, the loss names wrapped in what is left (see
        # _fit_columns): at the default dock width every column shows without scrolling
        self.horizontalHeader().setMinimumSectionSize(16)
        self.horizontalHeader().sortIndicatorChanged.connect(lambda *_: self._fit_columns())
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setWordWrap(True)
        self.setTextElideMode(Qt.TextElideMode.ElideNone)
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 0.9)  # six "mean ± std" columns side by side
        self.setFont(font)
        self.horizontalHeader().setFont(font)
        # grid order (the losses as listed) until the user clicks a header
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.setSortingEnabled(True)
        self.rows: dict[str, TableRow] = {}
        self.best: str | None = None

    def fill(self, results: CompareResults, rank_by: str) -> None:
        rows = results.table(rank_by)
        best = results.best(rank_by)
        self.best = best.loss if best is not None else None
        self.rows = {row.loss: row for row in rows}
        columns = results.columns
        header = self.horizontalHeader()
        sort_column, order = header.sortIndicatorSection(), header.sortIndicatorOrder()
        self.setSortingEnabled(False)  # filling a sorted table moves rows under our hands
        self.clear()
        self.setColumnCount(len(columns) + 3)
        self.setRowCount(len(rows))
        self.setHorizontalHeaderLabels(["loss", *map(column_header, columns), "rank", "runs"])
        for j, column in enumerate(columns, start=1):
            self.horizontalHeaderItem(j).setToolTip(column_tooltip(column))
        self.horizontalHeaderItem(len(columns) + 1).setToolTip(f"rank by {column_header(rank_by)}")
        self.horizontalHeaderItem(len(columns) + 2).setToolTip("finished runs (seeds)")
        bold = QFont()
        bold.setBold(True)
        for r, row in enumerate(rows):
            name = (BEST_MARK if row.loss == self.best else "") + compact(row.name)
            first = _item(name, row.name)
            first.setData(Qt.ItemDataRole.UserRole, row.loss)
            first.setToolTip(f"{row.loss}: {row.params or 'default parameters'}")
            items = [first]
            for c in columns:
                mean = row.mean.get(c, math.nan)
                key = mean if not math.isnan(mean) else -math.inf
                items.append(_item(two_lines(row.cell(c)), key, right=True))
            items.append(_item("-" if row.rank is None else str(row.rank),
                               math.inf if row.rank is None else row.rank, right=True))  # fmt: skip
            notes = [f"{row.n_failed} failed"] if row.n_failed else []
            notes += [f"{row.n_pending} to run"] if row.n_pending else []
            runs = f"{row.n_ok}" + (f" ({', '.join(notes)})" if notes else "")
            items.append(_item(runs, row.n_ok, right=True))
            first.setToolTip(f"{first.toolTip()}; {runs} finished run(s)")
            for c, item in enumerate(items):
                if row.loss == self.best:
                    item.setFont(bold)
                    item.setBackground(BEST_BRUSH)
                self.setItem(r, c, item)
        self.setSortingEnabled(True)
        if 0 <= sort_column < self.columnCount():
            self.sortItems(sort_column, order)
        # "runs" says something only while a run is missing (else: the loss's tooltip)
        done = len({row.n_ok for row in rows}) <= 1 and not any(
            row.n_failed or row.n_pending for row in rows
        )
        self.setColumnHidden(self.columnCount() - 1, done)
        self._fit_columns()

    def _fit_columns(self) -> None:
        """The loss column takes the width the numbers leave (its names wrap, down to their
        longest word); the table as tall as its rows, so the image picker stays right below."""
        header = self.horizontalHeader()
        if self.columnCount() == 0:
            return
        # Qt sizes every section for a sort arrow (~19 px each, 170 px in all): only the
        # sorted column gets room for one
        sorted_column = header.sortIndicatorSection() if self.isSortingEnabled() else -1
        for c in range(1, self.columnCount()):
            if self.isColumnHidden(c):
                continue
            item = self.horizontalHeaderItem(c)
            text = header.fontMetrics().horizontalAdvance(item.text() if item else "")
            arrow = SORT_ARROW if c == sorted_column else 0
            header.resizeSection(c, max(self.sizeHintForColumn(c), text + 12 + arrow))
        numbers = sum(
            header.sectionSize(c)
            for c in range(1, self.columnCount())
            if not self.isColumnHidden(c)
        )
        metrics = self.fontMetrics()
        words = [w for r in range(self.rowCount()) if (it := self.item(r, 0)) is not None
                 for w in it.text().split()]  # fmt: skip
        longest = max((metrics.horizontalAdvance(w) for w in [*words, "loss"]), default=0)
        header.resizeSection(0, max(longest + 16, self.viewport().width() - numbers))
        self.resizeRowsToContents()
        height = header.height() + 2 * self.frameWidth() + 24
        self.setMaximumHeight(height + sum(self.rowHeight(r) for r in range(self.rowCount())))

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._fit_columns()  # the dock was resized: the loss column takes the difference

    def loss_at(self, row: int) -> str | None:
        item = self.item(row, 0)
        return None if item is None else item.data(Qt.ItemDataRole.UserRole)

    def selected_loss(self) -> str | None:
        rows = {index.row() for index in self.selectedIndexes()}
        return self.loss_at(min(rows)) if rows else None

    def displayed_losses(self) -> list[str]:
        """Row labels in the order shown (after sorting)."""
        return [self.loss_at(r) or "" for r in range(self.rowCount())]


class OverlayGrid:
    """Each loss's errors on one held-out image, side by side (see the module docstring)."""

    def __init__(self, viewer: napari.Viewer, on_user_toggle: Callable[[bool], Any]) -> None:
        self.viewer = viewer
        self._on_user_toggle = on_user_toggle
        self.grid_view = GridView(viewer, self._on_user_grid)
        self._hidden: list[Layer] = []  # layers we hid while the grid shows ours
        #: title layers (ground truth, then one error overlay per loss), in cell order
        self.titled: list[Layer] = []

    # -- layers
    def layers(self) -> list[Layer]:
        return [ly for ly in self.viewer.layers if is_owned(ly, PANEL)]

    def _cells(
        self, view: ImageView, best: str | None
    ) -> list[tuple[str, np.ndarray, str, dict[str, Any]]]:
        """``(key, labels, title, properties)`` of the label layer of each cell, in order."""
        gt = view.ground_truth
        binary = int(gt.max(initial=0)) <= 1
        truth_props: dict[str, Any] = {"opacity": 1.0}
        if binary:
            truth_props["colormap"] = _truth_colormap()
        elif (colormap := mask_colormap(gt)) is not None:  # the reader's colours, not napari's
            truth_props["colormap"] = colormap  # dark red and blue beside the FP / FN legend
        cells = [("truth", gt, f"ground truth · {short_name(view.name)}", truth_props)]
        errors_props = error_layer_props()
        for cell in view.cells:
            title = (BEST_MARK if cell.loss == best else "") + compact(cell.title)
            if cell.note:
                title += f" ({cell.note})"
            errors = cell.errors if cell.errors is not None else np.zeros(gt.shape, np.uint8)
            cells.append((f"errors:{cell.loss}", errors, title, errors_props))
        return cells

    def draw_steps(self, view: ImageView, best: str | None, grid: bool) -> list[Callable[[], Any]]:
        """Small main-thread steps (for a TaskQueue) that draw ``view``: one per new cell."""
        cells = self._cells(view, best)
        keys = [key for key, *_ in cells]
        new = [k for k in keys if find_owned(self.viewer, PANEL, k) is None]
        rgb = view.image.ndim == 3 and view.image.shape[-1] in (3, 4)
        state = {"reset": False}

        def prepare() -> None:
            keep = keys + [f"image:{k}" for k in keys]
            remove_owned(self.viewer, PANEL, keep)
            rename_layers([(layer, title) for key, _, title, _ in cells
                           if (layer := find_owned(self.viewer, PANEL, key)) is not None])  # fmt: skip
            if grid:
                state["reset"] = self.show_grid(len(cells))

        def put_image(key: str, title: str) -> None:
            upsert_layer(self.viewer, PANEL, f"image:{key}", "image", view.image,
                         name=f"image · {title}", rgb=rgb, visible=True)  # fmt: skip

        def put_labels(key: str, labels: np.ndarray, title: str, props: dict[str, Any]) -> None:
            if find_owned(self.viewer, PANEL, key) is not None:
                props = {}  # its colours are set: a new colormap object would redraw it twice
            layer = upsert_layer(self.viewer, PANEL, key, "labels", labels, name=title,
                                 visible=True, **props)  # fmt: skip
            if key == "truth" and layer.contour != TRUTH_CONTOUR:
                layer.contour = TRUTH_CONTOUR  # an outline: the image stays visible

        def put(key: str, labels: np.ndarray, title: str, props: dict[str, Any]) -> None:
            put_image(key, title)
            put_labels(key, labels, title, props)

        def titles(upto: int) -> None:
            self._order(keys)
            self.titled = [find_owned(self.viewer, PANEL, k) for k in keys]
            if self.grid_view.active:
                self.grid_view.decorate([], self.titled[:upto])

        def finish() -> None:
            if self.grid_view.active:
                self.grid_view.settle()
            if state["reset"] or new:
                self.fit()

        steps: list[Callable[[], Any]] = [prepare]
        steps += [lambda c=c: put(*c) for c in cells if c[0] not in new]
        # A new layer and its first draw take ~0.1 s each: one per event-loop turn. Added
        # last cell first, so that they land in grid order without moving (each move
        # re-lays out the whole grid).
        for c in reversed(cells):
            if c[0] in new:
                steps += [lambda c=c: put_image(c[0], c[2]), lambda c=c: put_labels(*c)]
        # New titles one per turn too, their glyphs loaded a few per turn ahead (the first
        # draw of a title renders its new glyphs, all in that draw)
        steps += glyph_steps(self.viewer, [title for _, _, title, _ in cells])
        first = 1 if new else len(cells)
        steps += [lambda k=k: titles(k) for k in range(first, len(cells) + 1)]
        return [*steps, finish]

    def _order(self, keys: Sequence[str]) -> None:
        """Cell ``i`` = the ``i``-th pair from the top: each overlay right above its image.

        Moved one at a time: napari's ``move_multiple`` fails on some full permutations.
        """
        wanted = []
        for key in reversed(keys):
            wanted += [
                find_owned(self.viewer, PANEL, f"image:{key}"),
                find_owned(self.viewer, PANEL, key),
            ]
        wanted = [ly for ly in wanted if ly is not None]
        n = len(self.viewer.layers)
        if [index_of(self.viewer, ly) for ly in wanted] == list(range(n - len(wanted), n)):
            return
        for layer in wanted:
            self.viewer.layers.move(index_of(self.viewer, layer), len(self.viewer.layers))

    def fit(self, margin: float = 0.05) -> None:
        """Fit the camera to our layers: the user's (hidden) may be much larger, and napari's
        ``reset_view(layers=...)`` fails when they have fewer dimensions than the viewer."""
        layers = self.layers()
        viewer = self.viewer
        if not layers or viewer.dims.ndisplay != 2:
            viewer.reset_view()
            return
        extents = [ly.extent for ly in layers]
        lo = np.min([e.world[0][-2:] - e.step[-2:] / 2 for e in extents], axis=0)
        hi = np.max([e.world[1][-2:] + e.step[-2:] / 2 for e in extents], axis=0)
        size = np.maximum(hi - lo, 1e-9)
        camera = camera_of(viewer)
        camera.center = tuple(float(c) for c in lo + size / 2)
        cell = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float)
        camera.zoom = float((1 - margin) * np.min(cell / size))

    # -- grid
    def show_grid(self, cells: int | None = None) -> bool:
        """Our grid on (the user's layout remembered, their visible layers hidden); True when
        the view changed."""
        changed = self.grid_view.show(cells)
        grid_of(self.viewer).stride = GRID_STRIDE
        mine = {ly.unique_id for ly in self.layers()}
        for layer in self.viewer.layers:
            if layer.unique_id not in mine and layer.visible:
                layer.visible = False
                self._hidden.append(layer)
        if self.titled:
            self.grid_view.decorate([], [ly for ly in self.titled if ly is not None])
        return changed

    def hide_grid(self) -> None:
        """The user's grid settings, camera and layer visibility back."""
        self.grid_view.restore()
        self._show_hidden()

    def _show_hidden(self) -> None:
        hidden, self._hidden = self._hidden, []
        for layer in hidden:
            with contextlib.suppress(Exception):  # the layer may be gone
                layer.visible = True

    @property
    def hidden_names(self) -> list[str]:
        return [ly.name for ly in self._hidden]

    def _on_user_grid(self, enabled: bool) -> None:
        if not enabled:
            self._show_hidden()
        self._on_user_toggle(enabled)

    def disconnect(self) -> None:
        self.grid_view.disconnect()
