"""Loss Explorer panel, docked from the manifest and run on the bundled samples."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest

from napari_segloss._widgets import _common, _explorer_jobs, _grid, _workers, loss_explorer
from napari_segloss._widgets._common import TAG, camera_of, grid_of, is_owned
from napari_segloss.explorer import modulating_title
from napari_segloss.samples import load_sample
from napari_segloss.whatif import make_whatif

NAME = "Loss Explorer"
GAMMA_NAMES = [modulating_title(g) for g in (0.5, 1.0, 2.0, 5.0)]


def _owned(viewer, prefix: str = ""):
    return [
        ly
        for ly in viewer.layers
        if is_owned(ly, "loss_explorer") and ly.metadata[TAG]["key"].startswith(prefix)
    ]


def _values(widget) -> dict[str, float]:
    t = widget.table
    return {t.item(r, 0).text(): float(t.item(r, 1).text()) for r in range(t.rowCount())}


def _polyp_viewer(make_napari_viewer):
    """A viewer with the first bundled kvasir frame ("polyp") and its mask ("truth")."""
    viewer = make_napari_viewer()
    image, mask = load_sample("kvasir", 0)
    viewer.add_image(image, name="polyp")
    viewer.add_labels(mask, name="truth")
    return viewer


def _kvasir(dock, wait_idle):
    image, mask = load_sample("kvasir", 0)
    viewer, widget = dock(NAME)
    img_layer = viewer.add_image(image, name="polyp")
    gt_layer = viewer.add_labels(mask, name="truth")
    widget.image_picker.set_layer(img_layer)
    widget.gt_picker.set_layer(gt_layer)
    wait_idle(widget)
    return viewer, widget, image, mask


def _kvasir_sample_drawn(make_napari_viewer, dock, wait_idle):
    """The ``kvasir`` sample opened as a user does, the panel docked and its first maps drawn."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    wait_idle(widget, timeout=60_000)  # loads torch and the losses first
    return viewer, widget


def _acdc_drawn(dock, wait_idle):
    """The ACDC volume as layers 'mri' and 'heart', the panel docked and its maps drawn."""
    image, labels = load_sample("acdc")
    viewer, widget = dock(NAME)
    viewer.add_image(image, name="mri")
    viewer.add_labels(labels, name="heart")
    wait_idle(widget, timeout=60_000)
    return viewer, widget


@pytest.fixture
def warnings_shown(monkeypatch):
    """Warnings the panels pop up (napari notifications), recorded instead of shown."""
    shown: list[str] = []
    monkeypatch.setattr(_common, "show_warning", shown.append)
    return shown


# ------------------------------------------------------------------------ issue 17, point 1
def test_maps_drawn_on_opening_without_a_button_press(make_napari_viewer, dock, wait_idle):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    assert widget.gt_picker.layer().name == "kvasir mask"
    wait_idle(widget, timeout=60_000)  # loads torch and the losses, then draws: no button
    assert not widget.status.is_error, widget.status.text()
    assert widget.selected_losses() == ["ce", "dice"]
    assert [ly.name for ly in _owned(viewer, "contrib:")] == [
        "ce |∂L/∂z|",
        "dice |∂L/∂z|",
    ]
    assert [ly.name for ly in _owned(viewer, "gamma:")] == GAMMA_NAMES
    assert widget.table.rowCount() == 2 + 4


def _canvas_font(viewer):
    info = viewer.window._qt_viewer.canvas._font_info
    return info.font_manager.get_font(info.face, False, False)


def test_title_glyphs_are_rendered_before_the_titles_show(
    make_napari_viewer, dock, wait_idle, monkeypatch
):
    # a title's first draw would otherwise render every new glyph inside one draw
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    font = _canvas_font(viewer)
    shown, missing = [], []
    add_titles = widget.grid_view.add_titles

    def checked(layers):
        layers = list(layers)
        shown.extend(ly.name for ly in layers)
        missing.extend(c for ly in layers for c in ly.name if c not in font._glyphs)
        add_titles(layers)

    monkeypatch.setattr(widget.grid_view, "add_titles", checked)
    wait_idle(widget, timeout=60_000)
    assert {"kvasir image", "kvasir mask", "dice |∂L/∂z|"} <= set(shown)
    assert missing == []


def test_torch_loads_once_the_input_titles_are_up_not_after_every_glyph(
    make_napari_viewer, dock, wait_idle
):
    # the loss loader waits for the grid arranged on opening; the glyphs of the maps' titles
    # and colour bars are not part of that wait (they load while torch imports)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    font = _canvas_font(viewer)
    assert "∂" not in font._glyphs
    _, widget = dock(NAME, viewer)
    arranged = widget._arranged
    seen: list[tuple[set[str], list[str]]] = []
    set_event = arranged.set

    def recorded():
        if not seen:
            titled = [ly.name for ly in viewer.layers if ly.name_overlay.visible]
            seen.append((set(font._glyphs), titled))
        set_event()

    arranged.set = recorded
    wait_idle(widget, timeout=60_000)
    glyphs, titles = seen[0]
    # the inputs' titles were drawn with their glyphs, and those vispy measures lines with
    assert set("kvasir image mask") | set(loss_explorer._LINE_HEIGHT_TEXT) <= glyphs
    assert titles == ["kvasir image", "kvasir mask"]
    # "ce |∂L/∂z|": loaded later, while torch imports (before that title shows: test above)
    assert "∂" not in glyphs


def test_progress_says_loading_until_the_maps_are_drawn(make_napari_viewer, dock, wait_idle):
    # the grid arranged on opening is not "drawing the maps" (a full bar while torch loads)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    texts = []
    step = widget.progress.step

    def recorded(done, total, text):
        texts.append((widget.ready, text))
        step(done, total, text)

    widget.progress.step = recorded
    wait_idle(widget, timeout=60_000)
    assert not [t for ready, t in texts if not ready and t.startswith("drawing")], texts
    assert any(t.startswith("drawing the maps") for _, t in texts)  # then it does say so


@pytest.mark.parametrize(
    ("present", "position", "expected"),
    [
        ((True, True, False, True), 2, 3),  # above the one before it
        ((False, False, False, True), 0, 1),  # below the one after it
        ((False, False, False, False), 1, 1),  # none there: on top
        ((True, False, True, False), 3, 3),  # after the last one present
    ],
)
def test_insertion_index_keeps_the_order_without_moving_layers(
    make_napari_viewer, present, position, expected
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 4)), name="user")
    order: list = []
    for i, here in enumerate(present):
        layer = viewer.add_image(np.zeros((4, 4)), name=f"map{i}") if here else None
        order.append(layer)
    # layer list: user, then the present maps in order (indices 1, 2, ...)
    assert _common.insertion_index(viewer, order, position) == expected


def test_glyph_steps_load_each_character_once_in_small_batches(make_napari_viewer):
    viewer = make_napari_viewer()
    font = _canvas_font(viewer)
    steps = _common.glyph_steps(viewer, ["Qx", "xQ zz"], per_step=2)
    assert len(steps) == 2  # Q, x, ' ', z
    for step in steps:
        step()
    assert {"Q", "x", " ", "z"} <= set(font._glyphs)
    assert _common.glyph_steps(object(), ["abc"]) == []  # no napari canvas: nothing to warm


