"""Tests for napari_segloss.plotting (figures with labelled axes; table summaries)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from napari_segloss.plotting import (
    bar_with_errors,
    contour_landscape,
    contour_landscapes,
    error_overlay_grid,
    overlay_errors,
    plot_curves,
    show_maps_grid,
    summarize_rows,
    surface_3d,
    surfaces_3d,
)

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _colorbar_labels(fig: Figure) -> list[str]:
    # colour bars are extra axes whose y (or x) label is the colour-bar label
    return [a.get_ylabel() for a in fig.axes if getattr(a, "_colorbar", None) is not None]


def test_show_maps_grid_titles_and_colorbars():
    maps = [RNG.random((8, 8)), torch.rand(1, 1, 8, 8), RNG.random((8, 8))]
    fig = show_maps_grid(
        maps, ["a", "b", "c"], ncols=2, colorbar_label="m", vmin=0, vmax=1, suptitle="S"
    )
    assert isinstance(fig, Figure)
    visible = [a for a in fig.axes if a.get_visible() and a.get_title()]
    assert [a.get_title() for a in visible] == ["a", "b", "c"]
    assert all(a.get_xlabel() and a.get_ylabel() for a in visible)
    assert _colorbar_labels(fig) == ["m", "m", "m"]
    assert fig.get_suptitle() == "S"
    # the 4th cell of the 2x2 grid is hidden
    assert sum(not a.get_visible() for a in fig.axes) == 1


def test_show_maps_grid_rgb_and_background():
    rgb = np.zeros((6, 6, 3), dtype=np.uint8)
    fig = show_maps_grid([rgb, np.ones((6, 6))], ["image", "map"], background=rgb, alpha=0.5)
    assert len(_colorbar_labels(fig)) == 1  # no colour bar for the RGB panel


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([np.zeros((4, 4))], ["a", "b"]), {}, "titles must have one entry per map"),
        (([np.zeros((4, 4, 5))], ["a"]), {}, r"maps\[0\] must be a 2D map"),
        (([np.zeros((4, 4))], ["a"]), {"colorbar_label": ["x", "y"]}, "colorbar_label must"),
        (([], []), {}, "at least one panel"),
    ],
)
def test_show_maps_grid_rejects_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        show_maps_grid(*args, **kwargs)


def test_contour_landscape_labels():
    x, y = np.linspace(0, 1, 5), np.linspace(0, 2, 4)
    z = np.add.outer(y, x)
    fig = contour_landscape(
        x, y, z, xlabel="FP", ylabel="FN", title="Dice", colorbar_label="loss", mark=(0, 0)
    )
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("FP", "FN", "Dice")
    assert _colorbar_labels(fig) == ["loss"]


def test_contour_landscape_flat_and_log():
    x = y = np.arange(3.0)
    contour_landscape(x, y, np.ones((3, 3)), xlabel="a", ylabel="b", title="flat")
    contour_landscape(x, y, np.exp(np.add.outer(y, x)), xlabel="a", ylabel="b", title="t", log=True)
    with pytest.raises(ValueError, match="strictly positive"):
        contour_landscape(x, y, np.zeros((3, 3)), xlabel="a", ylabel="b", title="t", log=True)
    with pytest.raises(ValueError, match=r"z must have shape \(len\(y\), len\(x\)\) = \(3, 3\)"):
        contour_landscape(x, y, np.zeros((3, 4)), xlabel="a", ylabel="b", title="t")


def test_contour_landscapes_one_panel_per_surface():
    x = y = np.linspace(-1, 1, 4)
    surfaces = {name: RNG.random((4, 4)) for name in ("dice", "pm_dice", "ce")}
    fig = contour_landscapes(x, y, surfaces, xlabel="a", ylabel="b", ncols=2, suptitle="T")
    titles = [a.get_title() for a in fig.axes if a.get_visible() and a.get_title()]
    assert titles == ["dice", "pm_dice", "ce"]
    assert len(_colorbar_labels(fig)) == 3
    with pytest.raises(ValueError, match="at least one surface"):
        contour_landscapes(x, y, {}, xlabel="a", ylabel="b")


def test_surface_3d():
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)
    fig = surface_3d(x, y, np.add.outer(y**2, x**2), xlabel="d1", ylabel="d2", title="PM Dice")
    ax = next(a for a in fig.axes if a.name == "3d")
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_zlabel()) == ("d1", "d2", "loss")
    assert ax.get_title() == "PM Dice"
    # the colour bar spans the surface's values (0 at the minimum .. 2), not the face means
    cbar = next(a for a in fig.axes if getattr(a, "_colorbar", None) is not None)._colorbar
    assert (cbar.vmin, cbar.vmax) == (0.0, 2.0)
    _, ax2 = plt.subplots()
    with pytest.raises(ValueError, match="3D axes"):
        surface_3d(x, y, np.zeros((3, 5)), xlabel="a", ylabel="b", title="t", ax=ax2)


def test_surfaces_3d_one_panel_per_surface():
    x = y = np.linspace(-1, 1, 3)
    fig = surfaces_3d(
        x, y, {"dice": np.zeros((3, 3)), "ce": np.ones((3, 3))}, xlabel="a", ylabel="b"
    )
    panels = [a for a in fig.axes if a.name == "3d"]
    assert [a.get_title() for a in panels] == ["dice", "ce"]
    assert all(a.get_zlabel() == "loss" for a in panels)
    with pytest.raises(ValueError, match="at least one surface"):
        surfaces_3d(x, y, {}, xlabel="a", ylabel="b")


def test_plot_curves_normalize():
    x = np.array([1.0, 2.0, 3.0])
    fig = plot_curves(
        x,
        {"a": [1, 2, 4], "b": np.array([2, 1, 0])},
        xlabel="x",
        ylabel="loss",
        title="T",
        normalize=True,
    )
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1.0, 0.5, 0.0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert ax.get_ylabel().startswith("loss")
    with pytest.raises(ValueError, match=r"curves\['a'\] must have shape \(3,\)"):
        plot_curves(x, {"a": [1, 2]}, xlabel="x", ylabel="y", title="t")


def test_summarize_rows_hand_computed():
    rows = [
        {"loss": "dice", "seed": "0", "dice": "80", "nsd": "70"},
        {"loss": "dice", "seed": "1", "dice": "84", "nsd": ""},
        {"loss": "pm_dice", "seed": "0", "dice": "90", "nsd": "nan"},
    ]
    means, stds, counts = summarize_rows(rows, group="loss", metrics=["dice", "nsd"])
    assert counts == {"dice": 2, "pm_dice": 1}
    assert means["dice"]["dice"] == pytest.approx(82.0)
    assert stds["dice"]["dice"] == pytest.approx(math.sqrt(8.0))  # sample std of 80, 84
    assert means["dice"]["nsd"] == pytest.approx(70.0)  # the empty cell is skipped
    assert stds["dice"]["nsd"] == 0.0
    assert math.isnan(means["pm_dice"]["nsd"])
    with pytest.raises(ValueError, match="has no column 'iou'"):
        summarize_rows(rows, group="loss", metrics=["iou"])
    with pytest.raises(ValueError, match="must be a number, got 'x'"):
        summarize_rows([{"loss": "a", "dice": "x"}], group="loss", metrics=["dice"])


def test_bar_with_errors_bars_and_error_bars():
    means = {"dice": {"mDice": 0.8, "mIoU": 0.7}, "pm_dice": {"mDice": 0.85, "mIoU": 0.75}}
    errors = {"dice": {"mDice": 0.01, "mIoU": 0.02}, "pm_dice": {"mDice": 0.03, "mIoU": 0.0}}
    fig = bar_with_errors(means, errors, ylabel="score", title="Kvasir", annotate=True)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.7, 0.75, 0.8, 0.85]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mDice", "mIoU"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dice", "pm_dice"]
    assert ax.get_ylabel() == "score" and ax.get_title() == "Kvasir"
    with pytest.raises(ValueError, match="at least one series"):
        bar_with_errors({}, ylabel="y", title="t")


def test_bar_with_errors_stops_error_bars_at_the_bounds():
    # notebook 04: mean recall 62.14 ± 41.40 % drew an error bar up to 103.5 %
    fig = bar_with_errors(
        {"dice": {"mRec.": 62.14, "mPrec.": 10.0}},
        {"dice": {"mRec.": 41.40, "mPrec.": 5.0}},
        ylabel="%", title="t", bounds=(0.0, 100.0),
    )  # fmt: skip
    from matplotlib.container import ErrorbarContainer

    [bars] = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    segments = bars.lines[2][0].get_segments()
    spans = sorted((round(seg[0][1], 2), round(seg[1][1], 2)) for seg in segments)
    assert spans == [(5.0, 15.0), (20.74, 100.0)]


def test_curves_over_steps_have_whole_step_ticks():
    # notebook 03's 10-step training curves had ticks at steps 2.5, 7.5
    for steps in (4, 20):  # matplotlib's own choice: 0.5 ... 4.5, and 0, 2.5, 5 ... 22.5
        fig = plot_curves(np.arange(1, steps + 1), {"dice": np.linspace(1, 0, steps)},
                          xlabel="step", ylabel="loss", title="t")  # fmt: skip
        ticks = fig.axes[0].get_xticks()
        assert len(ticks) >= 3 and np.all(np.mod(ticks, 1) == 0), ticks
    fig = plot_curves(np.linspace(0, 1, 5), {"a": np.ones(5)}, xlabel="x", ylabel="y", title="t")
    assert np.any(np.mod(fig.axes[0].get_xticks(), 1) != 0)  # fractions keep fractional ticks


def test_overlay_errors_colours():
    overlay = pytest.importorskip("napari_segloss.overlay")
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    gt = np.zeros((4, 4), dtype=np.uint8)
    pred = np.zeros((4, 4), dtype=np.uint8)
    gt[0, 0] = pred[0, 0] = 1  # TP
    pred[1, 1] = 1  # FP
    gt[2, 2] = 1  # FN
    fig = overlay_errors(image, pred, gt, title="pm_dice")
    ax = fig.axes[0]
    rgba = np.asarray(ax.images[1].get_array())
    for (row, col), label in {(0, 0): 1, (1, 1): 2, (2, 2): 3, (3, 3): 0}.items():
        np.testing.assert_allclose(rgba[row, col], overlay.ERROR_COLORS[label])
    np.testing.assert_allclose(rgba[1, 1], (1, 0, 0, 1))  # FP red (paper fig. 5)
    np.testing.assert_allclose(rgba[2, 2], (0, 0, 1, 1))  # FN blue
    assert ax.get_title() == "pm_dice"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["true positive", "false positive", "false negative"]
    assert ax.get_xlabel() == "FP red, FN blue, TP green"


def test_overlay_errors_without_legend_and_caption():
    """A figure that names the colours once (notebook 04) turns both off per panel."""
    pytest.importorskip("napari_segloss.overlay")
    gt = np.eye(4, dtype=np.uint8)
    fig = overlay_errors(np.zeros((4, 4)), gt, gt, legend=False, caption=False)
    ax = fig.axes[0]
    assert ax.get_legend() is None and ax.get_xlabel() == ""
    assert len(ax.images) == 2  # the image and its overlay are still drawn


def test_error_overlay_grid_layout():
    pytest.importorskip("napari_segloss.overlay")
    images = [np.zeros((5, 5, 3), np.uint8)] * 2
    gts = [np.eye(5, dtype=np.uint8)] * 2
    preds = {"dice": [np.eye(5, dtype=np.uint8)] * 2, "pm_dice": [np.zeros((5, 5), np.uint8)] * 2}
    fig = error_overlay_grid(images, gts, preds, row_titles=["a", "b"])
    titles = [a.get_title() for a in fig.axes]
    assert titles == [
        "a",
        "ground truth",
        "dice",
        "pm_dice",
        "b",
        "ground truth",
        "dice",
        "pm_dice",
    ]
    with pytest.raises(ValueError, match=r"predictions\['dice'\] must hold 2"):
        error_overlay_grid(images, gts, {"dice": preds["dice"][:1]})
