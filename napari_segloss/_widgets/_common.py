"""Shared helpers of the napari panels: layer pickers, status messages, owned output layers.

Every layer a panel creates carries ``layer.metadata[TAG] = {"panel": ..., "key": ...}``; panels
only ever update or remove layers with their own tag, never a user's layer (they may hide one,
and say so).

torch takes about 2 s to import: nothing here imports it at module level, so that opening a
panel never freezes the window; the panels import the torch-backed core in thread workers.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.colormaps import CyclicLabelColormap
from napari.utils.notifications import show_warning
from qtpy.QtCore import QEvent, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from napari_segloss.overlay import ERROR_CLASS_NAMES, ERROR_COLORS

# re-exported: the panels import them from here
from ._names import PanelError as PanelError
from ._names import checkpoint_labels
from ._names import class_label as class_label
from ._names import class_name as class_name
from ._names import class_title as class_title
from ._names import layer_class_names as layer_class_names
from ._state import CHECKPOINTS

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

TAG = "napari_segloss"


def same_layer(a: Layer | None, b: Layer | None) -> bool:
    """Layer identity that survives napari's ``PublicOnlyProxy``.

    napari hands plugin widgets a proxied viewer: every access to a layer returns a new proxy
    object, so ``is`` cannot tell whether two references are the same layer; ``unique_id`` can.
    """
    if a is None or b is None:
        return a is b
    return a.unique_id == b.unique_id


def is_owned(layer: Layer, panel: str | None = None) -> bool:
    """Whether ``layer`` was created by one of our panels (``panel`` restricts to one)."""
    tag = layer.metadata.get(TAG) if isinstance(layer.metadata, dict) else None
    return isinstance(tag, dict) and (panel is None or tag.get("panel") == panel)


def input_or_output(layer: Layer, panel: str, output_key: str) -> bool:
    """A user's layer, or another panel's (not ``panel``'s) output whose key starts with
    ``output_key``: what an input picker offers."""
    if not is_owned(layer):
        return True
    return not is_owned(layer, panel) and layer.metadata[TAG]["key"].startswith(output_key)


def find_owned(viewer: napari.Viewer, panel: str, key: str) -> Layer | None:
    for layer in viewer.layers:
        if is_owned(layer, panel) and layer.metadata[TAG].get("key") == key:
            return layer
    return None


@contextlib.contextmanager
def unselected_insert(viewer: napari.Viewer) -> Iterator[None]:
    """Layers inserted meanwhile are not selected: the user's selection and layer controls
    stay as they were.

    napari selects each inserted layer, and showing its controls for the first time lays out
    and paints a new panel: a panel adding several layers froze the window once per layer for
    controls nobody had asked to see (benchmarks/RESULTS.md, stop 29). Best effort: the switch
    is a private attribute of napari's layer list; without it layers are selected as napari
    does.
    """
    layers = viewer.layers
    layers = getattr(layers, "__wrapped__", layers)  # a plugin's viewer is a public-only proxy
    before = getattr(layers, "_activate_on_insert", None)
    if not isinstance(before, bool):
        yield
        return
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = before


def upsert_layer(
    viewer: napari.Viewer,
    panel: str,
    key: str,
    kind: str,
    data: np.ndarray,
    *,
    name: str,
    like: Layer | None = None,
    index: int | None = None,
    select: bool = False,
    **props: Any,
) -> Layer:
    """Create or update the panel-owned layer identified by ``(panel, key)``.

    ``kind`` is ``"image"`` or ``"labels"``.  ``like`` copies scale/translate so that the output
    is aligned with the user's data.  Properties in ``props`` (colormap, contrast_limits,
    opacity, visible, ...) are given to a new layer and re-applied to an existing one where
    they differ (each change makes napari redraw, so unchanged ones are left alone).
    ``index``: where a new layer goes in the layer list (default: on top). ``select``: a new
    layer is selected, as napari does (for the one result a user will adjust); otherwise the
    selection stays as it was (:func:`unselected_insert`: maps added by the dozen).
    """
    geometry: dict[str, Any] = {}
    if like is not None and like.ndim == np.ndim(data):
        geometry = {"scale": like.scale, "translate": like.translate}
    layer = find_owned(viewer, panel, key)
    if layer is not None and (_kind_of(layer) != kind or layer.data.shape != data.shape):
        # Shape or type changed (e.g. another image picked): replace our own layer.
        viewer.layers.remove(layer)
        layer = None
    if layer is None:
        meta = {TAG: {"panel": panel, "key": key}}
        if kind == "image":  # viewer.add_image's default
            props = {"blending": "translucent_no_depth", **props}
        layer = (Image if kind == "image" else Labels)(
            data, name=name, metadata=meta, **geometry, **props
        )
        with contextlib.nullcontext() if select else unselected_insert(viewer):
            viewer.layers.insert(len(viewer.layers) if index is None else index, layer)
        return layer
    layer.data = data
    for attr, value in {"name": name, **geometry, **props}.items():
        if not _same_value(getattr(layer, attr), value):
            setattr(layer, attr, value)
    return layer


def _same_value(current: Any, value: Any) -> bool:
    """Whether setting ``value`` would leave a layer property as it is (conservative)."""
    if isinstance(value, str) and hasattr(current, "name"):  # a colormap given by name
        return current.name == value
    if isinstance(value, str | bool | int | float) or value is None:
        return bool(current == value) if not isinstance(current, np.ndarray) else False
    if isinstance(value, tuple | list | np.ndarray):
        try:
            return np.shape(current) == np.shape(value) and bool(np.allclose(current, value))
        except (TypeError, ValueError):
            return False
    return False


def _kind_of(layer: Layer) -> str:
    if isinstance(layer, Labels):
        return "labels"
    return "image" if isinstance(layer, Image) else type(layer).__name__.lower()


def remove_owned(viewer: napari.Viewer, panel: str, keep: Iterable[str] = ()) -> None:
    """Remove the layers ``panel`` created whose key is not in ``keep``."""
    keep = set(keep)
    for layer in list(viewer.layers):
        if is_owned(layer, panel) and layer.metadata[TAG].get("key") not in keep:
            viewer.layers.remove(layer)


def index_of(viewer: napari.Viewer, layer: Layer) -> int:
    """Position of ``layer`` in the layer list (-1 if absent), proxy-safe (see same_layer)."""
    for i, item in enumerate(viewer.layers):
        if same_layer(item, layer):
            return i
    return -1


def stack_on_top(viewer: napari.Viewer, layers: Sequence[Layer]) -> None:
    """Put ``layers`` at the top of the layer list in this order (the last one on top).

    napari's grid fills cells in layer-list order from the bottom, so this fixes the order of
    the cells. Nothing moves when the order is already right; layers no longer in the list
    (removed meanwhile) are skipped.
    """
    layers = [ly for ly in layers if index_of(viewer, ly) >= 0]
    n = len(viewer.layers)
    if [index_of(viewer, ly) for ly in layers] == list(range(n - len(layers), n)):
        return
    # One at a time: napari's move_multiple computes wrong indices for some permutations
    # (IndexError: pop index out of range).
    for layer in layers:
        viewer.layers.move(index_of(viewer, layer), n)


def insertion_index(viewer: napari.Viewer, order: Sequence[Layer | None], position: int) -> int:
    """Where the layer of ``order[position]`` goes so that the layers of ``order`` present in
    the list keep that order: just above the nearest one before it, else just below the nearest
    one after it, else on top. ``None`` marks layers not in the list.

    Inserting there moves no other layer. Appending on top and then moving the layers into
    order made napari rebuild the scene once per move, and each layer that changes grid cell
    costs a first draw of its visuals in the new cell.
    """
    for layer in reversed(order[:position]):
        if layer is not None and (i := index_of(viewer, layer)) >= 0:
            return i + 1
    for layer in order[position + 1 :]:
        if layer is not None and (i := index_of(viewer, layer)) >= 0:
            return i
    return len(viewer.layers)


def rename_layers(renames: Sequence[tuple[Layer, str]]) -> None:
    """Give layers new names without napari's ``[1]`` suffixes.

    napari makes names unique on every rename, so swapping two names directly would leave
    ``name [1]``: every layer that changes first gets a temporary unique name.
    """
    changing = [(layer, name) for layer, name in renames if layer.name != name]
    for layer, _ in changing:
        layer.name = f"{layer.name} \u2026{layer.unique_id}"
    for layer, name in changing:
        layer.name = name


class LayerPicker(QComboBox):
    """A combo box listing the viewer's layers of some types, kept in sync with the layer list.

    Layers created by our own panels are hidden unless ``include_owned`` (so that an output map
    is not offered as an input by mistake).
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        layer_types: tuple[type, ...],
        *,
        allow_none: bool = False,
        include_owned: bool = False,
        filter: Callable[[Layer], bool] | None = None,
        default: Callable[[list[Layer]], Layer | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        """``default(candidates)`` picks the layer selected when the current one is gone
        (None: the first; ``allow_none`` pickers then show "(none)")."""
        super().__init__(parent)
        self._viewer = viewer
        self._types = layer_types
        self._allow_none = allow_none
        self._include_owned = include_owned
        self._filter = filter
        self._default = default
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self._chose_none = False  # the user picked "(none)" explicitly: keep it
        self._lost: str | None = None  # name of a picked layer that left the list (take_lost)
        self._items: list[Layer | None] = []
        self.activated.connect(self._on_activated)
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            ev.connect(self.refresh)
        self.refresh()

    def disconnect_viewer(self) -> None:
        events = self._viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved, events.reordered):
            with contextlib.suppress(Exception):
                ev.disconnect(self.refresh)

    def unpickable_images(self) -> list[str]:
        """Names of the Image layers that look like masks (grey, integer, few values), for a
        picker that lists only Labels layers: napari's own reader opens a mask file as one."""
        if self._types != (Labels,):
            return []
        return [ly.name for ly in self._viewer.layers if _looks_like_a_mask(ly)]

    def candidates(self) -> list[Layer]:
        out = []
        for layer in self._viewer.layers:
            if not isinstance(layer, self._types):
                continue
            if not self._include_owned and is_owned(layer):
                continue
            if self._filter is not None and not self._filter(layer):
                continue
            out.append(layer)
        return out

    def refresh(self, *_: Any) -> None:
        try:
            current = self.layer()
        except RuntimeError:  # the Qt widget was deleted (panel closed): stop listening
            self.disconnect_viewer()
            return
        self.blockSignals(True)
        self.clear()
        # Layers are kept in a Python list parallel to the items, not as Qt item data: a
        # Python object round-tripped through a QVariant is not reliably the same object.
        self._items: list[Layer | None] = [None] if self._allow_none else []
        if self._allow_none:
            self.addItem("(none)")
        for layer in self.candidates():
            self._items.append(layer)
            self.addItem(layer.name)
            # Follow renames without rebuilding on every keystroke.
            layer.events.name.connect(self._on_rename)
        idx = self._index_of(current) if current is not None else -1
        if current is not None and idx < 0:
            self._lost = current.name  # the pick changes without the user: panels may say so
        if idx < 0 and not (self._allow_none and self._chose_none):
            idx = self._default_index()
        self.setCurrentIndex(idx if self.count() else -1)
        self.blockSignals(False)
        if not same_layer(self.layer(), current):
            self.currentIndexChanged.emit(self.currentIndex())

    def take_lost(self) -> str | None:
        """The name of the picked layer that left the layer list since the last call (the
        picker then selected another one, or none), else None."""
        lost, self._lost = self._lost, None
        return lost

    def _default_index(self) -> int:
        real = [layer for layer in self._items if layer is not None]
        if self._default is not None:
            idx = self._index_of(self._default(real))
            return idx if idx >= 0 or not real else self._index_of(real[0])
        # The first real layer, even when "(none)" is offered.
        return 1 if self._allow_none and self.count() > 1 else 0

    def _on_activated(self, index: int) -> None:
        self._chose_none = self._allow_none and self._item(index) is None

    def _on_rename(self, event: Any = None) -> None:
        for i, layer in enumerate(self._items):
            if layer is not None:
                self.setItemText(i, layer.name)

    def _item(self, index: int) -> Layer | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def layer(self) -> Layer | None:
        """The selected layer (None for "(none)" or when there is nothing to pick)."""
        return self._item(self.currentIndex())

    def _index_of(self, layer: Layer | None) -> int:
        for i, item in enumerate(self._items):
            if same_layer(item, layer):
                return i
        return -1

    def set_layer(self, layer: Layer | None) -> None:
        idx = self._index_of(layer)
        if idx >= 0:
            self._chose_none = layer is None
            self.setCurrentIndex(idx)