# ------------------------------------------------------------------------ issue 17, point 2
def test_every_map_has_a_title_a_colorbar_and_a_stable_place(dock, wait_idle):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viewer, widget, _, _ = _kvasir(dock, wait_idle)
        widget.set_losses(["dice", "focal"])
        wait_idle(widget)
    # the titles' font was read through napari's private canvas attributes, which printed a
    # FutureWarning at each opening; the width is now measured in the application's font
    ours = [w for w in caught if "napari_segloss" in w.filename]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
    assert widget.grid_view.text_width("dice", 10) > 0
    maps = widget.map_layers()
    # grid order (bottom of the layer list first): prediction, ticked losses, ascending γ
    assert [ly.name for ly in maps] == [
        "prediction p(class 1)",
        "dice |∂L/∂z|",
        "focal |∂L/∂z|",
        *GAMMA_NAMES,
    ]
    assert [ly.name for ly in viewer.layers][-len(maps) :] == [ly.name for ly in maps]
    grid = grid_of(viewer)
    assert grid.enabled
    cells = {grid.position(i, viewer.layers) for i in range(len(viewer.layers))}
    assert len(cells) == len(viewer.layers)  # one cell per layer: maps are not stacked
    for ly in maps:  # one visible title (the layer name) and one colour bar per map
        assert ly.name_overlay.visible, ly.name
        assert ly.colorbar.visible, ly.name
    assert len({ly.name for ly in maps}) == len(maps)
    # the inputs' cells are titled too; contribution maps share one colour scale
    assert viewer.layers["polyp"].name_overlay.visible
    assert viewer.layers["truth"].name_overlay.visible
    clims = {tuple(ly.contrast_limits) for ly in _owned(viewer, "contrib:")}
    assert len(clims) == 1

    # a loss ticked later lands with the losses, before the γ maps: inserted there (each move
    # of a layer rebuilt napari's scene, and every layer it passed changed grid cell)
    moves: list[object] = []
    viewer.layers.events.moved.connect(moves.append)
    # the γ maps move one cell on: their titles and colour bars are hidden meanwhile (their
    # visuals would be built again in the new cell at the same paint), then come back
    shown: list[bool] = []
    for ly in _owned(viewer, "gamma:"):
        ly.colorbar.events.visible.connect(shown.append)
    # the grid grows (3 x 3 -> 3 x 4): the layers above the first are hidden while napari
    # builds the new cells, then shown again one by one (each first paint builds its visual)
    hidden: list[str] = []
    before = [ly.name for ly in viewer.layers]
    for ly in viewer.layers:
        ly.events.visible.connect(lambda e, ly=ly: None if ly.visible else hidden.append(ly.name))
    widget.set_losses(["ce", "dice", "focal"])
    wait_idle(widget)
    assert hidden == before[:0:-1]  # from the top
    assert all(ly.visible for ly in viewer.layers)
    assert viewer.layers["polyp"].name_overlay.visible
    assert viewer.layers["truth"].name_overlay.visible
    assert moves == []
    assert shown.count(False) == 4 and shown[-4:] == [True] * 4
    # inserted as viewer.add_image would have added it
    assert {ly.blending for ly in widget.map_layers()} == {"translucent_no_depth"}
    names = [ly.name for ly in widget.map_layers()]
    assert names[1:4] == [f"{n} |∂L/∂z|" for n in ("ce", "dice", "focal")]
    assert names[4:] == GAMMA_NAMES
    assert all(ly.name_overlay.visible and ly.colorbar.visible for ly in widget.map_layers())


def test_cancelled_while_the_grid_grows_leaves_no_layer_hidden(dock, wait_idle, qtbot):
    # the layers hidden while napari builds a larger grid (see GridView._regrow) come back
    # when the drawing stops early, in a grid with one cell per layer
    viewer, widget, _, _ = _kvasir(dock, wait_idle)
    viewer.add_image(np.zeros((8, 8)), name="mine, hidden", visible=False)
    widget.set_losses(["ce", "dice", "focal"])  # 9 -> 10 visible layers: 3 x 3 -> 3 x 4
    qtbot.waitUntil(lambda: not viewer.layers["truth"].visible, timeout=60_000)
    widget.cancel()
    wait_idle(widget)
    assert "cancelled" in widget.status.text()
    assert [ly.name for ly in viewer.layers if not ly.visible] == ["mine, hidden"]
    grid = grid_of(viewer)
    cells = [grid.position(i, viewer.layers) for i, ly in enumerate(viewer.layers) if ly.visible]
    assert len(set(cells)) == len(cells)


def test_a_hidden_user_layer_takes_no_cell(dock, wait_idle):
    # the panel sizes the grid for the visible layers: napari >= 0.9 gives hidden ones no cell
    # (before, they kept an empty cell and the last map shared the first cell while drawing)
    viewer, widget, _, _ = _kvasir(dock, wait_idle)
    viewer.add_image(np.zeros((8, 8)), name="hidden", visible=False)
    grid = grid_of(viewer)
    shared: list[int] = []

    def visible_cells() -> list[tuple[int, int]]:
        layers = viewer.layers
        return [grid.position(i, layers) for i, ly in enumerate(layers) if ly.visible]

    def record(event=None) -> None:
        cells = visible_cells()
        shared.append(len(cells) - len(set(cells)))

    viewer.layers.events.inserted.connect(record)
    widget.set_losses(["dice", "focal"])  # new maps: the grid is laid out again
    wait_idle(widget)
    record()
    n = len(visible_cells())
    assert n == 2 + len(widget.map_layers())
    assert not any(shared), shared  # never two visible layers in one cell
    cols = math.ceil(math.sqrt(n))
    assert grid.actual_shape(viewer.layers) == (math.ceil(n / cols), cols)  # no empty cell


def test_kvasir_whatif_maps_layers_and_values(dock, wait_idle):
    viewer, widget, image, mask = _kvasir(dock, wait_idle)
    widget.set_losses(["dice", "ce"])
    widget.whatif_kind.value = "blur"
    widget.whatif_strength.value = 3.0
    widget.whatif_softness.value = 1.5
    widget.update_maps()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()

    contrib = _owned(viewer, "contrib:")
    modul = _owned(viewer, "gamma:")
    assert [ly.metadata[TAG]["key"] for ly in contrib] == ["contrib:ce", "contrib:dice"]
    assert [ly.name for ly in modul] == GAMMA_NAMES
    for ly in contrib:
        assert ly.colormap.name == "inferno"
        assert ly.data.shape == mask.shape
    for ly in modul:
        assert ly.colormap.name == "viridis"
        assert tuple(ly.contrast_limits) == (0.0, 1.0)

    # gamma = 1 map is |y - p| of the what-if prediction (PM-Dice eq. 5), aligned with the image
    p = make_whatif(mask, "blur", 3.0, softness=1.5)[0]
    np.testing.assert_allclose(modul[1].data, np.abs(mask - p), atol=1e-6)
    # fig. 2 of the PM-Dice paper: the loss grows with gamma; dice (gamma = 0) is the lowest
    vals = _values(widget)
    pm = [vals[f"pm_dice(gamma={g})"] for g in ("0.5", "1", "2", "5")]
    assert vals["dice"] < pm[0] < pm[1] < pm[2] < pm[3]
    # the user's layers are untouched
    np.testing.assert_array_equal(viewer.layers["polyp"].data, image)
    np.testing.assert_array_equal(viewer.layers["truth"].data, mask)
    assert TAG not in viewer.layers["truth"].metadata


# ------------------------------------------------------------------------ issue 17, point 3
def test_gamma_layers_unique_named_by_value_removed_with_their_row(dock, wait_idle):
    viewer, widget, _, mask = _kvasir(dock, wait_idle)
    widget.set_losses(["dice"])
    wait_idle(widget)
    before = {ly.metadata[TAG]["key"]: ly for ly in _owned(viewer)}
    n_layers = len(viewer.layers)

    widget.gamma_list.rows[1].slider.setValue(3.0)  # live: debounced update, no button press
    assert widget.busy
    wait_idle(widget)
    after = {ly.metadata[TAG]["key"]: ly for ly in _owned(viewer)}
    assert len(viewer.layers) == n_layers
    assert all(after[k] is before[k] for k in before)  # same layer objects, updated in place
    moved = after[f"gamma:{widget.gamma_list.rows[1].uid}"]
    assert moved.name == modulating_title(3.0)
    p = make_whatif(mask, "blur", 3.0, softness=1.5)[0]
    np.testing.assert_allclose(moved.data, np.abs(mask - p) ** 3, atol=1e-6)
    assert "pm_dice(gamma=3)" in _values(widget)
    # ascending γ order in the grid, whatever the rows' order
    assert [ly.name for ly in _owned(viewer, "gamma:")] == [
        modulating_title(g) for g in (0.5, 2.0, 3.0, 5.0)
    ]

    # a duplicate γ gives no second layer and no "[1]" names
    widget.gamma_list.rows[0].slider.setValue(2.0)
    wait_idle(widget)
    names = [ly.name for ly in _owned(viewer, "gamma:")]
    assert names == [modulating_title(g) for g in (2.0, 3.0, 5.0)]
    assert not any("[" in ly.name for ly in viewer.layers)

    # "add γ" proposes a value not in the list yet
    row = widget.gamma_list.add()
    assert row.value() not in [r.value() for r in widget.gamma_list.rows if r is not row]
    wait_idle(widget)
    assert len(_owned(viewer, "gamma:")) == 4

    # removing a row removes its layer; unticking a loss removes its map
    five = next(r for r in widget.gamma_list.rows if r.value() == 5.0)
    assert not five.isHidden()
    widget.gamma_list.remove(five)
    assert five.isHidden()  # gone from the panel at once, not drawn over the next row
    widget.set_losses([])
    wait_idle(widget)
    names = [ly.name for ly in _owned(viewer, "gamma:")]
    assert modulating_title(5.0) not in names and len(names) == 3
    assert _owned(viewer, "contrib:") == []
    assert "truth" in viewer.layers and "polyp" in viewer.layers


