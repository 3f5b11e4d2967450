"""Matplotlib figures shared by the notebooks (Qt-free; object-oriented matplotlib API).

Every function returns the :class:`matplotlib.figure.Figure` it drew on, with titled and
labelled axes and a labelled colour bar where colour carries a value. Figures are created with
``pyplot.subplots`` only so that Jupyter's inline backend displays them; everything else goes
through the ``Axes`` / ``Figure`` objects (no pyplot state machine). Pass ``ax=`` to draw into
an existing axes instead.

Helpers:

* :func:`show_maps_grid` — a grid of per-pixel maps (e.g. PM-Dice modulating maps, fig. 2 of
  the PM-Dice paper) with colour bars.
* :func:`contour_landscape` / :func:`contour_landscapes` — filled contour plots of a loss over
  two controlled quantities or two weight-space directions.
* :func:`surface_3d` / :func:`surfaces_3d` — the same as 3D surfaces.
* :func:`plot_curves` — loss against one controlled quantity for several losses.
* :func:`bar_with_errors` (+ :func:`summarize_rows`) — grouped bars with error bars, e.g.
  metrics per loss as mean +- std over seeds.
* :func:`overlay_errors` / :func:`error_overlay_grid` — true/false positive/negative overlays
  in the PM-Dice paper's fig. 5 colours (FP red, FN blue).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .overlay import ERROR_COLORS, error_labels

__all__ = [
    "bar_with_errors",
    "contour_landscape",
    "contour_landscapes",
    "error_overlay_grid",
    "overlay_errors",
    "plot_curves",
    "show_maps_grid",
    "summarize_rows",
    "surface_3d",
    "surfaces_3d",
]

_ERROR_NAMES = {1: "true positive", 2: "false positive", 3: "false negative"}


def _new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    # pyplot only creates the figure (so that Jupyter's inline backend shows it); imported
    # here because importing pyplot selects a GUI backend, which a headless import must not
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, **kwargs)


def _figure_for(ax: Axes | None, **new_figure: Any) -> tuple[Figure, Any]:
    """``(figure, axes)`` to draw on: ``ax`` and its figure, or a new figure made with
    ``new_figure`` (``figsize``, ``subplot_kw``...; constrained layout)."""
    if ax is not None:
        return ax.figure, ax
    return _new_figure(**new_figure, constrained_layout=True)


def _label_axes(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def _no_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _to_numpy(array: Any, name: str) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor, without importing torch here
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got dtype object")
    return arr


def _as_image(array: Any, name: str) -> np.ndarray:
    """A 2D map, or an (H, W, 3|4) colour image; squeezes leading singleton axes."""
    arr = _to_numpy(array, name)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
        return arr
    raise ValueError(f"{name} must be a 2D map or an (H, W, 3|4) image, got shape {arr.shape}")


def _display_rgb(image: np.ndarray) -> np.ndarray:
    """Float images outside [0, 1] (e.g. normalised network input) are rescaled for display."""
    if image.dtype == np.uint8 or image.ndim == 2:
        return image
    lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
    if lo >= 0 and hi <= 1:
        return image
    if hi <= 255 and lo >= 0:
        return image / 255.0
    return (image - lo) / (hi - lo + 1e-12)


def _grid_shape(n: int, ncols: int | None) -> tuple[int, int]:
    if n < 1:
        raise ValueError("at least one panel is needed, got 0")
    ncols = min(n, 4) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    ncols = min(ncols, n)
    return math.ceil(n / ncols), ncols


def _grid_xyz(x: Any, y: Any, z: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Float arrays of a surface z[i, j] over (x[j], y[i]), shapes checked.
    xs, ys, zs = (_to_numpy(a, n).astype(float) for a, n in ((x, "x"), (y, "y"), (z, "z")))
    if xs.ndim != 1 or ys.ndim != 1 or zs.shape != (ys.size, xs.size):
        raise ValueError(
            f"z must have shape (len(y), len(x)) = ({ys.size}, {xs.size}), got {zs.shape}"
        )
    return xs, ys, zs


def _panels(
    n: int,
    ncols: int | None,
    suptitle: str | None,
    figsize: Callable[[int, int], tuple[float, float]],
    draw: Callable[[Figure, Axes, int], object],
    **subplots_kwargs: Any,
) -> Figure:
    # A grid of n panels, panel k drawn by ``draw(fig, ax, k)``; spare panels are hidden.
    nrows, ncols = _grid_shape(n, ncols)
    fig, axes = _new_figure(
        nrows,
        ncols,
        figsize=figsize(nrows, ncols),
        squeeze=False,
        **subplots_kwargs,
        constrained_layout=True,
    )
    flat = axes.ravel()
    for k, ax in enumerate(flat[:n]):
        draw(fig, ax, k)
    for ax in flat[n:]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _surface_panels(
    surfaces: Mapping[str, Any],
    ncols: int | None,
    suptitle: str | None,
    figsize: Callable[[int, int], tuple[float, float]],
    draw: Callable[[Axes, str, Any], object],
    **subplots_kwargs: Any,
) -> Figure:
    # One panel per surface, drawn by ``draw(ax, name, z)``.
    if not surfaces:
        raise ValueError("surfaces must hold at least one surface")
    items = list(surfaces.items())
    return _panels(
        len(items),
        ncols,
        suptitle,
        figsize,
        lambda _fig, ax, k: draw(ax, *items[k]),
        **subplots_kwargs,
    )


def show_maps_grid(
    maps: Sequence[Any],
    titles: Sequence[str],
    *,
    ncols: int | None = None,
    cmap: str = "magma",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar_label: str | Sequence[str | None] | None = None,
    background: Any | None = None,
    alpha: float = 1.0,
    suptitle: str | None = None,
    panel_size: float = 3.2,
) -> Figure:
    """Show 2D maps side by side, each with a colour bar (colour images get none).

    Args:
        maps: 2D arrays or tensors (leading singleton axes are squeezed) or RGB images.
        titles: one title per map (say what is plotted and the key number, e.g. the loss).
        ncols: panels per row (default up to 4).
        cmap, vmin, vmax: colour mapping shared by all scalar maps (default: per map range).
        colorbar_label: label of every colour bar, or one per map.
        background: optional image drawn under every scalar map (use ``alpha`` < 1).
        suptitle: figure title.
    """
    maps = list(maps)
    titles = list(titles)
    if len(titles) != len(maps):
        raise ValueError(f"titles must have one entry per map ({len(maps)}), got {len(titles)}")
    if isinstance(colorbar_label, str) or colorbar_label is None:
        labels = [colorbar_label] * len(maps)
    else:
        labels = list(colorbar_label)
        if len(labels) != len(maps):
            raise ValueError(
                f"colorbar_label must be one string or one per map ({len(maps)}), got {len(labels)}"
            )
    bg = None if background is None else _display_rgb(_as_image(background, "background"))

    def draw(fig: Figure, ax: Axes, k: int) -> None:
        img = _as_image(maps[k], f"maps[{k}]")
        if bg is not None:
            ax.imshow(bg, cmap="gray")
        if img.ndim == 3:
            ax.imshow(_display_rgb(img))
        else:
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha)
            cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            if labels[k]:
                cbar.set_label(labels[k])
        _label_axes(ax, "x (pixels)", "y (pixels)", titles[k])

    return _panels(
        len(maps),
        ncols,
        suptitle,
        lambda nrows, ncols: (panel_size * ncols * 1.15, panel_size * nrows),
        draw,
    )


def contour_landscape(
    x: Any,
    y: Any,
    z: Any,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    ax: Axes | None = None,
    levels: int | Sequence[float] = 15,
    cmap: str = "viridis",
    colorbar_label: str = "loss",
    log: bool = False,
    lines: bool = True,
    mark: tuple[float, float] | None = None,
) -> Figure:
    """Filled contour plot of ``z[i, j]`` at ``(x[j], y[i])`` with a labelled colour bar.

    Args:
        x, y: 1D coordinates (``len(x)`` columns and ``len(y)`` rows of ``z``).
        z: 2D values, rows along ``y``.
        log: logarithmic colour scale (for values spanning decades; needs ``z > 0``).
        lines: overlay labelled iso-lines.
        mark: optional point to mark (e.g. ``(0, 0)``, the trained weights).
    """
    xs, ys, zs = _grid_xyz(x, y, z)
    if xs.size < 2 or ys.size < 2:
        raise ValueError(f"a contour needs at least 2 x and 2 y values, got {xs.size}x{ys.size}")
    fig, ax = _figure_for(ax, figsize=(4.8, 4.0))
    norm = None
    if log:
        finite = zs[np.isfinite(zs)]
        if finite.size == 0 or finite.min() <= 0:
            raise ValueError("log=True needs strictly positive z values")
        norm = LogNorm(vmin=finite.min(), vmax=finite.max())
        if isinstance(levels, int):
            levels = np.geomspace(finite.min(), finite.max() * (1 + 1e-9), levels)
    if not log and isinstance(levels, int) and np.ptp(zs[np.isfinite(zs)]) == 0:
        levels = 1  # a flat surface (e.g. a loss that ignores this error) still draws
    filled = ax.contourf(xs, ys, zs, levels=levels, cmap=cmap, norm=norm)
    if lines and not (isinstance(levels, int) and levels < 2):
        iso = ax.contour(xs, ys, zs, levels=filled.levels, colors="k", linewidths=0.4, norm=norm)
        ax.clabel(iso, iso.levels[::3], fontsize=7, fmt="%.2g")
    cbar = fig.colorbar(filled, ax=ax)
    cbar.set_label(colorbar_label)
    if mark is not None:
        ax.plot(*mark, marker="*", color="white", markeredgecolor="k", markersize=11)
    _label_axes(ax, xlabel, ylabel, title)
    return fig


def contour_landscapes(
    x: Any,
    y: Any,
    surfaces: Mapping[str, Any],
    *,
    xlabel: str,
    ylabel: str,
    ncols: int | None = None,
    suptitle: str | None = None,
    panel_size: float = 3.4,
    **kwargs: Any,
) -> Figure:
    """One :func:`contour_landscape` panel per entry of ``surfaces`` (titles = the keys)."""
    return _surface_panels(
        surfaces,
        ncols,
        suptitle,
        lambda nrows, ncols: (panel_size * ncols * 1.25, panel_size * nrows),
        lambda ax, name, z: contour_landscape(
            x, y, z, xlabel=xlabel, ylabel=ylabel, title=name, ax=ax, **kwargs
        ),
    )


def surface_3d(
    x: Any,
    y: Any,
    z: Any,
    *,
    xlabel: str,
    ylabel: str,
    zlabel: str = "loss",
    title: str,
    ax: Axes | None = None,
    cmap: str = "viridis",
) -> Figure:
    """3D surface of ``z[i, j]`` over ``(x[j], y[i])`` (pass an axes with projection='3d')."""
    xs, ys, zs = _grid_xyz(x, y, z)
    if ax is not None and getattr(ax, "name", "") != "3d":
        raise ValueError("ax must be a 3D axes (projection='3d')")
    fig, ax = _figure_for(ax, figsize=(5.2, 4.4), subplot_kw={"projection": "3d"})
    gx, gy = np.meshgrid(xs, ys)
    # matplotlib colours each face by the mean of its corners and scales the colour bar to
    # those means, which hides the minimum (the trained weights' loss): scale it to z instead
    finite = zs[np.isfinite(zs)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (None, None)
    surf = ax.plot_surface(gx, gy, zs, cmap=cmap, vmin=lo, vmax=hi, linewidth=0, antialiased=True)
    cbar = fig.colorbar(surf, ax=ax, shrink=0.6, pad=0.16)  # room for the z label
    cbar.set_label(zlabel)
    _label_axes(ax, xlabel, ylabel, title)
    ax.set_zlabel(zlabel, labelpad=10)  # clear of the tick labels (3D axes set it too close)
    return fig


def surfaces_3d(
    x: Any,
    y: Any,
    surfaces: Mapping[str, Any],
    *,
    xlabel: str,
    ylabel: str,
    zlabel: str = "loss",
    ncols: int | None = None,
    suptitle: str | None = None,
    panel_size: float = 3.8,
    **kwargs: Any,
) -> Figure:
    """One :func:`surface_3d` panel per entry of ``surfaces`` (titles = the keys)."""
    return _surface_panels(
        surfaces,
        ncols,
        suptitle,
        lambda nrows, ncols: (panel_size * ncols * 1.2, panel_size * nrows),
        lambda ax, name, z: surface_3d(
            x, y, z, xlabel=xlabel, ylabel=ylabel, zlabel=zlabel, title=name, ax=ax, **kwargs
        ),
        subplot_kw={"projection": "3d"},
    )


def plot_curves(
    x: Any,
    curves: Mapping[str, Any],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    ax: Axes | None = None,
    logx: bool = False,
    logy: bool = False,
    normalize: bool = False,
) -> Figure:
    """Line plot of several curves over the same ``x`` (one legend entry per curve).

    ``normalize=True`` divides every curve by its maximum absolute value so losses of very
    different scales can be compared by shape.
    """
    xs = _to_numpy(x, "x").astype(float)
    if xs.ndim != 1 or xs.size < 1:
        raise ValueError(f"x must be a non-empty 1D sequence, got shape {xs.shape}")
    if not curves:
        raise ValueError("curves must hold at least one curve")
    fig, ax = _figure_for(ax, figsize=(5.6, 3.8))
    for name, values in curves.items():
        ys = _to_numpy(values, f"curves[{name!r}]").astype(float)
        if ys.shape != xs.shape:
            raise ValueError(f"curves[{name!r}] must have shape {xs.shape}, got {ys.shape}")
        if normalize:
            peak = np.nanmax(np.abs(ys))
            ys = ys / peak if peak > 0 else ys
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    if logx:
        ax.set_xscale("log")
    elif np.all(np.mod(xs, 1) == 0):  # steps, epochs: no tick at step 2.5
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if logy:
        ax.set_yscale("log")
    _label_axes(ax, xlabel, ylabel + (" (normalised to max 1)" if normalize else ""), title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def summarize_rows(
    rows: Iterable[Mapping[str, Any]], *, group: str, metrics: Sequence[str]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, int]]:
    """Mean and sample standard deviation of ``metrics`` per value of ``rows[group]``.

    ``rows`` are e.g. ``csv.DictReader`` rows (one per run: loss x seed); values are parsed as
    floats and NaN / empty cells (failed runs, undefined metrics) are skipped, and so is an
    infinite value (a run's HD95 when one image had an empty mask: bars cannot be drawn to
    infinity; the comparison table reports it as inf). The std of a single value is 0.

    Returns:
        ``(means, stds, counts)``: ``means[group_value][metric]``, the same for ``stds``, and the
        number of rows per group.
    """
    if not metrics:
        raise ValueError("metrics must name at least one column")
    collected: dict[str, dict[str, list[float]]] = {}
    counts: dict[str, int] = {}
    for k, row in enumerate(rows):
        if group not in row:
            raise ValueError(f"rows[{k}] has no column {group!r} (columns: {sorted(row)})")
        key = str(row[group])
        counts[key] = counts.get(key, 0) + 1
        per_metric = collected.setdefault(key, {m: [] for m in metrics})
        for m in metrics:
            if m not in row:
                raise ValueError(f"rows[{k}] has no column {m!r} (columns: {sorted(row)})")
            cell = row[m]
            try:
                value = float(cell) if cell not in (None, "") else math.nan
            except (TypeError, ValueError):
                raise ValueError(f"rows[{k}][{m!r}] must be a number, got {cell!r}") from None
            if math.isfinite(value):
                per_metric[m].append(value)
    means = {
        g: {m: float(np.mean(v)) if v else math.nan for m, v in d.items()}
        for g, d in collected.items()
    }
    stds = {
        g: {m: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for m, v in d.items()}
        for g, d in collected.items()
    }
    return means, stds, counts


def bar_with_errors(
    means: Mapping[str, Mapping[str, float]],
    errors: Mapping[str, Mapping[str, float]] | None = None,
    *,
    ylabel: str,
    title: str,
    xlabel: str = "",
    ax: Axes | None = None,
    log: bool = False,
    annotate: bool = False,
    bounds: tuple[float, float] | None = None,
) -> Figure:
    """Grouped bar chart: one group per inner key (e.g. metric), one bar colour per outer key.

    Args:
        means: ``means[series][category]`` (e.g. ``means["pm_dice"]["dice"]``).
        errors: same layout, drawn as error bars (e.g. std over seeds); optional.
        log: logarithmic y axis.
        annotate: write the value over every bar.
        bounds: the range the values can take (``(0, 100)`` for %): error bars stop there
            (mean + std of a bounded score can pass its bound, the score itself cannot).
    """
    if not means:
        raise ValueError("means must hold at least one series")
    series = list(means)
    categories: list[str] = []
    for s in series:
        for c in means[s]:
            if c not in categories:
                categories.append(c)
    width_in = max(5.0, 1.1 * len(categories) * max(1, len(series)) ** 0.5 + 2)
    fig, ax = _figure_for(ax, figsize=(width_in, 3.8))
    width = 0.8 / len(series)
    centres = np.arange(len(categories), dtype=float)
    for k, s in enumerate(series):
        vals = np.array([means[s].get(c, np.nan) for c in categories], dtype=float)
        errs = None
        if errors is not None:
            errs = np.array([errors.get(s, {}).get(c, 0.0) for c in categories], dtype=float)
            if bounds is not None:  # (2, N): below and above each bar, cut at the bounds
                below = np.clip(np.minimum(errs, vals - bounds[0]), 0.0, None)
                above = np.clip(np.minimum(errs, bounds[1] - vals), 0.0, None)
                errs = np.stack([below, above])
        pos = centres - 0.4 + width * (k + 0.5)
        bars = ax.bar(pos, vals, width, yerr=errs, capsize=3, label=s)
        if annotate:
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
    ax.set_xticks(centres, categories)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(series), 4), loc="best")
    return fig


def _error_rgba() -> dict[int, tuple[float, float, float, float]]:
    """``ERROR_COLORS`` from the overlay module as RGBA floats in [0, 1]."""
    colours: dict[int, tuple[float, float, float, float]] = {}
    for key, value in ERROR_COLORS.items():
        if key is None:
            continue  # napari's DirectLabelColormap default entry
        if isinstance(value, str):
            colours[int(key)] = to_rgba(value)
            continue
        arr = np.asarray(value, dtype=float).ravel()
        if arr.max(initial=0) > 1:  # 0-255 convention
            arr = arr / 255.0
        if arr.size == 3:
            arr = np.append(arr, 1.0)
        colours[int(key)] = tuple(float(v) for v in arr[:4])  # type: ignore[assignment]
    return colours


def overlay_errors(
    image: Any,
    pred: Any,
    gt: Any,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    foreground: int | None = None,
    legend: bool = True,
    caption: bool = True,
) -> Figure:
    """Image with TP / FP / FN pixels coloured as in the PM-Dice paper's fig. 5.

    Colours come from :data:`napari_segloss.overlay.ERROR_COLORS` (FP red, FN blue, TP
    translucent green) via :func:`napari_segloss.overlay.error_labels`. ``legend`` draws a
    legend of the colours in the panel, ``caption`` writes "FP red, FN blue, TP green" under
    it (turn both off where a figure names the colours once for all its panels).
    """
    img = _display_rgb(_as_image(image, "image"))
    labels = np.asarray(error_labels(_to_numpy(pred, "pred"), _to_numpy(gt, "gt"), foreground))
    if labels.shape != img.shape[:2]:
        raise ValueError(
            f"pred/gt must have the image's spatial shape {img.shape[:2]}, got {labels.shape}"
        )
    colours = _error_rgba()
    rgba = np.zeros((*labels.shape, 4))
    for key, colour in colours.items():
        rgba[labels == key] = colour
    fig, ax = _figure_for(ax, figsize=(4.0, 4.0))
    ax.imshow(img, cmap="gray")
    ax.imshow(rgba)
    _no_ticks(ax)
    if caption:
        ax.set_xlabel("FP red, FN blue, TP green")
    if title:
        ax.set_title(title, fontsize=9)
    if legend:
        handles = [
            Patch(facecolor=colours[k][:3], label=name)
            for k, name in _ERROR_NAMES.items()
            if k in colours
        ]
        ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.7)
    return fig


def error_overlay_grid(
    images: Sequence[Any],
    gts: Sequence[Any],
    predictions: Mapping[str, Sequence[Any]],
    *,
    row_titles: Sequence[str] | None = None,
    foreground: int | None = None,
    suptitle: str | None = None,
    panel_size: float = 2.6,
) -> Figure:
    """Fig.-5-style grid: one row per image; columns image, ground truth, then one overlay per
    method (``predictions[method][row]`` is that method's label map for ``images[row]``)."""
    n = len(images)
    if n == 0 or len(gts) != n:
        raise ValueError(f"images and gts must be non-empty and equally long, got {n}, {len(gts)}")
    for name, preds in predictions.items():
        if len(preds) != n:
            raise ValueError(f"predictions[{name!r}] must hold {n} label maps, got {len(preds)}")
    if row_titles is not None and len(row_titles) != n:
        raise ValueError(f"row_titles must hold {n} titles, got {len(row_titles)}")
    ncols = 2 + len(predictions)
    fig, axes = _new_figure(
        n,
        ncols,
        figsize=(panel_size * ncols, panel_size * n + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    for r in range(n):
        img = _display_rgb(_as_image(images[r], f"images[{r}]"))
        axes[r, 0].imshow(img, cmap="gray")
        axes[r, 0].set_title(row_titles[r] if row_titles else "image", fontsize=9)
        axes[r, 1].imshow(_to_numpy(gts[r], f"gts[{r}]"), cmap="gray", interpolation="nearest")
        axes[r, 1].set_title("ground truth", fontsize=9)
        for ax in axes[r, :2]:
            _no_ticks(ax)
        for c, (name, preds) in enumerate(predictions.items(), start=2):
            overlay_errors(
                images[r],
                preds[r],
                gts[r],
                ax=axes[r, c],
                title=name,
                foreground=foreground,
                legend=(r == 0 and c == ncols - 1),
            )
    if suptitle:
        fig.suptitle(suptitle)
    return fig