def left_the_window(panel: QWidget, event: QEvent) -> bool:
    """Whether ``event`` took ``panel`` out of napari's window. napari's close button on a
    dock only re-parents the panel (``setParent(None)``), so no ``closeEvent`` comes: a panel
    running work checks this in ``changeEvent`` to stop it."""
    return event.type() == QEvent.Type.ParentChange and panel.parent() is None


class StatusLabel(QLabel):
    """A word-wrapped status line: neutral text, or a red error."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.is_error = False

    def info(self, text: str) -> None:
        self.is_error = False
        self.setStyleSheet("")
        self.setText(text)

    def error(self, text: str, *, notify: bool = True) -> None:
        self.is_error = True
        self.setStyleSheet("color: #ff6060;")
        self.setText(text)
        if notify:
            # A warning, not show_error: the panel already explains the problem, and napari's
            # error notifications are reserved for unexpected exceptions.
            show_warning(text)

    def exception(
        self,
        exc: BaseException,
        expected: tuple[type[BaseException], ...] = (),
        *,
        notify: bool = True,
    ) -> None:
        """Show ``exc`` as an error: its message alone when ``expected``, else with its type."""
        self.error(exception_text(exc, expected), notify=notify)


def exception_text(exc: BaseException, expected: tuple[type[BaseException], ...] = ()) -> str:
    """``exc`` as a status line: its message alone when it is ``expected`` (errors whose
    message says it all, e.g. the core's ValueErrors), else with its type."""
    return str(exc) if isinstance(exc, expected) else f"{type(exc).__name__}: {exc}"


def _looks_like_a_mask(layer: Layer, most_values: int = 16) -> bool:
    """A grey integer Image layer with 2 to ``most_values`` values (in a sample of about a
    million pixels): a mask file that napari's own reader opened as an image."""
    if not isinstance(layer, Image) or layer.rgb or is_owned(layer):
        return False
    data = layer.data[-1] if layer.multiscale else layer.data
    if np.dtype(data.dtype).kind not in "uib":
        return False
    step = max(1, round((np.prod(data.shape) / 1e6) ** (1 / data.ndim)))  # ~1e6 values read
    sample = np.asarray(data[(slice(None, None, step),) * data.ndim])
    return 2 <= len(np.unique(sample)) <= most_values  # a blank image is no sign


def require_layer(source: LayerPicker | Layer | None, what: str) -> Layer:
    """The layer a picker (or a variable) holds; PanelError when none, which says whether
    the viewer has one to pick."""
    picker = source if isinstance(source, LayerPicker) else None
    layer = picker.layer() if picker is not None else source
    if layer is not None:
        return layer
    if picker is not None and picker.candidates():
        raise PanelError(f"{what}: '(none)' is selected; pick a layer in its list")
    images = picker.unpickable_images() if picker is not None else []
    if images:  # napari's own reader opens a mask file as an Image layer
        raise PanelError(
            f"{what}: no Labels layer to pick; a mask opened as an image ({images[-1]!r}?) "
            "becomes one with a right-click on it in the layer list › Convert to Labels"
        )
    raise PanelError(f"{what}: no layer selected (open or add one in the layer list)")


def check_same_shape(a: Any, b: Any, what_a: str, what_b: str) -> None:
    """Arrays (or shape tuples) ``a`` and ``b`` must have the same shape."""
    sa = tuple(a) if isinstance(a, tuple) else tuple(a.shape)
    sb = tuple(b) if isinstance(b, tuple) else tuple(b.shape)
    if sa != sb:
        raise PanelError(f"{what_b}: expected the same shape as {what_a} {sa}, got {sb}")


def labels_array(layer: Layer, what: str) -> np.ndarray:
    """The (lowest-resolution-free) integer data of a Labels layer, validated."""
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise PanelError(f"{what}: expected a 2D or 3D Labels layer, got shape {arr.shape}")
    if arr.size and arr.min() < 0:
        raise PanelError(f"{what}: expected non-negative labels, got minimum {arr.min()}")
    return arr


def move_off(
    picker: LayerPicker, avoid: Layer | None, default: Callable[[list[Layer]], Layer | None]
) -> None:
    """Move ``picker`` off the layer ``avoid`` (an input it must not equal) to ``default``'s
    pick among its candidates, when that is another layer."""
    if avoid is not None and same_layer(picker.layer(), avoid):
        other = default(picker.candidates())
        if other is not None and not same_layer(other, avoid):
            picker.set_layer(other)


def default_probabilities(candidates: list[Layer], image: Layer | None) -> Layer | None:
    """The probability image a picker starts with: not the input ``image`` itself (a scan is
    no probability map), a floating-point layer first."""
    others = [ly for ly in candidates if not same_layer(ly, image)]
    floats = [ly for ly in others if np.dtype(ly.data.dtype).kind == "f"]
    return (floats or others or candidates or [None])[0]


def binary_from_255(labels: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """``(labels, note)``: a Labels array holding only 0 and 255 (a binary mask saved as 0/255,
    e.g. an image layer converted to Labels) as 0/1 with a note saying so, as the file readers
    read such masks; any other array as it is, with no note (it would be 256 classes)."""
    if not labels.size or int(labels.max()) != 255 or not np.all((labels == 0) | (labels == 255)):
        return labels, ""
    note = f"{name!r} holds 0/255: read as a binary mask (1 = 255)"
    return (labels == 255).astype(np.uint8), note


def image_array(layer: Layer) -> np.ndarray:
    data = layer.data
    if getattr(layer, "multiscale", False):
        data = data[0]
    return np.asarray(data)


def spatial_shape(layer: Layer) -> tuple[int, ...]:
    """Shape without the RGB(A) channel axis of an ``rgb`` Image layer."""
    shape = tuple(image_array(layer).shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def image_and_mask(
    image_picker: LayerPicker, mask_picker: LayerPicker, what: str = "", *, need_mask: bool = True
) -> tuple[Layer, np.ndarray, np.ndarray | None]:
    """``(image layer, its data, mask data or None)`` of two pickers, checked: an image
    picked, a mask too when ``need_mask``, and the mask of the image's spatial shape.
    ``what`` prefixes the names in the messages (``"held-out "``)."""
    layer = require_layer(image_picker, f"{what}image")
    mask_layer = mask_picker.layer()
    if need_mask:
        mask_layer = require_layer(mask_picker, f"{what}mask")
    mask = None
    if mask_layer is not None:
        mask = labels_array(mask_layer, f"{what}mask")
        check_same_shape(spatial_shape(layer), mask, f"the {what}image", f"{what}mask")
    return layer, image_array(layer), mask


def error_colormap() -> CyclicLabelColormap:
    """:data:`napari_segloss.overlay.ERROR_COLORS` as a napari label colormap for the labels 0-3
    of ``error_labels``: cyclic, as a direct colormap would cost a numba compile in napari on
    the main thread when the first overlay is drawn."""
    return CyclicLabelColormap(colors=[ERROR_COLORS[label] for label in range(4)])


def geometry_note(layer: Layer | None, reference: Layer | None) -> str:
    """A note when ``layer`` and ``reference`` lie differently in napari's world (scale or
    translate differ, e.g. an image opened with its NIfTI header and labels without): napari
    draws them apart and a slice of one is another slice of the other; "" when they agree."""
    if layer is None or reference is None:
        return ""
    n = min(layer.ndim, reference.ndim)
    parts = []
    for attr in ("scale", "translate"):
        a, b = np.asarray(getattr(layer, attr))[-n:], np.asarray(getattr(reference, attr))[-n:]
        if not np.allclose(a, b):
            parts.append(f"{attr} {_axes(a)} vs {_axes(b)}")
    if not parts:
        return ""
    return (
        f"{layer.name!r} and {reference.name!r} do not lie alike ({'; '.join(parts)}): napari "
        f"draws them apart; results are placed and measured as {reference.name!r}"
    )


def _axes(values: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def error_layer_props() -> dict[str, Any]:
    """Layer properties of an ``error_labels`` overlay: its colours, translucent over the
    image, and an ``error`` feature that napari's status bar shows under the cursor
    ("error: false positive"; it showed the bare code, 2)."""
    return {
        "colormap": error_colormap(),
        "opacity": 1.0,
        "blending": "translucent",
        "features": {"index": np.arange(4), "error": [ERROR_CLASS_NAMES[c] for c in range(4)]},
    }


def camera_of(viewer: napari.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera``; napari 0.9 moved it from ``viewer``)."""
    return viewer.scene.camera


def grid_of(viewer: napari.Viewer) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid``; napari 0.9 moved them from
    ``viewer``)."""
    return viewer.canvas.grid


def glyph_steps(
    viewer: napari.Viewer, texts: Iterable[str], per_step: int = 2
) -> list[Callable[[], Any]]:
    """Tasks that render the glyphs of ``texts`` into the canvas's text font, ``per_step``
    characters per task (for a :class:`TaskQueue`).

    napari renders a glyph the first time a text on the canvas uses it (Qt at 256 pt, then a
    distance field computed on the CPU), all new glyphs of a draw inside that draw: the first
    titles of a grid froze the window for most of a second. Loaded ahead, a few per event-loop
    turn, they cost the titles nothing later. Best effort: the font sits behind napari's private
    canvas, so when that is not there the list is empty and the titles load their own glyphs.
    """
    try:
        with warnings.catch_warnings():  # napari warns plugins off its private attributes
            warnings.simplefilter("ignore", FutureWarning)
            info = viewer.window._qt_viewer.canvas._font_info  # private: no public handle
        manager, face = info.font_manager, info.face
    except Exception:  # another napari: nothing to warm, nothing broken
        return []
    chars = list(dict.fromkeys(c for text in texts for c in f"{text} "))
    fonts: list[Any] = []  # the font, looked up by the first task (its first use loads filters)

    def load(batch: list[str]) -> None:
        if not fonts:
            fonts.append(manager.get_font(face, False, False))
        for char in batch:
            fonts[0][char]

    return [lambda b=chars[i : i + per_step]: load(b) for i in range(0, len(chars), per_step)]


def release_gpu_memory() -> None:
    """Return cached CUDA memory to the driver (no-op without CUDA, or before torch is used)."""
    torch = sys.modules.get("torch")  # never import torch just to free memory (see the top)
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and one ``cuda:N`` per visible GPU.

    Imports torch (about 2 s the first time): panels call it in a thread worker.
    """
    import torch  # heavy: imported on first call, see the module docstring

    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def fmt(value: float) -> str:
    """Compact number formatting for tables (NaN stays visible as 'nan')."""
    if value is None:
        return ""
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.4f}"


def counted(n: int, noun: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``: ``n`` and ``noun``, plural unless ``n == 1``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


class _WideListCombo(QComboBox):
    """A combo box whose open list is as wide as its entries: a list as narrow as the box
    cut their middles (where a checkpoint's seed and epoch are)."""

    def showPopup(self) -> None:
        view = self.view()
        view.setMinimumWidth(view.sizeHintForColumn(0) + 2 * view.frameWidth() + 8)
        super().showPopup()


class CheckpointPicker(QWidget):
    """An editable combo of this session's checkpoints (Train panel results) plus Browse.

    ``follow_new``: a newly trained checkpoint becomes the selection at once (the model to
    run); otherwise only when none is chosen (the model to fine-tune stays as picked).
    ``changed`` is emitted when another path is chosen: from the list, by Browse, or typed
    (when the typing ends), not at each key.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None, *, follow_new: bool = True) -> None:
        super().__init__(parent)
        self.follow_new = follow_new
        self._said = ""  # the path of the last ``changed``
        self.combo = _WideListCombo(self)
        self.combo.setEditable(True)
        self.combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.combo.lineEdit().setPlaceholderText("checkpoint .pt (train one or browse)")
        self.combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.combo.setMinimumContentsLength(12)
        # the entries name their runs (see checkpoint_labels): the whole path on hover
        self.combo.currentTextChanged.connect(self._show_path)
        self.combo.activated.connect(self._changed)
        self.combo.lineEdit().editingFinished.connect(self._changed)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo, 1)
        lay.addWidget(browse)
        self._registry = CHECKPOINTS
        self._last_latest: str | None = None
        self._registry.changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        try:
            text = self.combo.currentText()
        except RuntimeError:  # the Qt widget was deleted (panel closed): stop listening
            self._registry.changed.disconnect(self.refresh)
            return
        chosen = self.path()
        paths = self._registry.paths()
        self.combo.blockSignals(True)
        self.combo.clear()
        for p, label in zip(paths, checkpoint_labels(paths), strict=True):
            self.combo.addItem(label, str(p))
            self.combo.setItemData(self.combo.count() - 1, str(p), Qt.ItemDataRole.ToolTipRole)
        self.combo.blockSignals(False)
        # a list entry chosen before keeps its path (its label may have changed)
        at = self.combo.findData(str(chosen)) if chosen is not None else -1
        text = self.combo.itemText(at) if at >= 0 else text
        latest = str(paths[0]) if paths else None
        new = latest is not None and latest != self._last_latest
        if new and (self.follow_new or not text.strip()):
            self.combo.setCurrentIndex(0)
            self._changed()
        else:
            self.combo.setEditText(text)
        self._last_latest = latest
        self._show_path(self.combo.currentText())  # the box shows its entry from the start

    def _changed(self, *_: Any) -> None:
        path = self.path()
        text = str(path) if path is not None else ""
        if text != self._said:
            self._said = text
            self.changed.emit()

    def _show_path(self, text: str) -> None:
        """The whole path on hover; a list entry shown from its start (its run's name)."""
        path = self.path()
        self.combo.setToolTip(str(path) if path is not None else "")
        if self.combo.findText(text) >= 0:
            self.combo.lineEdit().setCursorPosition(0)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open checkpoint", "", "Checkpoints (*.pt *.pth);;All files (*)"
        )
        if path:
            self.set_path(path)

    def set_path(self, path: str | Path) -> None:
        at = self.combo.findData(str(Path(path).expanduser().resolve()))
        if at >= 0:  # a listed checkpoint: its entry
            self.combo.setCurrentIndex(at)
        self.combo.setEditText(self.combo.itemText(at) if at >= 0 else str(path))
        self._changed()

    def path(self) -> Path | None:
        """The chosen checkpoint: a list entry's path, or the path typed or browsed."""
        text = self.combo.currentText().strip()
        at = self.combo.findText(text) if text else -1
        if at >= 0:
            return Path(self.combo.itemData(at))
        return Path(text).expanduser() if text else None

    def require(self) -> Path:
        p = self.path()
        if p is None:
            raise PanelError("checkpoint: none chosen (train one in 'Train / Fine-tune' or browse)")
        if not p.is_file():
            raise PanelError(f"checkpoint: expected an existing .pt file, got {str(p)!r}")
        return p