# ------------------------------------------------------------------------ issue 17, point 4
def test_grid_toggle_both_ways_restores_the_users_layout(dock, wait_idle, make_napari_viewer):
    viewer = _polyp_viewer(make_napari_viewer)
    grid = grid_of(viewer)
    grid.spacing = 0.0
    camera_of(viewer).zoom = 3.0
    camera_of(viewer).center = (0.0, 100.0, 120.0)
    _, widget = dock(NAME, viewer)
    wait_idle(widget)
    assert grid.enabled and camera_of(viewer).zoom != pytest.approx(3.0)

    widget.grid_check.value = False
    wait_idle(widget)  # the grid changes in turns of its own
    assert not grid.enabled
    assert grid.spacing == 0.0 and tuple(grid.shape) == (-1, -1)
    assert camera_of(viewer).zoom == pytest.approx(3.0)
    assert tuple(camera_of(viewer).center)[-2:] == pytest.approx((100.0, 120.0))
    assert not any(ly.name_overlay.visible or ly.colorbar.visible for ly in widget.map_layers())
    assert not viewer.layers["polyp"].name_overlay.visible

    widget.grid_check.value = True
    wait_idle(widget)  # the grid changes in turns of its own
    assert grid.enabled
    assert all(ly.name_overlay.visible and ly.colorbar.visible for ly in widget.map_layers())

    # napari's own grid button: the check box follows, and a later update keeps it off
    grid.enabled = False
    assert widget.grid_check.value is False
    widget.gamma_list.rows[0].slider.setValue(0.75)
    wait_idle(widget)
    assert not grid.enabled


@pytest.mark.parametrize("button", ["panel", "napari"])
def test_colour_bars_come_back_after_the_grid_was_rebuilt_while_off(
    dock, wait_idle, make_napari_viewer, button
):
    """Grid off, a loss ticked (one more cell), grid on: napari left the hidden colour bars in
    the old grid's cells, and showing them raised TypeError in vispy (no canvas dpi)."""
    viewer = _polyp_viewer(make_napari_viewer)
    _, widget = dock(NAME, viewer)
    wait_idle(widget, timeout=60_000)
    widget.grid_check.value = False
    wait_idle(widget)  # the grid changes in turns of its own
    widget.set_losses([*widget.selected_losses(), "focal"])
    wait_idle(widget)
    assert not grid_of(viewer).enabled
    if button == "panel":
        widget.grid_check.value = True
        wait_idle(widget)  # the grid changes in turns of its own
    else:
        grid_of(viewer).enabled = True
    maps = widget.map_layers()
    assert len(maps) == 8 and widget.grid_check.value
    assert all(ly.colorbar.visible and ly.visible for ly in maps)
    viewer.window._qt_viewer.canvas.on_draw(None)  # draws every cell (it raised before)


def test_grid_the_user_had_on_stays_on(dock, wait_idle, make_napari_viewer):
    viewer = _polyp_viewer(make_napari_viewer)
    grid = grid_of(viewer)
    grid.enabled = True
    grid.stride = 2
    _, widget = dock(NAME, viewer)
    wait_idle(widget)
    assert grid.stride == 1  # one map per cell while the panel shows them
    widget.grid_check.value = False
    wait_idle(widget)  # the grid changes in turns of its own
    assert grid.enabled and grid.stride == 2


def test_grid_cells_are_built_and_drawn_in_separate_event_loop_turns(qtbot, make_napari_viewer):
    """Building the grid's cells and their first draw in one turn froze the window for their
    sum; the paint is held back for one turn, then always allowed again."""
    viewer = make_napari_viewer(show=True)  # a hidden window never paints
    image, mask = load_sample("kvasir", 0)
    viewer.add_image(image, name="polyp")
    viewer.add_labels(mask, name="truth")
    canvas = _grid.canvas_widget(viewer)
    assert canvas is not None and canvas.updatesEnabled()
    draws: list[int] = []
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(lambda event: draws.append(1))
    view = _grid.GridView(viewer, lambda enabled: None)
    assert view.show(cells=6)
    assert grid_of(viewer).enabled and not canvas.updatesEnabled()
    drawn_before = len(draws)
    qtbot.waitUntil(canvas.updatesEnabled, timeout=2000)
    qtbot.waitUntil(lambda: len(draws) > drawn_before, timeout=2000)
    # a change of shape builds every cell again, and their first paint every visual: all
    # layers but the first are hidden (they take no cell), the cells are built in the next
    # task with the paint held back the same way, then each layer comes back in a task of
    # its own (each next task waits for the paint)
    view.show(cells=12)
    assert viewer.layers["polyp"].visible and not viewer.layers["truth"].visible
    assert tuple(grid_of(viewer).shape) == (2, 3) and canvas.updatesEnabled()
    build, release, *reveals = view.reveal_steps()
    assert len(reveals) == 1
    build()
    assert tuple(grid_of(viewer).shape) == (3, 4) and not canvas.updatesEnabled()
    assert release() == _workers.Pause(_grid.PAINT_LATER_MS)
    assert canvas.updatesEnabled() and view.held_paint.release() is None
    assert reveals[0]() == _workers.Pause(_grid.PAINT_LATER_MS)
    assert viewer.layers["truth"].visible and view.reveal_steps() == []
    # a reveal cut short (the grid turned off meanwhile) shows every layer again
    view.show(cells=2)
    assert not viewer.layers["truth"].visible
    view.restore()
    assert not grid_of(viewer).enabled and canvas.updatesEnabled()
    assert viewer.layers["truth"].visible and view.reveal_steps() == []


# ------------------------------------------------------------------------ issue 17, point 5
def test_quiet_while_inputs_are_missing_then_draws_when_they_come(dock, wait_idle, warnings_shown):
    viewer, widget = dock(NAME)
    wait_idle(widget, timeout=60_000)
    assert not widget.status.is_error
    assert "waiting for inputs" in widget.status.text()
    image, mask = load_sample("kvasir", 0)
    viewer.add_image(image, name="polyp")  # a file being opened: the image first...
    wait_idle(widget)
    viewer.add_labels(mask, name="truth")  # ...then its mask: drawn without a button press
    wait_idle(widget)
    assert warnings_shown == []
    assert not widget.status.is_error, widget.status.text()
    assert len(_owned(viewer, "contrib:")) == 2

    # the button is an explicit request: a missing input then pops up a warning
    viewer.layers.remove("truth")
    widget.update_maps()
    assert any("ground truth: no layer selected" in w for w in warnings_shown)
    assert widget.status.is_error


# ------------------------------------------------------------------------ issue 17, waiting
class _SlowFrames:
    """A stand-in for engine.inference: 8 frames, 0.25 s each (counts frames run)."""

    def __init__(self, probs: np.ndarray) -> None:
        self.probs = probs
        self.frames_run = 0

    def iter_predict_image(self, path, image, *, rgb, models=None):
        n = 8
        for i in range(n):
            yield i, n
            time.sleep(0.25)
            self.frames_run += 1
        yield n, n
        return (self.probs[0] > 0.5).astype(np.uint8), self.probs


def test_long_work_shows_progress_and_can_be_cancelled(
    dock, wait_idle, qtbot, tmp_path, monkeypatch
):
    viewer, widget, _, mask = _kvasir(dock, wait_idle)
    fake = _SlowFrames(make_whatif(mask, "blur", 2.0))
    monkeypatch.setattr(_explorer_jobs, "inference", lambda: fake)
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"not read: the stand-in does the predicting")
    widget.ckpt_picker.set_path(ckpt)
    widget.source.value = "checkpoint"
    qtbot.waitUntil(lambda: widget.progress.shown, timeout=5_000)
    qtbot.waitUntil(lambda: widget.progress.bar.maximum() == 8, timeout=5_000)
    assert widget.progress.bar.value() < 8
    widget.progress.cancel.click()
    wait_idle(widget)
    assert fake.frames_run < 8
    assert not widget.progress.shown
    assert "cancelled" in widget.status.text()
    assert widget._ckpt_cache == {}  # nothing half-done kept

    widget.update_maps()  # and runs to the end when left alone
    wait_idle(widget)
    assert fake.frames_run >= 8 and not widget.status.is_error, widget.status.text()
    m = _owned(viewer, "gamma:")[1].data  # γ = 1: |y - p| of the "model" output
    np.testing.assert_allclose(m, np.abs(mask - fake.probs[0]), atol=1e-5)


