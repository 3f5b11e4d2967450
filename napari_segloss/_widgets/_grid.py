"""The Loss Explorer's side-by-side view: napari's grid, one title and one colour bar per map.

Turning the view on remembers the user's grid settings, camera and layer-title settings;
turning it off puts all of them back, so the toggle works both ways. When the user switches
napari's own grid button, the panel's check box follows (``on_user_toggle``).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from psygnal import EmitLoopError
from qtpy.QtCore import QTimer
from qtpy.QtGui import QFont, QFontMetricsF, QGuiApplication
from qtpy.QtWidgets import QWidget

from ._common import camera_of, grid_of
from ._workers import Pause, one_shot_timer

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

#: gap between grid cells, as a fraction of a cell (room for the titles)
GRID_SPACING = 0.08
COLORBAR_SIZE = (14.0, 110.0)
#: canvas pixels a colour bar takes on its cell's right (napari's offset, the bar, its tick
#: labels) at the least, and the gap left of the image once the image moves left to make that
#: room; the room grows with the widest tick label of the maps shown (see colorbar_room)
COLORBAR_ROOM = 56.0
CELL_PAD = 6.0
#: what napari's colour bar adds to its tick labels' width: its tick length (napari's
#: default, kept by add_colorbars) and vispy's margin between ticks and labels, in pixels
COLORBAR_TICKS = 5.0 + 12.0
#: pixels left between a map's right edge and its colour bar
COLORBAR_GAP = 8.0
#: font size of the colour bars' tick labels (napari's default, kept by add_colorbars)
COLORBAR_FONT_SIZE = 10
_GRID_FIELDS = ("enabled", "stride", "shape", "spacing")
#: title font sizes tried, largest first (napari's default is 10): a title shrinks to fit its
#: cell, down to the smallest, still readable, size
TITLE_FONT_SIZES = (10, 9, 8, 7)
#: room a title leaves in its cell: napari's overlay offset on the left, a little on the right
TITLE_MARGIN = 14.0
#: how long the canvas may wait for its first paint after the grid's cells were built (see
#: :class:`HeldPaint`), and how long a task queue then waits for that paint
PAINT_LATER_MS = 20
#: what a task that let a paint come returns: the next task waits for that paint
AFTER_PAINT = Pause(PAINT_LATER_MS)


def show_maps_hidden_together(maps: list[Any]) -> None:
    """Show ``maps`` again when every one is hidden: they were hidden together (the panel
    closed, the Predict panel's overlay shown) and the grid is wanted back. A map the user
    hid alone stays hidden."""
    if maps and not any(layer.visible for layer in maps):
        for layer in maps:
            layer.visible = True


def canvas_widget(viewer: napari.Viewer) -> QWidget | None:
    """napari's OpenGL canvas widget; None when this napari hides it elsewhere."""
    try:
        with warnings.catch_warnings():  # napari warns plugins off its private attributes
            warnings.simplefilter("ignore", FutureWarning)
            widget = viewer.window._qt_viewer.canvas.native  # private: no public handle
    except Exception:
        return None
    return widget if isinstance(widget, QWidget) else None


class HeldPaint:
    """The canvas's paint held back across an event-loop turn.

    Turning the grid on builds a vispy view and two cameras per cell (Python), and the first
    draw of the new views compiles their shaders (software OpenGL compiles at the first draw):
    in one turn they froze the window for as long as both. :meth:`hold` stops the canvas's
    paints; :meth:`release` (a task of a queue, or a timer after ``PAINT_LATER_MS`` at the
    latest) lets the paint come in a turn of its own. Best effort: without the canvas widget
    nothing is held.
    """

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        self._widget: QWidget | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """No canvas paint from this block until :meth:`release`."""
        widget = canvas_widget(self.viewer) if self._widget is None else None
        if widget is not None and widget.updatesEnabled():
            widget.setUpdatesEnabled(False)
            self._widget = widget
            QTimer.singleShot(PAINT_LATER_MS, self.release)
        yield

    def release(self) -> Pause | None:
        """Let the held paint come; a :class:`Pause` for a task queue's next task (so that
        the paint does not share its turn), None when nothing was held."""
        widget, self._widget = self._widget, None
        if widget is None:
            return None
        with contextlib.suppress(RuntimeError):  # the viewer was closed meanwhile
            widget.setUpdatesEnabled(True)
            widget.update()
        return AFTER_PAINT


def _show_colorbar(layer: Layer) -> None:
    """``layer.colorbar.visible = True``, also for a bar hidden while napari rebuilt the grid.

    napari moves a hidden overlay into its new cell only once it is shown again, after the
    overlay's own visual has laid out its ticks; a colour bar hidden before a rebuild (grid off,
    a loss ticked, grid on) still hangs in a cell of the old grid, which has no canvas, and
    vispy fails (``TypeError`` on the canvas's dpi). Hiding the layer makes napari close that
    visual; showing it again builds a new one in the right cell.
    """
    try:
        layer.colorbar.visible = True
    except EmitLoopError:
        if not layer.colorbar.visible:
            raise
        layer.visible = False
        layer.visible = True


class GridView:
    """napari's grid mode for a set of map layers, restorable (see module docstring)."""

    def __init__(
        self,
        viewer: napari.Viewer,
        on_user_toggle: Callable[[bool], Any],
        title_new: Callable[[Layer], bool] = lambda layer: False,
    ) -> None:
        """``title_new(layer)``: whether a layer added while the grid is shown gets a title
        (each visible layer takes a cell; an untitled one would not say what it shows)."""
        self.viewer = viewer
        self._on_user_toggle = on_user_toggle
        self._title_new = title_new
        self._saved: dict[str, Any] | None = None  # the user's layout while ours is shown
        # unique_id -> (layer, title visible before, title font size before)
        self._titled: dict[str, tuple[Layer, bool, float]] = {}
        self._barred: dict[str, Layer] = {}  # unique_id -> map layer showing its colour bar
        self._changing = False
        self._face: str | None = None  # the canvas font (see text_width)
        self._fitted_shape: tuple[int, int] | None = None  # grid (rows, cols) the view fits
        self.held_paint = HeldPaint(viewer)  # the first paint of new cells (see show)
        self._hidden: list[Layer] = []  # layers hidden while the grid grows (see _regrow)
        self._new_shape: dict[str, Any] | None = None  # the grid fields _regrow will set
        grid_of(viewer).events.enabled.connect(self._on_grid_enabled)
        # the cells change width with the window and with the number of layers: the titles
        # are fitted again once things settle (not at every pixel of a resize)
        self._refit = one_shot_timer(None, 150, self.refit_titles)
        viewer.canvas.events.size.connect(self._layout_changed)
        viewer.layers.events.inserted.connect(self._layout_changed)
        viewer.layers.events.removed.connect(self._layout_changed)

    @property
    def active(self) -> bool:
        """The panel turned the grid on and has not put the user's layout back yet."""
        return self._saved is not None

    def show(self, cells: int | None = None) -> bool:
        """Turn the grid on (remembering the user's layout); True when the view changed.

        The canvas paints the new cells a turn later: a task queue runs ``held_paint.release``
        as the task after this one (see :class:`HeldPaint`).

        ``cells``: how many grid cells there will be. The grid's shape is then fixed for that
        many until :meth:`settle`, so that adding the layers one by one does not re-lay out
        (and redraw) every cell at each addition.
        """
        grid = grid_of(self.viewer)
        fields: dict[str, Any] = {}
        if cells:
            cols = math.ceil(math.sqrt(cells))  # napari's own choice for an automatic shape
            fields["shape"] = (math.ceil(cells / cols), cols)
        if self._saved is not None and grid.enabled:
            if fields and tuple(grid.shape) != fields["shape"]:
                self._regrow(fields)
            return False
        camera = camera_of(self.viewer)
        self._saved = {
            "grid": {f: getattr(grid, f) for f in _GRID_FIELDS},
            "camera": {"center": tuple(camera.center), "zoom": float(camera.zoom)},
        }
        self._set_grid(**{"stride": 1, "shape": (-1, -1), "spacing": GRID_SPACING, **fields})
        with self.held_paint.hold():
            self._set_grid(enabled=True)
        return True

    def _regrow(self, fields: dict[str, Any]) -> None:
        """A new grid shape, built and shown over several turns (:meth:`reveal_steps`).

        napari builds every cell again for a new shape, and the next paint builds every
        visual's shaders again in its new cell, titles and colour bars included: one freeze
        for the whole grid. Hidden layers take no cell, so all but the first are hidden here
        (from the top, in the cells of the current shape: the layers below keep theirs), with
        their titles and colour bars; the new shape is built in the next turn, and each layer
        shown again lands in the next cell while the others stay.
        """
        if self.grid_shape() == fields["shape"]:  # the same cells: nothing is built again
            # An automatic grid already of this shape keeps it while layers are added (its
            # shape only grows with their number); setting it costs a re-layout of every cell
            # now and another at settle(), for nothing.
            if tuple(grid_of(self.viewer).shape) != (-1, -1):
                self._set_grid(**fields)
            return
        later = [ly for ly in self.viewer.layers if ly.visible][1:]  # none: one napari cell
        self._set_grid(shape=self.grid_shape())  # hiding must not re-lay out the cells
        self.hide_overlays(later)
        for layer in reversed(later):
            layer.visible = False
        self._hidden.extend(later)
        self._new_shape = fields

    def reveal_steps(self) -> list[Callable[[], Pause | None]]:
        """Tasks that finish :meth:`_regrow`: build the new cells, let their first paint come,
        then show the hidden layers one per turn in layer order, each followed by a turn for
        its first paint (their titles and colour bars are the caller's: :meth:`add_titles`,
        :meth:`add_colorbars`); none when the grid did not grow."""
        if self._new_shape is None:
            return []
        return [
            self._build_new_shape,
            self.held_paint.release,
            *([self._reveal_next] * len(self._hidden)),
        ]

    def _build_new_shape(self, hold_paint: bool = True) -> None:
        fields, self._new_shape = self._new_shape, None
        if fields is not None:
            with self.held_paint.hold() if hold_paint else contextlib.nullcontext():
                self._set_grid(**fields)

    def _reveal_next(self) -> Pause:
        if self._hidden:
            with contextlib.suppress(Exception):  # the layer may have been deleted
                self._hidden.pop(0).visible = True
        return AFTER_PAINT

    def reveal_all(self) -> None:
        """Show at once the layers still hidden by :meth:`_regrow` (the reveal was cut
        short: a cancelled drawing, the grid turned off)."""
        self._build_new_shape(hold_paint=False)
        while self._hidden:
            self._reveal_next()

    def settle(self) -> None:
        """Back to an automatic grid shape (layers the user adds or hides get their cells)."""
        if self._saved is not None and tuple(grid_of(self.viewer).shape) != (-1, -1):
            self._set_grid(shape=(-1, -1))

    def restore(self) -> None:
        """Put back the grid settings, camera and layer titles the user had before."""
        self.reveal_all()
        self.decorate([], [])
        saved, self._saved = self._saved, None
        if saved is None:
            return
        self._set_grid(**saved["grid"])
        camera = camera_of(self.viewer)
        camera.center = saved["camera"]["center"]
        camera.zoom = saved["camera"]["zoom"]

    def decorate(self, maps: Sequence[Layer], inputs: Sequence[Layer]) -> None:
        """Titles (layer names) on ``maps`` and ``inputs``, colour bars on ``maps``; the title
        settings of layers no longer listed go back to what they were."""
        for step in self.decorate_steps(maps, inputs):
            step()

    def decorate_steps(
        self, maps: Sequence[Layer], inputs: Sequence[Layer]
    ) -> list[Callable[[], None]]:
        """:meth:`decorate` as tasks for a task queue, one title or colour bar each (napari
        places every overlay of the grid again at each change: a grid's worth of them in one
        turn froze the window)."""
        wanted = [*inputs, *maps]
        keep_titles = {ly.unique_id for ly in wanted}
        keep_bars = {ly.unique_id for ly in maps}
        steps = [lambda u=u: self._untitle(u) for u in self._titled if u not in keep_titles]
        steps += [lambda u=u: self._unbar(u) for u in self._barred if u not in keep_bars]
        steps += [lambda ly=ly: self.add_titles([ly]) for ly in wanted]
        return steps + [lambda ly=ly: self.add_colorbars([ly]) for ly in maps]

    def _untitle(self, uid: str) -> None:
        """Put back the title settings the layer had before :meth:`add_titles`."""
        if uid in self._titled:
            layer, before, size = self._titled.pop(uid)
            with contextlib.suppress(Exception):  # the layer may be gone
                layer.name_overlay.visible = before
                layer.name_overlay.font_size = size

    def _unbar(self, uid: str) -> None:
        if uid in self._barred:
            with contextlib.suppress(Exception):  # the layer may be gone
                self._barred.pop(uid).colorbar.visible = False

    def add_titles(self, layers: Iterable[Layer]) -> None:
        """Show the names of ``layers`` as their cells' titles (put back by :meth:`restore`).

        Without napari's overlay box: napari re-attaches every box on each change of the grid
        (each layer added), which makes vispy build the box shaders of every cell again each
        time; titles and colour bars stand on the black canvas around the images anyway.
        """
        width = self.cell_width() - TITLE_MARGIN
        for layer in layers:
            overlay = layer.name_overlay
            if layer.unique_id not in self._titled:
                self._titled[layer.unique_id] = (layer, bool(overlay.visible), overlay.font_size)
            overlay.box = False
            self._fit(layer, width)
            overlay.visible = True

    def hide_overlays(self, layers: Iterable[Layer]) -> None:
        """Hide the titles and colour bars of ``layers`` for a while (the layers are about to
        move one cell on; :meth:`add_titles` and :meth:`add_colorbars` show them again).

        A visual that changes cell is built again at the next paint; hidden overlays stay
        where they were, so that paint builds only the maps' own visuals and each overlay
        follows in a turn of its own. Only while the grid keeps its cells: a colour bar hidden
        across a rebuild of the grid is left behind (see ``_show_colorbar``).
        """
        for layer in layers:
            if layer.unique_id in self._titled:
                layer.name_overlay.visible = False
            if layer.unique_id in self._barred:
                layer.colorbar.visible = False

    def add_title_then_paint(self, layer: Layer) -> Pause:
        """:meth:`add_titles` for one layer, as a task that leaves the next turn to the paint
        (a title's first paint builds its text shaders)."""
        self.add_titles([layer])
        return AFTER_PAINT

    def refit_titles(self) -> None:
        """Fit every title to the cells' current width (after a resize or a new layer), and
        the view to the grid when a layer added or removed changed its rows or columns (the
        cells shrank while the zoom stayed: each showed a corner of its image)."""
        if self._saved is None:
            return
        shape = self.grid_shape()
        if self._fitted_shape is not None and shape != self._fitted_shape:
            self.fit_view()
        self._fitted_shape = shape
        width = self.cell_width() - TITLE_MARGIN
        for layer, _, _ in list(self._titled.values()):
            with contextlib.suppress(Exception):  # the layer may be gone
                self._fit(layer, width)

    def _fit(self, layer: Layer, width: float) -> None:
        # the largest size that fits the cell (a long loss name was cut off at the cell's
        # edge); an unchanged size is not set again (each change redraws)
        size = next(
            (s for s in TITLE_FONT_SIZES if self.text_width(layer.name, s) <= width),
            TITLE_FONT_SIZES[-1],
        )
        if layer.name_overlay.font_size != size:
            layer.name_overlay.font_size = size

    def _layout_changed(self, event: Any = None) -> None:
        if self._saved is None:
            return
        added = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        try:
            if added is not None and self._title_new(added):
                self.add_titles([added])
            self._refit.start()
        except RuntimeError:  # the panel and its timer were deleted (viewer closing)
            self.disconnect()

    def fit_view(self) -> None:
        """``viewer.reset_view()``, then, while the grid is the panel's, room for the colour
        bars: a map as wide as its cell had its bottom-right corner under the bar and its
        tick labels (napari draws a cell's overlays over its layer). The images shrink just
        enough and move to the cells' left."""
        self.viewer.reset_view()
        if self._saved is None:
            return
        cell_w = self.cell_width()
        extent = self.viewer.layers.extent
        axis = self.viewer.dims.displayed[-1]
        left = float(extent.world[0][axis] - extent.step[axis] / 2)
        width = float(extent.world[1][axis] - extent.world[0][axis] + extent.step[axis])
        camera = camera_of(self.viewer)
        room = self.colorbar_room()
        if width <= 0 or cell_w - width * camera.zoom >= 2 * room:
            return  # centred, the image already leaves the room on its right
        zoom = min(camera.zoom, (cell_w - room - CELL_PAD) / width)
        if zoom <= 0:
            return
        center = list(camera.center)
        center[-1] = left + (cell_w / 2 - CELL_PAD) / zoom  # the image's left edge at CELL_PAD
        camera.zoom = zoom
        camera.center = tuple(center)

    def colorbar_room(self) -> float:
        """Canvas pixels the colour bars take on their cells' right, and a gap: napari's
        overlay padding, the bar, its ticks and its widest tick label. A fixed 56 px left
        the 0-1 bars of the PM-Dice maps over the maps' right edge: their "0.5" is wider
        than the "80" of a contribution map."""
        widest = max((self._tick_label_width(ly) for ly in self._barred.values()), default=0.0)
        try:
            pad = float(self.viewer.canvas.overlay_tiling.padding[0])
        except Exception:  # a napari without overlay tiling: its fixed offset
            pad = 10.0
        room = pad + COLORBAR_SIZE[0] + COLORBAR_TICKS + widest + COLORBAR_GAP
        return max(COLORBAR_ROOM, room)

    def _tick_label_width(self, layer: Layer) -> float:
        """The widest tick label a colour bar of ``layer`` may show: its contrast limits and
        their middle, with three significant digits (vispy's ticks are rounder: no narrower)."""
        try:
            lo, hi = (float(v) for v in layer.contrast_limits)
        except Exception:  # the layer may be gone
            return 0.0
        labels = [f"{v:.3g}" for v in (lo, hi, (lo + hi) / 2)]
        return max(self.text_width(t, COLORBAR_FONT_SIZE) for t in labels)

    def grid_shape(self) -> tuple[int, int]:
        """The grid's (rows, columns) as napari lays out the current layers."""
        return tuple(grid_of(self.viewer).actual_shape(self.viewer.layers))  # type: ignore[return-value]

    def fitted(self) -> None:
        """The view was just fitted to the grid (the panel reset it)."""
        self._fitted_shape = self.grid_shape()

    def cell_width(self) -> float:
        """Width of a grid cell in canvas pixels, as napari lays the grid out."""
        return float(self.viewer.canvas.viewbox_size(self.viewer.layers)[1])  # (h, w)

    def text_width(self, text: str, size: float) -> float:
        """Width of a title in canvas pixels, measured as napari places its text overlays
        (Qt metrics of the canvas font, in points at 96 dpi); 0 when the font is unknown."""
        if self._face is None:  # napari draws overlay text in the application's font family
            self._face = QGuiApplication.font().family()
        if not self._face:
            return 0.0
        font = QFont(self._face)
        font.setPointSize(int(size))
        return QFontMetricsF(font).horizontalAdvance(text) * 96 / 72

    def add_colorbars(self, layers: Iterable[Layer]) -> None:
        """Show the colour bars of ``layers`` (bottom right: the titles run along the top)."""
        for layer in layers:
            bar = layer.colorbar
            bar.size = COLORBAR_SIZE
            bar.position = "bottom_right"
            bar.box = False
            _show_colorbar(layer)
            self._barred[layer.unique_id] = layer

    def _set_grid(self, **fields: Any) -> None:
        grid = grid_of(self.viewer)
        self._changing = True
        try:
            for name, value in fields.items():
                setattr(grid, name, value)
        finally:
            self._changing = False

    def _on_grid_enabled(self, event: Any = None) -> None:
        if self._changing:
            return
        enabled = bool(grid_of(self.viewer).enabled)
        if not enabled:
            # The user left the grid with napari's button: their choice stands, and titles
            # would pile up in one corner without the grid.
            self._saved = None
            self.decorate([], [])
        try:
            self._on_user_toggle(enabled)
        except RuntimeError:  # the panel was closed and deleted: stop listening
            self.disconnect()

    def disconnect(self) -> None:
        with contextlib.suppress(RuntimeError):  # already deleted with the panel
            self._refit.stop()
        with contextlib.suppress(Exception):
            grid_of(self.viewer).events.enabled.disconnect(self._on_grid_enabled)
        for emitter in (
            self.viewer.canvas.events.size,
            self.viewer.layers.events.inserted,
            self.viewer.layers.events.removed,
        ):
            with contextlib.suppress(Exception):
                emitter.disconnect(self._layout_changed)
