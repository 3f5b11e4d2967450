"""Layout of the panels: a scrolling body, forms whose pages and columns line up, tables of
values as tall as their rows, and Tab in the order of the rows.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QFrame,
    QHeaderView,
    QScrollArea,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from magicgui.widgets.bases import ValueWidget


class PanelScrollArea(QScrollArea):
    """A vertical scroll area as wide as its content.

    napari stacks dock widgets in one column and does not scroll them: a panel taller than
    its share of the column would either force the window taller than the screen or, where
    the window cannot grow, get its rows squashed (labels clipped: "gamma" reads "qamma").
    Inside this area the content keeps its natural size and scrolls; its width is never cut
    (the minimum width follows the content's, plus the scroll bar), and it keeps at least
    ``MIN_HEIGHT`` pixels so that a second panel docked below is not reduced to one row.
    That minimum is the dock's: four panels docked in one column need four of them (plus
    their title bars) and must fit a laptop window (at 280, the window grew 900 -> 1411 px).
    """

    MIN_HEIGHT = 120

    def __init__(self, content: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(content)
        content.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the content's minimum width may have changed
        return super().eventFilter(watched, event)

    def minimumSizeHint(self) -> QSize:
        content = self.widget()
        width = content.minimumSizeHint().width() if content is not None else 0
        bar = self.verticalScrollBar().sizeHint().width()
        height = content.sizeHint().height() if content is not None else 0
        return QSize(width + bar + 2 * self.frameWidth(), min(height, self.MIN_HEIGHT))


def scrollable(panel: QWidget) -> QWidget:
    """Put a :class:`PanelScrollArea` in ``panel`` and return the widget to fill (lay the
    panel's content out in it)."""
    content = QWidget()
    layout = QVBoxLayout(panel)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(PanelScrollArea(content, panel))
    return content


def scroll_to(widget: QWidget) -> None:
    """Scroll the panel's :class:`PanelScrollArea` so that ``widget`` is in view: with other
    panels docked, a panel's lower rows (progress, results) start below its visible part."""

    def scroll() -> None:  # at the next turn: after a new text has re-laid the widget out
        with contextlib.suppress(RuntimeError):  # the panel was closed meanwhile
            area = widget.parentWidget()
            while area is not None and not isinstance(area, PanelScrollArea):
                area = area.parentWidget()
            if area is not None:
                area.ensureWidgetVisible(widget, 0, 8)

    QTimer.singleShot(0, scroll)


def tab_in_layout_order(panel: QWidget) -> None:
    """Make Tab visit ``panel``'s controls in the order they are laid out, top to bottom.

    Qt's default chain is the order the widgets were created: a button made with its group
    box as parent comes before the rows added to the box later, and a form created on demand
    (a loss's parameters, after the loss list loads) lands at the very end, after Start. Call
    it again after such a form is added. Pages of a stack are all listed (Qt skips the
    hidden ones).
    """
    chain: list[QWidget] = []

    def visit(widget: QWidget) -> None:
        if widget.focusPolicy() & Qt.FocusPolicy.TabFocus and widget not in chain:
            chain.append(widget)
        if isinstance(widget, QScrollArea) and widget.widget() is not None:
            visit(widget.widget())
        elif isinstance(widget, QStackedWidget | QTabWidget):
            for i in range(widget.count()):
                visit(widget.widget(i))
        elif widget.layout() is not None:
            walk(widget.layout())

    def walk(layout: Any) -> None:
        for i in range(layout.count()):
            item = layout.itemAt(i)
            if item.widget() is not None:
                visit(item.widget())
            elif item.layout() is not None:
                walk(item.layout())

    visit(panel)
    for a, b in itertools.pairwise(chain):
        QWidget.setTabOrder(a, b)


def read_only_table(parent: QWidget, columns: int, min_height: int) -> QTableWidget:
    """An empty table of results the user reads (no editing), its columns stretched."""
    table = QTableWidget(0, columns, parent)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setMinimumHeight(min_height)
    return table


class ValuesTable(QTableWidget):
    """Read-only ``(name, value)`` rows, exactly as tall as its header and rows: a short table
    of values inside a scrolling panel reads at a glance, with no scroll bar of its own."""

    def __init__(self, parent: QWidget, headers: tuple[str, str], tooltip: str = "") -> None:
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(list(headers))
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        rows = self.verticalHeader()
        rows.setVisible(False)
        # compact rows: napari's style leaves about 30 px for one line of text
        rows.setDefaultSectionSize(min(rows.defaultSectionSize(), self.fontMetrics().height() + 8))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setToolTip(tooltip)
        self.show_values([])

    def show_values(self, rows: Sequence[tuple[str, str]]) -> None:
        """Replace the rows (values right-aligned) and fit the height to them."""
        self.setRowCount(len(rows))
        for r, (name, value) in enumerate(rows):
            item = QTableWidgetItem(name)
            item.setToolTip(name)  # a long label is elided in its column
            self.setItem(r, 0, item)
            item = QTableWidgetItem(value)
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.setItem(r, 1, item)
        height = self.horizontalHeader().sizeHint().height() + 2 * self.frameWidth()
        self.setFixedHeight(height + sum(self.rowHeight(r) for r in range(len(rows))))


class PageStack(QStackedWidget):
    """A stack of pages as tall as the page it shows. Qt's ``QStackedWidget`` takes the height
    of its tallest page, which left a gap under every shorter page (a loss with one parameter
    got the room of one with ten)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.currentChanged.connect(lambda _: self.updateGeometry())

    def sizeHint(self) -> QSize:
        page = self.currentWidget()
        hint = super().sizeHint()
        return hint if page is None else QSize(hint.width(), page.sizeHint().height())

    def minimumSizeHint(self) -> QSize:
        page = self.currentWidget()
        hint = super().minimumSizeHint()
        return hint if page is None else QSize(hint.width(), page.minimumSizeHint().height())


def form_row(form: QFormLayout, widget: ValueWidget) -> None:
    """A magicgui widget as a labelled row of a Qt form (aligned with the layer pickers)."""
    form.addRow(widget.label, widget.native)


def form_page(stack: QStackedWidget) -> QFormLayout:
    """A new page of ``stack`` (one choice of a "from: layers / folder" switch): the form to
    fill, without margins so that its rows line up with the rows around the stack."""
    page = QWidget()
    form = QFormLayout(page)
    form.setContentsMargins(0, 0, 0, 0)
    stack.addWidget(page)
    return form


def align_label_columns(box: QWidget) -> None:
    """Give the labels of every form in ``box`` (its own and those of its stacked pages) the
    width of the widest, so that all its fields start at one x: each form sized its label
    column alone, and a page's fields started left or right of the fields around it. Measured
    again whenever the box is shown or restyled (napari's style sets the font at the show)."""
    box.installEventFilter(_LabelColumns(box))


class _LabelColumns(QObject):
    """The event filter of :func:`align_label_columns`."""

    EVENTS = (QEvent.Type.Show, QEvent.Type.StyleChange, QEvent.Type.FontChange)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in self.EVENTS and isinstance(watched, QWidget):
            labels = []
            for form in watched.findChildren(QFormLayout):
                for row in range(form.rowCount()):
                    item = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
                    if item is not None and item.widget() is not None:
                        labels.append(item.widget())
            width = max((label.sizeHint().width() for label in labels), default=0)
            for label in labels:
                label.setMinimumWidth(width)
        return False