def test_drawing_the_maps_shows_progress_and_can_be_cancelled(
    make_napari_viewer, dock, wait_idle, qtbot, monkeypatch
):
    """Drawing a grid of new maps lasts seconds in napari: the panel shows its progress and
    Cancel stops it; the maps drawn stay, Update maps draws the rest."""
    monkeypatch.setattr(_workers.ProgressRow, "SHOW_AFTER_MS", 0)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    qtbot.waitUntil(lambda: widget.drawing and len(widget.map_layers()) >= 1, timeout=60_000)
    qtbot.waitUntil(lambda: "drawing the maps" in widget.progress.bar.text(), timeout=10_000)
    assert widget.progress.shown and widget.busy
    widget.progress.cancel.click()
    wait_idle(widget)
    assert not widget.progress.shown
    assert "cancelled" in widget.status.text()
    maps = widget.map_layers()
    assert (
        not all(ly.name_overlay.visible and ly.colorbar.visible for ly in maps) or len(maps) < 7
    )  # stopped before the end

    widget.update_maps()
    wait_idle(widget)
    maps = widget.map_layers()
    assert len(maps) == 7 and not widget.status.is_error, widget.status.text()
    assert all(ly.name_overlay.visible and ly.colorbar.visible for ly in maps)


# ------------------------------------------------------------------------ other sources
def test_probability_image_hand_computed(dock, wait_idle):
    # 4x4, a 2x2 object predicted at 0.8, background at 0.1
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[1:3, 1:3] = 1
    prob = np.where(gt == 1, 0.8, 0.1).astype(np.float32)
    viewer, widget = dock(NAME)
    viewer.add_labels(gt, name="gt")
    viewer.add_image(prob, name="prob")
    wait_idle(widget, timeout=60_000)
    widget.source.value = "probability image"
    widget.set_losses(["dice"])
    for row in list(widget.gamma_list.rows)[1:]:
        widget.gamma_list.remove(row)
    widget.gamma_list.rows[0].slider.setValue(2.0)
    widget.update_maps()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    vals = _values(widget)
    # Dice (eq. 4, squared, background included): fg 6.4/6.68, bg 21.6/21.88
    assert vals["dice"] == pytest.approx(1 - (6.4 / 6.68 + 21.6 / 21.88) / 2, abs=2e-4)
    # PM Dice gamma=2 (eq. 5): m = 0.04 inside, 0.01 outside; fg 0.256/0.2636, bg 0.216/0.2236
    assert vals["pm_dice(gamma=2)"] == pytest.approx(
        1 - (0.256 / 0.2636 + 0.216 / 0.2236) / 2, abs=2e-4
    )
    m = _owned(viewer, "gamma:")[0].data
    np.testing.assert_allclose(m, np.where(gt == 1, 0.04, 0.01), atol=1e-6)
    np.testing.assert_array_equal(viewer.layers["prob"].data, prob)


def test_acdc_multiclass_slice_and_volume(dock, wait_idle):
    viewer, widget = _acdc_drawn(dock, wait_idle)
    labels = np.asarray(viewer.layers["heart"].data)
    widget.set_losses(["dice"])
    widget.class_spin.value = 2  # myocardium
    widget.whatif_kind.value = "erode"
    widget.whatif_strength.value = 1.4  # erode counts whole pixels: the box shows 1
    assert widget.whatif_strength.value == 1 and widget.whatif_strength.native.decimals() == 0
    viewer.dims.set_current_step(0, 3)
    widget.update_maps()
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    m = _owned(viewer, "gamma:")[1].data  # gamma = 1
    assert m.shape == labels.shape
    # current slice only: other slices stay empty
    assert m[3].max() > 0 and m[[0, 1, 2, 4, 5]].max() == 0
    # what-if predictions are made slice by slice (in-plane), 4 class channels
    p3 = make_whatif(labels[3], "erode", 1, softness=1.5, num_classes=4)
    np.testing.assert_allclose(m[3], np.abs((labels[3] == 2) - p3[2]), atol=1e-6)

    widget.scope.value = "whole volume"
    wait_idle(widget)
    m = _owned(viewer, "gamma:")[1].data
    assert all(m[z].max() > 0 for z in range(labels.shape[0]))
    p = make_whatif(labels, "erode", 1, softness=1.5, in_plane=True)  # (4, Z, Y, X)
    np.testing.assert_allclose(m, np.abs((labels == 2) - p[2]), atol=1e-6)
    np.testing.assert_allclose(p[:, 3], p3, atol=1e-6)


def test_checkpoint_prediction_source(dock, wait_idle, tiny_checkpoint):
    from napari_segloss.engine.inference import predict_image

    viewer, widget, image, mask = _kvasir(dock, wait_idle)
    widget.ckpt_picker.set_path(tiny_checkpoint)
    widget.set_losses(["dice"])
    widget.source.value = "checkpoint"
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    _, probs = predict_image(tiny_checkpoint, image, rgb=True, device="cpu")
    m = _owned(viewer, "gamma:")[1].data  # gamma = 1: |y - p| of the model's output
    np.testing.assert_allclose(m, np.abs(mask - probs[0]), atol=1e-4)
    assert len(widget._ckpt_cache) == 1  # a gamma change re-uses the prediction


def test_loss_parameters_form_is_magicgui_from_the_registry(dock, wait_idle):
    from magicgui.widgets import CheckBox, FloatSpinBox, LiteralEvalLineEdit

    from napari_segloss.losses import loss_parameters

    _, widget, _, _ = _kvasir(dock, wait_idle)
    form = widget._param_form("pm_dice")
    registry = loss_parameters("pm_dice")
    assert set(form.widgets) == set(registry) - {"mode", "reduction", "ignore_index", "validate"}
    assert isinstance(form.widgets["squared"], CheckBox)
    assert isinstance(form.widgets["gamma"], LiteralEvalLineEdit)  # float or one per class
    assert form.widgets["squared"].value is registry["squared"].default
    assert form.values() == {}
    form.widgets["gamma"].value = "2.0"
    form.widgets["squared"].value = False
    assert form.values() == {"gamma": 2.0, "squared": False}

    compound = widget._param_form("ce+pm_dice")
    assert isinstance(compound.widgets["weight__ce"], FloatSpinBox)
    # every field names its term as the loss list does: "pm_dice: ...", check boxes included
    assert compound.widgets["pm_dice__gamma"].label == "pm_dice: gamma"
    assert compound.widgets["pm_dice__batch_dice"].native.text() == "pm_dice: batch dice"
    compound.widgets["weight__pm_dice"].value = 2.0
    compound.widgets["pm_dice__gamma"].value = "3.0"
    assert compound.values() == {"weights": (1.0, 2.0), "pm_dice": {"gamma": 3.0}}
    widget.set_losses(["ce+pm_dice"])
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    label = "ce+pm_dice(weights=(1, 2), pm_dice.gamma=3)"  # short enough for a grid cell
    assert label in _values(widget)
    t = widget.table  # elided in its column: whole on hover
    assert label in [t.item(r, 0).toolTip() for r in range(t.rowCount())]


def test_loss_parameters_have_their_docstring_as_tooltip(dock, wait_idle):
    _, widget, _, _ = _kvasir(dock, wait_idle)

    def tooltips(form):  # wrapped for Qt: compare the words
        return {key: " ".join((w.tooltip or "").split()) for key, w in form.widgets.items()}

    tips = tooltips(widget._param_form("unified_focal"))
    assert "weight of the focal (CE) term" in tips["weight"]
    assert "false negatives" in tips["delta"]
    assert tips["eps"].startswith("smoothing added")  # from RegionLoss
    assert all(tips.values()), [k for k, t in tips.items() if not t]
    tips = tooltips(widget._param_form("ce+pm_dice"))
    assert "per-class weights" in tips["ce__weight"]
    assert "a Python literal" in tips["ce__weight"]  # the literal hint stays
    assert "one value per class" in tips["pm_dice__gamma"]
    assert tips["weight__ce"] == "the ce term is multiplied by this weight"
    assert all(tips.values()), [k for k, t in tips.items() if not t]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no_gt", "ground truth: no layer selected"),
        ("prob_out_of_range", "expected probabilities in [0, 1]"),
        ("prob_not_summing_to_one", "2 class probabilities must sum to 1 at every pixel"),
        ("shape_mismatch", "expected the same shape"),
        ("missing_checkpoint", "checkpoint: none chosen"),
        ("bad_parameter", "dice parameter eps: expected a number or Python literal"),
    ],
)
def test_bad_selections_show_a_message(dock, wait_idle, setup, message):
    viewer, widget = dock(NAME)
    wait_idle(widget, timeout=60_000)
    gt = np.zeros((8, 8), dtype=np.uint8)
    gt[2:5, 2:5] = 1
    widget.live_check.value = False
    if setup != "no_gt":
        viewer.add_labels(gt, name="gt")
    if setup == "prob_out_of_range":
        viewer.add_image(np.full((8, 8), 3.0, dtype=np.float32), name="logits")
        widget.source.value = "probability image"
    elif setup == "prob_not_summing_to_one":  # e.g. two sigmoid outputs
        viewer.add_image(np.full((2, 8, 8), 0.7, dtype=np.float32), name="sigmoids")
        widget.image_picker.set_layer(None)  # the optional image: none
        widget.source.value = "probability image"
    elif setup == "shape_mismatch":
        viewer.add_labels(np.zeros((9, 8), dtype=np.uint8), name="other")
        widget.source.value = "labels layer"
        widget.pred_labels_picker.set_layer(viewer.layers["other"])
    elif setup == "missing_checkpoint":
        widget.source.value = "checkpoint"
    elif setup == "bad_parameter":
        widget._param_form("dice").editors["eps"].setText("1e-6 +")
    widget.update_maps()
    wait_idle(widget)
    assert widget.status.is_error
    assert message in widget.status.text()
    assert _owned(viewer) == []


def test_panels_do_not_import_each_other_and_open_without_torch(modules_after_import):
    """Opening the Loss Explorer imports neither another panel nor torch (the window would
    freeze while torch loads): checked in a fresh interpreter."""
    modules = modules_after_import(
        "napari_segloss._widgets.loss_explorer", "napari_segloss._widgets.predict_panel"
    )
    assert not any(m == "torch" or m.startswith("torch.") for m in modules), modules
    assert "napari_segloss._widgets.train_panel" not in modules
    assert "napari_segloss.explorer" not in modules  # imported by the first worker


def test_compute_explorer_relative_maps_and_classes():
    from napari_segloss.explorer import ExplorerLoss, compute_explorer

    gt = np.array([[0, 1, 2], [0, 2, 2]])
    probs = np.full((3, 2, 3), 0.2, dtype=np.float32)
    for c in range(3):
        probs[c][gt == c] = 0.6  # the true class gets 0.6, the two others 0.2 each
    specs = [ExplorerLoss("dice"), ExplorerLoss("ce")]
    res = compute_explorer(probs, gt, specs, [2.0, 2.0], cls=2, relative=True)
    assert [g for g, _ in res.modulating] == [2.0]  # one map per distinct γ
    for m in res.contributions.values():
        assert m.shape == gt.shape
        assert m.mean() == pytest.approx(1.0, rel=1e-5)  # relative to the mean pixel
    # CE: -log(0.6) at every pixel
    assert dict(res.values)["ce"] == pytest.approx(-np.log(0.6), abs=1e-5)
    # class-2 modulating map, gamma 2: |1 - 0.6|^2 = 0.16 on class 2, |0 - 0.2|^2 = 0.04 elsewhere
    np.testing.assert_allclose(res.modulating[0][1], np.where(gt == 2, 0.16, 0.04), atol=1e-6)
    np.testing.assert_allclose(res.prediction, probs[2])
    assert res.num_classes == 3
    with pytest.raises(ValueError, match="class: expected 0 to 2, got 3"):
        compute_explorer(probs, gt, specs, [1.0], cls=3)
    with pytest.raises(ValueError, match=r"dice: .*unknown parameter"):
        compute_explorer(probs, gt, [ExplorerLoss("dice", {"nope": 1})], [], cls=1)


# ------------------------------------------------------------------------ new-user audit
def _grid_order_ok(viewer, widget) -> None:
    """No error, and the maps on top in the documented order: prediction, ticked losses in
    list order, ascending γ."""
    assert not widget.status.is_error, widget.status.text()
    maps = widget.map_layers()
    keys = [ly.metadata[TAG]["key"] for ly in maps]
    want = ["prediction", *(f"contrib:{n}" for n in widget.selected_losses())]
    assert keys[: len(want)] == want
    assert [ly.name for ly in maps[len(want) :]] == GAMMA_NAMES
    assert [ly.name for ly in viewer.layers][-len(maps) :] == [ly.name for ly in maps]


def test_two_losses_ticked_back_to_back_draw_in_order(dock, wait_idle):
    # napari's move_multiple failed on this permutation (IndexError: pop index out of range)
    from qtpy.QtCore import Qt

    viewer, widget, _, _ = _kvasir(dock, wait_idle)
    for name in ("tversky", "focal"):  # within one debounce interval
        [item] = widget.loss_list.findItems(name, Qt.MatchFlag.MatchExactly)
        item.setCheckState(Qt.CheckState.Checked)
    wait_idle(widget)
    assert set(widget.selected_losses()) == {"ce", "dice", "focal", "tversky"}
    _grid_order_ok(viewer, widget)


def test_switching_image_and_ground_truth_together_draws_in_order(
    make_napari_viewer, dock, wait_idle
):
    viewer, widget = _kvasir_sample_drawn(make_napari_viewer, dock, wait_idle)
    _grid_order_ok(viewer, widget)
    viewer.open_sample("napari-segloss", "acdc")  # on top of the maps
    widget.image_picker.set_layer(viewer.layers["acdc image"])
    widget.gt_picker.set_layer(viewer.layers["acdc labels"])
    wait_idle(widget)
    _grid_order_ok(viewer, widget)
    assert widget.map_layers()[0].data.shape == viewer.layers["acdc labels"].data.shape


def test_stack_on_top_any_permutation_and_removed_layers(make_napari_viewer):
    # the permutation of the audit's two back-to-back ticks, and a layer removed meanwhile
    viewer = make_napari_viewer()
    layers = [viewer.add_image(np.zeros((2, 2)), name=str(i)) for i in range(12)]
    order = [layers[i] for i in (4, 5, 6, 10, 11, 7, 8, 9)]
    _common.stack_on_top(viewer, order)
    assert [ly.name for ly in viewer.layers][-8:] == ["4", "5", "6", "10", "11", "7", "8", "9"]
    viewer.layers.remove("5")
    _common.stack_on_top(viewer, order[::-1])
    assert [ly.name for ly in viewer.layers][-7:] == ["9", "8", "7", "11", "10", "6", "4"]


def test_live_image_picker_change_redraws_and_clears_a_stale_error(
    make_napari_viewer, dock, wait_idle
):
    viewer, widget = _kvasir_sample_drawn(make_napari_viewer, dock, wait_idle)
    viewer.open_sample("napari-segloss", "acdc")
    widget.gt_picker.set_layer(viewer.layers["kvasir mask"])
    wait_idle(widget)
    widget.image_picker.set_layer(viewer.layers["acdc image"])  # only the image changes
    assert widget.busy  # a redraw is scheduled (live)
    wait_idle(widget)
    assert widget.status.is_error and "shape" in widget.status.text()
    viewer.layers.remove("acdc image")  # the picker falls back to the kvasir image
    wait_idle(widget)
    assert widget.image_picker.layer().name == "kvasir image"
    assert not widget.status.is_error, widget.status.text()


def test_a_removed_input_layer_is_named_with_its_replacement(make_napari_viewer, dock, wait_idle):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    mask = np.asarray(viewer.layers["kvasir mask"].data)
    viewer.add_labels(1 - mask, name="other truth")
    _, widget = dock(NAME, viewer)
    widget.gt_picker.set_layer(viewer.layers["kvasir mask"])
    wait_idle(widget, timeout=60_000)
    viewer.layers.remove("kvasir mask")
    wait_idle(widget)
    assert widget.gt_picker.layer().name == "other truth"
    text = widget.status.text()
    assert not widget.status.is_error, text
    assert text.startswith("ground truth 'kvasir mask' was removed; now using 'other truth'")
    assert "contribution map(s)" in text  # drawn with the new ground truth
    widget.update_maps()  # said once
    wait_idle(widget)
    assert "removed" not in widget.status.text()
    viewer.layers.remove("other truth")  # none left
    wait_idle(widget)
    assert widget.gt_picker.layer() is None
    assert widget.status.text().startswith("ground truth 'other truth' was removed; pick")


def test_the_prediction_map_names_its_class_as_the_ground_truth_does(dock, wait_idle):
    # the acdc sample's labels name their classes (1 RV, 2 MYO, 3 LV)
    viewer, widget = dock(NAME)
    viewer.open_sample("napari-segloss", "acdc")
    wait_idle(widget, timeout=60_000)
    assert widget.map_layers()[0].name == "prediction p(RV)"
    assert widget.class_spin.native.text() == "1  RV"  # the box names the class too
    widget.class_spin.value = 3
    wait_idle(widget)
    assert widget.map_layers()[0].name == "prediction p(LV)"
    assert widget.class_spin.native.text() == "3  LV"
    widget.class_spin.native.lineEdit().setText("2")  # typed: the number alone is read
    widget.class_spin.native.interpretText()
    assert widget.class_spin.value == 2
    assert widget.class_spin.native.text() == "2  MYO"


def test_closing_the_panel_gives_the_viewer_back(make_napari_viewer, dock, wait_idle, qtbot):
    """napari's X only takes the panel out of its dock (no closeEvent): the grid it turned on
    went on showing its maps, which covered every layer added later. Now the user's layout
    comes back, the maps are hidden (kept) and nothing is drawn any more."""
    viewer, widget = _kvasir_sample_drawn(make_napari_viewer, dock, wait_idle)
    maps = widget.map_layers()
    assert grid_of(viewer).enabled and maps
    widget.parent().title.close_button.click()  # the dock's "x"
    assert widget.parent() is None
    assert not grid_of(viewer).enabled
    assert all(ly in viewer.layers and not ly.visible for ly in maps)
    viewer.add_labels(viewer.layers["kvasir mask"].data, name="another mask")
    widget.gt_picker.set_layer(viewer.layers["another mask"])  # would redraw when docked
    qtbot.wait(2 * widget.DEBOUNCE_MS)
    wait_idle(widget)
    assert not grid_of(viewer).enabled
    assert all(not ly.visible for ly in widget.map_layers())
    _, again = dock(NAME, viewer)  # opened again: a new panel, drawing into the same maps
    wait_idle(again, timeout=60_000)
    assert again is not widget and grid_of(viewer).enabled
    assert again.map_layers() and all(ly.visible for ly in again.map_layers())


def test_class_spin_box_follows_the_classes_of_the_inputs(dock, wait_idle):
    _, widget = _acdc_drawn(dock, wait_idle)
    assert widget.class_spin.max == 3  # classes 0-3
    widget.class_spin.native.setValue(7)  # as typed: Qt clips it
    assert widget.class_spin.value == 3
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    assert widget.map_layers()[0].name == "prediction p(class 3)"
    assert widget.class_spin.native.text() == "3"  # unnamed classes: the number alone
    widget.class_spin.max = 255  # a class beyond the inputs' (e.g. from other inputs)
    widget.class_spin.value = 7
    wait_idle(widget)
    assert widget.status.is_error
    assert "4 classes (0–3), not 7" in widget.status.text()


def test_previous_inputs_keep_their_titles_in_the_grid(make_napari_viewer, dock, wait_idle):
    # every visible layer takes a cell: the ones no longer inputs still say what they are
    viewer, widget = _kvasir_sample_drawn(make_napari_viewer, dock, wait_idle)
    viewer.open_sample("napari-segloss", "acdc")
    widget.image_picker.set_layer(viewer.layers["acdc image"])
    widget.gt_picker.set_layer(viewer.layers["acdc labels"])
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    untitled = [ly.name for ly in viewer.layers if ly.visible and not ly.name_overlay.visible]
    assert untitled == []
    widget.grid_check.value = False  # the user's title settings come back
    wait_idle(widget)  # the grid changes in turns of its own
    assert not any(ly.name_overlay.visible for ly in viewer.layers)


def test_titles_fit_their_cells(make_napari_viewer, dock, wait_idle, qtbot):
    # long loss names were cut off at the cell's edge ("tversky(alpha=0.9) c")
    from napari_segloss._widgets._grid import TITLE_MARGIN

    viewer = make_napari_viewer(show=True)  # the canvas takes its size when shown
    viewer.window._qt_window.resize(1600, 1050)  # the audit's window
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    wait_idle(widget, timeout=60_000)
    qtbot.waitUntil(lambda: viewer.canvas.size[1] > 700)
    widget.set_losses(["ce+pm_dice", "dice", "tversky"])
    widget._param_form("tversky").widgets["alpha"].value = 0.9
    wait_idle(widget)
    grid_view = widget.grid_view
    room = grid_view.cell_width() - TITLE_MARGIN
    assert math.isfinite(room)
    sizes = {ly.name: ly.name_overlay.font_size for ly in viewer.layers}
    for name, size in sizes.items():
        assert grid_view.text_width(name, size) <= room, (name, size, room)
    assert sizes["dice |∂L/∂z|"] == 10  # only the titles that need it shrink
    assert sizes["tversky |∂L/∂z| (alpha=0.9)"] < 10
    widget.grid_check.value = False  # the user's font sizes come back
    wait_idle(widget)  # the grid changes in turns of its own
    assert {ly.name_overlay.font_size for ly in viewer.layers} == {10}


def test_titles_follow_a_narrower_window_and_a_new_layer(
    make_napari_viewer, dock, wait_idle, qtbot
):
    # titles were fitted only when the panel drew: a narrower window or a layer added (the
    # grid goes from 3 to 4 columns) cut them off, and the new layer had no title
    from napari_segloss._widgets._grid import TITLE_FONT_SIZES, TITLE_MARGIN

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1050)
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    wait_idle(widget, timeout=60_000)
    grid_view = widget.grid_view

    def all_fit() -> bool:  # or are as small as titles get
        room = grid_view.cell_width() - TITLE_MARGIN
        return all(
            grid_view.text_width(ly.name, ly.name_overlay.font_size) <= room
            or ly.name_overlay.font_size == TITLE_FONT_SIZES[-1]
            for ly in viewer.layers
            if ly.visible
        )

    qtbot.waitUntil(lambda: viewer.canvas.size[1] > 700)
    zoom = viewer.scene.camera.zoom
    new = viewer.add_image(np.zeros((8, 8)), name="a layer of the user's")
    qtbot.waitUntil(all_fit, timeout=5_000)
    assert new.name_overlay.visible  # its cell says what it shows
    # the narrower cells are fitted again: the old zoom showed a corner of each image
    qtbot.waitUntil(lambda: viewer.scene.camera.zoom < 0.9 * zoom, timeout=5_000)
    viewer.window._qt_window.resize(1000, 900)
    qtbot.waitUntil(all_fit, timeout=5_000)
    assert min(ly.name_overlay.font_size for ly in viewer.layers) < 10
    wait_idle(widget)  # the new layer scheduled a redraw: let it end before the viewer closes


def test_colour_bars_sit_beside_the_maps_not_on_them(make_napari_viewer, dock, wait_idle, qtbot):
    """In a laptop-sized window a Kvasir map filled its cell's width, so its colour bar and
    tick labels covered its bottom-right corner. The view leaves the bar its room."""
    from napari_segloss._widgets._grid import CELL_PAD, COLORBAR_ROOM

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    wait_idle(widget, timeout=60_000)
    qtbot.waitUntil(lambda: viewer.canvas.size[1] > 600)
    cell = widget.grid_view.cell_width()
    viewer.reset_view()  # napari's fit: the image centred, as wide as the cell allows
    assert 320 * camera_of(viewer).zoom > cell - 2 * COLORBAR_ROOM  # the bar would cover it
    widget.grid_view.fit_view()  # what the panel does after drawing, at this canvas size

    def margins() -> tuple[float, float]:  # screen pixels left and right of the image
        cell = widget.grid_view.cell_width()
        camera, extent = camera_of(viewer), viewer.layers.extent
        lo = extent.world[0][-1] - extent.step[-1] / 2
        hi = extent.world[1][-1] + extent.step[-1] / 2
        x = [cell / 2 + (v - camera.center[-1]) * camera.zoom for v in (lo, hi)]
        return x[0], cell - x[1]

    left, right = margins()
    room = widget.grid_view.colorbar_room()
    assert left >= 0 and right >= max(room, COLORBAR_ROOM) - 0.5, (left, right)
    assert left + right < room + CELL_PAD + 1  # no smaller than it has to be
    assert all(ly.colorbar.visible for ly in widget.map_layers()[1:])


def test_the_optional_image_removed_leaves_none(dock, wait_idle):
    viewer, widget, _, _ = _kvasir(dock, wait_idle)
    viewer.layers.remove("polyp")  # the only image: the what-if source needs none
    wait_idle(widget)
    assert widget.image_picker.layer() is None
    text = widget.status.text()
    assert not widget.status.is_error, text
    assert text.startswith("image 'polyp' was removed; no image now")


def test_closing_napari_while_the_maps_compute_is_harmless(make_napari_viewer, qtbot):
    # the worker's next progress step reached the deleted panel: PyQt aborted the process
    # (rc 134), which kills a Jupyter kernel that closed its viewer mid-computation
    from superqt.utils._qthreading import WorkerBase

    viewer = make_napari_viewer()
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = viewer.window.add_plugin_dock_widget("napari-segloss", NAME)
    qtbot.waitUntil(lambda: widget.busy, timeout=10_000)
    viewer.close()
    qtbot.waitUntil(lambda: not WorkerBase._worker_set, timeout=60_000)
    qtbot.wait(200)  # the workers' last signals are delivered


def test_small_loss_values_keep_their_digits(dock, wait_idle):
    """A focal loss of about 1e-5 read 0.0000 in the table, as if the prediction were
    perfect: below 0.001 a value shows three significant digits."""
    import torch

    from napari_segloss.explorer import probabilities_to_logits
    from napari_segloss.losses import get_loss

    _, widget, _, mask = _kvasir(dock, wait_idle)
    widget.set_losses(["focal", "dice"])
    widget._param_form("focal").widgets["gamma"].value = 5.0
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    texts = {widget.table.item(r, 0).text(): widget.table.item(r, 1).text()
             for r in range(widget.table.rowCount())}  # fmt: skip
    probs = make_whatif(mask, "blur", 3.0, softness=1.5)
    logits = probabilities_to_logits(torch.from_numpy(probs)[None])
    target = torch.from_numpy(mask.astype(np.int64))[None]
    expected = float(get_loss("focal", gamma=5.0)(logits, target))
    assert 0 < expected < 1e-3
    shown = texts["focal(gamma=5)"]
    assert shown != "0.0000"
    assert float(shown) == pytest.approx(expected, rel=5e-3)
    assert len(texts["dice"].split(".")[1]) == 4  # larger values: four decimals as before


def test_an_update_that_fails_says_the_maps_shown_are_from_before(dock, wait_idle):
    """A failed update leaves the previous maps on screen: the error said only what was
    wrong, so the maps (and values) looked like those of the new, rejected settings."""
    viewer, widget, _, mask = _kvasir(dock, wait_idle)
    before = [ly.name for ly in widget.map_layers()]
    assert before and not widget.status.is_error
    viewer.add_image(mask.astype(np.float32) * 255, name="scores")  # not probabilities
    widget.source.value = "probability image"
    widget.pred_image_picker.set_layer(viewer.layers["scores"])
    wait_idle(widget)
    assert widget.status.is_error
    text = widget.status.text()
    assert "expected probabilities in [0, 1]" in text
    assert "the maps shown are from the previous update" in text
    assert [ly.name for ly in widget.map_layers()] == before

    widget.source.value = "what-if from ground truth"  # fixed: drawn again, no note left
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    assert "previous update" not in widget.status.text()
    widget.set_losses([])  # nothing to draw: a live update that cannot run
    for row in list(widget.gamma_list.rows):
        widget.gamma_list.remove(row)
    wait_idle(widget)
    assert "tick at least one loss" in widget.status.text()
    assert "the maps shown are from the previous update" in widget.status.text()


def test_the_parameter_form_names_its_loss(dock, wait_idle):
    """The form under the loss list showed fields ("weight  None") without saying which
    loss they belong to: the selected row's highlight was the only hint."""
    _, widget, _, _ = _kvasir(dock, wait_idle)
    for name in ("ce", "focal", "ce+pm_dice"):
        row = widget.loss_list.findItems(name, loss_explorer.Qt.MatchFlag.MatchExactly)[0]
        widget.loss_list.setCurrentItem(row)
        form = widget.param_stack.currentWidget()
        assert form.heading is not None and form.heading.isVisibleTo(widget)
        assert form.heading.text() == f"parameters of {name}:"


def test_blank_maps_of_a_hard_prediction_are_explained(dock, wait_idle):
    """A labels layer as prediction is hard (0/1): the softmax/sigmoid is saturated and a
    region loss's gradient is about 1e-43 at every pixel, so its map was blank (black) with
    no word why, next to a cross-entropy map that shows the errors."""
    viewer, widget, _, mask = _kvasir(dock, wait_idle)
    assert "no gradient" not in widget.status.text()  # what-if: soft
    viewer.add_labels(np.roll(mask, 5, axis=1), name="shifted")
    widget.source.value = "labels layer"
    widget.pred_labels_picker.set_layer(viewer.layers["shifted"])
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    text = widget.status.text()
    assert "dice: no gradient at any pixel (blank map)" in text
    assert "hard 0/1 prediction" in text
    assert text.split(": no gradient")[0].endswith(". dice")  # ce's map is not blank


def test_a_class_left_from_other_inputs_says_what_to_change(dock, wait_idle):
    """Class 3 chosen on a four-class ground truth, then a binary one picked: the error
    said only "2 classes (0–1), not 3", and every later change failed the same way."""
    viewer, widget = _acdc_drawn(dock, wait_idle)
    widget.class_spin.value = 3
    wait_idle(widget)
    viewer.add_labels(np.zeros(viewer.layers["heart"].data.shape, np.uint8), name="empty")
    widget.image_picker.set_layer(None)
    widget.gt_picker.set_layer(viewer.layers["empty"])
    wait_idle(widget)
    assert widget.status.is_error
    assert "2 classes (0–1), not 3: set 'class' to one of them" in widget.status.text()
    widget.class_spin.value = 1
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()


def test_a_labels_prediction_is_never_the_ground_truth_itself(dock, wait_idle):
    """With only the ground truth open, "labels layer" took it as the prediction, and kept it
    when a prediction came: every loss 0, blank maps, and a hint about hard 0/1 predictions.
    The Predict panel's prediction was not even offered (other panels' layers were left out)."""
    viewer, widget, _, mask = _kvasir(dock, wait_idle)
    widget.source.value = "labels layer"
    assert widget.pred_labels_picker.layer() is viewer.layers["truth"]  # the one choice
    wait_idle(widget)
    assert widget.status.is_error
    assert "'truth' is the ground truth itself; pick another Labels layer" in (widget.status.text())
    # another panel's prediction: offered, and taken in place of the ground truth
    viewer.add_labels(np.zeros_like(mask), name="errors",
                      metadata={TAG: {"panel": "predict", "key": "errors"}})  # fmt: skip
    picker = widget.pred_labels_picker
    assert picker.layer() is viewer.layers["truth"]  # an errors overlay is no prediction
    predicted = viewer.add_labels(np.roll(mask, 5, axis=1), name="prediction [run/best]",
                                  metadata={TAG: {"panel": "predict", "key": "prediction"}})  # fmt: skip
    assert [picker.itemText(i) for i in range(picker.count())] == [
        "truth",
        "prediction [run/best]",
    ]
    assert picker.layer() is predicted
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    assert "no gradient at any pixel" in widget.status.text()  # a hard prediction, said


def test_layers_that_lie_apart_are_noted(dock, wait_idle):
    """An image opened with its NIfTI header (spacing, origin) and labels without: napari drew
    them apart, the maps followed the labels, and nothing said why the cells looked empty."""
    image, labels = load_sample("acdc")
    viewer, widget = dock(NAME)
    viewer.add_image(image, name="mri", scale=(10.0, 1.5, 1.5), translate=(5.0, 0.0, 0.0))
    viewer.add_labels(labels, name="heart")
    wait_idle(widget, timeout=60_000)
    assert not widget.status.is_error, widget.status.text()
    assert (
        "Note: 'mri' and 'heart' do not lie alike (scale (10, 1.5, 1.5) vs (1, 1, 1); "
        "translate (5, 0, 0) vs (0, 0, 0)): napari draws them apart; results are placed and "
        "measured as 'heart'"
    ) in widget.status.text()
    viewer.layers["mri"].scale, viewer.layers["mri"].translate = (1, 1, 1), (0, 0, 0)
    widget.update_maps()
    wait_idle(widget)
    assert "do not lie alike" not in widget.status.text()


def test_hidden_maps_wait_for_the_slice_until_they_are_shown(dock, wait_idle):
    """Predict & Compare hides the maps and turns the grid off; each slice move still
    recomputed them, unseen, while the status spoke of maps no longer on screen."""
    viewer, widget = _acdc_drawn(dock, wait_idle)
    drawn = widget._z_index
    for layer in widget.map_layers():
        layer.visible = False
    widget.grid_check.value = False
    wait_idle(widget)
    other = (drawn + 2) % viewer.layers["heart"].data.shape[0]
    viewer.dims.set_current_step(0, other)
    assert not widget.busy and widget._z_index == drawn  # nothing computed for hidden maps
    widget.grid_check.value = True  # the maps back: for the slice on screen now
    wait_idle(widget)
    assert widget._z_index == other
    assert all(layer.visible for layer in widget.map_layers())
    assert f"(slice {other})" in widget.status.text()


def test_the_3d_view_says_the_maps_are_of_one_slice(dock, wait_idle):
    """In napari's 3D view the maps of 'current slice' are one slab while the image renders
    whole, and nothing pointed to '3D scope: whole volume'."""
    viewer, widget = _acdc_drawn(dock, wait_idle)
    assert "3D view" not in widget.status.text()
    viewer.dims.ndisplay = 3
    wait_idle(widget)
    assert "In napari's 3D view the maps are of that slice only: set '3D scope' to 'whole " in (
        widget.status.text()
    )
    widget.scope.value = "whole volume"
    wait_idle(widget, timeout=60_000)
    assert "3D view" not in widget.status.text()


def test_a_checkpoint_chosen_after_the_source_redraws_the_maps(dock, wait_idle, tiny_checkpoint):
    """The checkpoint picker was connected to nothing: with the source on 'checkpoint', a
    path chosen (Browse, the list) left the old error and maps until the slider moved."""
    _viewer, widget, _image, _mask = _kvasir(dock, wait_idle)
    widget.set_losses(["dice"])
    widget.source.value = "checkpoint"
    wait_idle(widget)
    assert "checkpoint: none chosen" in widget.status.text()
    widget.ckpt_picker.set_path(tiny_checkpoint)  # what Browse does
    assert widget.busy  # scheduled at once
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    assert len(widget._ckpt_cache) == 1


def test_a_0_255_mask_is_read_as_binary_with_a_note(dock, wait_idle):
    """A mask converted from an image layer holds 0/255: read as 256 classes, class 1 was
    empty and every map blank (the file readers read such masks as 0/1)."""
    image, mask = load_sample("kvasir", 0)
    viewer, widget = dock(NAME)
    viewer.add_image(image, name="polyp")
    viewer.add_labels(mask.astype(np.uint8) * 255, name="mask.png")
    wait_idle(widget, timeout=60_000)
    assert not widget.status.is_error, widget.status.text()
    assert "'mask.png' holds 0/255: read as a binary mask (1 = 255)" in widget.status.text()
    assert widget.class_spin.max == 1
    assert _owned(viewer, "gamma:")[0].data.max() > 0  # the maps show the polyp


def test_the_probability_picker_moves_off_the_input_image(dock, wait_idle):
    """With only the scan open, the probability picker took it and kept it when a softmax
    layer came: 'expected probabilities in [0, 1], got values in [0, 255]'."""
    image, labels = load_sample("acdc")
    viewer, widget = dock(NAME)
    scan = viewer.add_image(image, name="mri")
    viewer.add_labels(labels, name="heart")
    wait_idle(widget, timeout=60_000)
    assert widget.pred_image_picker.layer() is scan
    probs = np.stack([(labels == c).astype(np.float32) for c in range(4)])
    soft = viewer.add_image(probs * 0.9 + 0.025, name="softmax")
    assert widget.pred_image_picker.layer() is soft


def test_an_emptied_parameter_field_means_its_default(dock, wait_idle):
    _viewer, widget, _image, _mask = _kvasir(dock, wait_idle)
    form = widget._param_form("ce")
    assert "weight" in form.editors, list(form.editors)
    form.editors["weight"].setText("")  # was "expected a number or Python literal, got ''"
    assert form.values() == {}  # the default, None


def test_a_live_change_that_cannot_be_drawn_says_the_maps_are_old(dock, wait_idle, warnings_shown):
    """With maps drawn, switching the prediction to 'labels layer' with no such layer left the
    old what-if maps and values on screen with a note below the fold: they passed for new."""
    _viewer, widget, _image, _mask = _kvasir(dock, wait_idle)
    assert widget.map_layers() and not widget.status.is_error
    widget.source.value = "labels layer"
    wait_idle(widget)
    assert widget.status.is_error
    assert widget.status.text().endswith("the maps shown are from the previous update")
    # the status line may be scrolled out of sight: it pops up too
    assert len(warnings_shown) == 1 and "ground truth itself" in warnings_shown[0]


def test_update_maps_shows_the_maps_the_predict_overlay_hid(dock, wait_idle):
    """Predict & Compare hides the maps and turns the grid off; Update maps recomputed them
    and left them hidden, showing nothing new."""
    _viewer, widget, _image, _mask = _kvasir(dock, wait_idle)
    for layer in widget.map_layers():
        layer.visible = False
    widget.grid_check.value = False
    wait_idle(widget)
    widget.update_maps()
    wait_idle(widget)
    assert widget.map_layers() and all(layer.visible for layer in widget.map_layers())


def test_update_maps_with_the_same_maps_leaves_the_grid_shape_alone(dock, wait_idle):
    """Update maps with nothing added fixed the automatic grid to the shape it already had
    and freed it again at the end: two re-layouts of every cell (about 0.9 s of frozen window
    on the acdc sample) for nothing."""
    viewer, widget, _image, _mask = _kvasir(dock, wait_idle)
    grid = grid_of(viewer)
    assert grid.enabled and tuple(grid.shape) == (-1, -1)
    shapes: list[tuple[int, int]] = []
    grid.events.shape.connect(lambda event: shapes.append(tuple(event.value)))
    widget.update_maps(explicit=True)
    wait_idle(widget)
    assert not widget.status.is_error, widget.status.text()
    assert shapes == [] and tuple(grid.shape) == (-1, -1)
    widget.gamma_list.add(3.0)  # a new map: the grid may grow, then goes automatic
    wait_idle(widget)
    assert tuple(grid.shape) == (-1, -1)


def test_colour_bars_and_their_tick_labels_leave_the_maps_uncovered(
    make_napari_viewer, dock, wait_idle, qtbot
):
    """A fixed room of 56 px left the 0-1 bars of the PM-Dice maps (their "0.5" labels are
    wider than the "80" of a contribution map) a few pixels over the maps' right edge. The
    room is measured against napari's own colour bar: its padding, bar, ticks and labels."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)  # the audit's window: three columns of maps
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    wait_idle(widget, timeout=60_000)
    qtbot.waitUntil(lambda: viewer.canvas.size[1] > 600)
    widget.grid_view.fit_view()  # at this canvas size (what the panel does after drawing)
    canvas = viewer.window._qt_viewer.canvas
    pad = viewer.canvas.overlay_tiling.padding[0]
    bars = [canvas._layer_overlay_to_visual[ly][ly.colorbar] for ly in widget.map_layers()[1:]]
    widest = max(bar.x_size for bar in bars)  # napari's width of a bar and its labels
    camera, extent = camera_of(viewer), viewer.layers.extent
    hi = extent.world[1][-1] + extent.step[-1] / 2
    cell = widget.grid_view.cell_width()
    right = cell - (cell / 2 + (hi - camera.center[-1]) * camera.zoom)  # pixels right of maps
    assert right >= pad + widest + 4, (right, pad, widest)


def test_added_gammas_take_their_place_in_ascending_order(dock):
    """The "add γ" button proposes 3, then 0, then 1.5: appended, the rows read 0.5 1 2 5 3 0 1.5
    while the maps are in ascending order. A new row goes where its value belongs."""
    _, widget = dock(NAME)
    gammas = widget.gamma_list
    for _ in range(3):
        gammas.add()
    assert gammas.values() == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0]
    shown = [gammas._layout.itemAt(i).widget() for i in range(gammas._layout.count())]
    assert shown == [*gammas.rows, gammas.add_button]  # the panel shows them in that order
    gammas.rows[0].slider.setValue(7.0)  # a row being dragged keeps its place
    assert gammas.values()[0] == 7.0


def test_a_compound_loss_title_keeps_the_gradient_mark(make_napari_viewer, dock, wait_idle, qtbot):
    """A compound's parameters ("ce+pm_dice(weights=(0.5, 1))") came before the "|∂L/∂z|"
    mark, and the title, cut at its cell's edge, lost the mark the other maps show. The
    parameters come after it: what a cell cuts is the end of the parameter list."""
    from napari_segloss._widgets._grid import TITLE_FONT_SIZES, TITLE_MARGIN

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.open_sample("napari-segloss", "kvasir")
    _, widget = dock(NAME, viewer)
    wait_idle(widget, timeout=60_000)
    widget.set_losses(["ce+pm_dice", "dice"])
    widget._param_form("ce+pm_dice").widgets["weight__ce"].value = 0.5
    wait_idle(widget)
    compound = next(ly for ly in widget.map_layers() if ly.name.startswith("ce+pm_dice"))
    assert compound.name == "ce+pm_dice |∂L/∂z| (weights=(0.5, 1))"
    assert "ce+pm_dice(weights=(0.5, 1))" in _values(widget)  # the table keeps the label
    room = widget.grid_view.cell_width() - TITLE_MARGIN
    shown = widget.grid_view.text_width("ce+pm_dice |∂L/∂z|", TITLE_FONT_SIZES[-1])
    assert shown <= room, (shown, room)  # the mark is within the cell
