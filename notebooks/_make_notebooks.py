"""Generate the notebooks in this folder from the cell sources below (outputs stripped).

Run from anywhere: ``python notebooks/_make_notebooks.py``. The committed artifacts are the
``.ipynb`` files; this script only keeps them consistent and easy to review. It formats them
with ``ruff format`` when ruff is installed (the repository lints notebooks too).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# The same parameter cell opens every notebook: CI sets SEGLOSS_NB_MODE=quick.
MODE_CELL = """
import os

MODE = os.environ.get("SEGLOSS_NB_MODE", "full")  # "quick" (CI: tiny sizes) or "full"
if MODE not in ("quick", "full"):
    raise ValueError(f"SEGLOSS_NB_MODE must be 'quick' or 'full', got {MODE!r}")
QUICK = MODE == "quick"
"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(textwrap.dedent(text).strip())


def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


# --------------------------------------------------------------------------------------------
# 01 — PM-Dice modulating maps (paper fig. 2)
# --------------------------------------------------------------------------------------------
def nb01() -> nbformat.NotebookNode:
    return notebook(
        [
            md(
                r"""
                # 01 — PM Dice modulating maps on a Kvasir image (PM-Dice paper, fig. 2)

                Hosseini et al. (2025) show in fig. 2 a colonoscopy frame with a large polyp the network
                segments confidently and a small polyp it almost misses. The Dice loss (eq. 4) stays
                low because the small polyp is a small part of the total foreground; the PM Dice loss
                (eq. 5) multiplies every pixel by the modulating term

                $$m_i^c = |y_i^c - \hat p_i^c|^{\gamma_c}$$

                ($\hat p$ = prediction without gradient), which is ≈ 0 on easy pixels (the inside of
                the large polyp, the far background) and ≈ 1 on hard ones (the small polyp, the
                boundary of the large one), so the loss rises and the gradient moves to the hard
                pixels. γ = 0 is the Dice loss exactly.

                **Data.** The bundled Kvasir-SEG samples (`napari_segloss.samples`) each contain a
                single polyp, so we use the real polyp of sample 0 as the *large, easy* polyp and add a
                **synthetic small polyp** (a disk about 1/12 of its area, drawn dashed) to the ground
                truth, in the background region farthest from the real polyp and from the image border.
                The image itself is unchanged: only the masks matter to the loss.

                **Prediction.** Constructed, not learned: the large polyp is found with a soft boundary
                (a sigmoid of the signed distance to its boundary, 2 px wide, 0.99 inside), the small
                polyp is mostly missed (p = 0.15) with only a weakly detected core (15 % of it,
                p = 0.6). Binary model: one sigmoid channel; the losses use background and foreground
                as in eq. 4.
                """
            ),
            code(
                MODE_CELL
                + """
INDEX = 0  # bundled Kvasir pair with the large polyp (11 % of the frame)
STRIDE = 2 if QUICK else 1  # quick mode: half resolution
GAMMAS = [0, 0.5, 1, 2, 5]  # the paper's fig. 2 / fig. 3 values
print(f"mode={MODE}: Kvasir sample {INDEX} at 1/{STRIDE} resolution, gammas {GAMMAS}")
"""
            ),
            code(
                """
                import numpy as np
                import torch
                from scipy import ndimage

                from napari_segloss.landscape import as_logits, disk_target, soft_boundary_prediction
                from napari_segloss.losses import get_loss
                from napari_segloss.maps import contribution_map, modulating_map
                from napari_segloss.plotting import bar_with_errors, plot_curves, show_maps_grid
                from napari_segloss.samples import load_sample
                """
            ),
            md("## Ground truth with a large and a small polyp"),
            code(
                """
                image, mask = load_sample("kvasir", index=INDEX)
                image, mask = image[::STRIDE, ::STRIDE], mask[::STRIDE, ::STRIDE]
                large = mask.astype(bool)
                n_components = ndimage.label(large)[1]
                print(f"sample {INDEX}: {image.shape}, {n_components} polyp(s), {large.mean():.1%} of the frame")

                # Small synthetic polyp: farthest from the real polyp and from the image border.
                rows, cols = np.indices(large.shape)
                to_border = np.minimum.reduce(
                    [rows, cols, large.shape[0] - 1 - rows, large.shape[1] - 1 - cols]
                )
                room = np.minimum(ndimage.distance_transform_edt(~large), to_border)
                centre = np.unravel_index(np.argmax(room), room.shape)
                small = disk_target(large.shape, large.sum() / 12 / large.size, center=centre)
                gt = large | small
                print(f"large polyp {large.sum()} px, small polyp {small.sum()} px at {centre}")
                """
            ),
            code(
                """
                probs = soft_boundary_prediction(large, width=2.0, confidence=0.99)
                core = disk_target(large.shape, 0.15 * small.sum() / small.size, center=centre)
                probs[small] = 0.15  # the small polyp is mostly missed ...
                probs[core] = 0.6  # ... only its centre is weakly detected
                predicted = probs > 0.5
                print(f"recall: large polyp {predicted[large].mean():.1%}, small polyp {predicted[small].mean():.1%}")

                fig = show_maps_grid(
                    [image, gt.astype(float), probs],
                    ["Kvasir frame (dashed: synthetic small polyp)", "ground truth y", "prediction p"],
                    cmap="viridis",
                    vmin=0,
                    vmax=1,
                    colorbar_label=[None, "label", "foreground probability"],
                    suptitle="Input of the fig. 2 reproduction",
                )
                for ax in fig.axes[:3]:
                    ax.contour(large, levels=[0.5], colors="w", linewidths=0.8)
                    ax.contour(small, levels=[0.5], colors="w", linewidths=0.8, linestyles="--")
                """
            ),
            md(
                """
                ## Dice vs PM Dice

                Same prediction, same ground truth; only γ changes. `pm_dice` with γ = 0 must equal
                `dice` (checked below).
                """
            ),
            code(
                """
                logits = as_logits(probs)  # (1, 1, H, W): the logits a sigmoid network would output
                target = torch.from_numpy(gt.astype(np.int64))[None]  # (1, H, W)
                dice = float(get_loss("dice")(logits, target))
                pm = {g: float(get_loss("pm_dice", gamma=g)(logits, target)) for g in GAMMAS}
                assert abs(pm[0] - dice) < 1e-6, "PM Dice with gamma = 0 must be the Dice loss"

                # The Dice loss without the small polyp (removed from ground truth and prediction):
                only_large = torch.from_numpy(large.astype(np.int64))[None]
                dice_large = float(get_loss("dice")(as_logits(np.where(small, 0.01, probs)), only_large))
                print(f"Dice loss, large polyp only:          {dice_large:.4f}")
                print(f"Dice loss, small polyp almost missed:  {dice:.4f}")
                for g in GAMMAS:
                    print(f"PM Dice loss, gamma = {g:<4}:          {pm[g]:.4f}  ({pm[g] / dice:4.1f} x Dice)")
                """
            ),
            md(
                """
                ## Modulating maps (fig. 2)

                `napari_segloss.maps.modulating_map` returns one map per class (background,
                foreground). For a binary output |y_bg − p_bg| = |(1 − y) − (1 − p)| = |y − p|, so the
                two channels are identical and we show one.
                """
            ),
            code(
                """
                p_t = torch.from_numpy(probs)[None, None]
                mods = {g: modulating_map(p_t, target, g)[0, 1].numpy() for g in GAMMAS}
                titles = [
                    "γ = 0 (Dice): m = 1" + f"\\nloss {pm[0]:.3f}" if g == 0 else f"γ = {g}\\nPM Dice loss {pm[g]:.3f}"
                    for g in GAMMAS
                ]
                fig = show_maps_grid(
                    [image, *mods.values()],
                    ["image", *titles],
                    ncols=3,
                    cmap="inferno",
                    vmin=0,
                    vmax=1,
                    colorbar_label="modulating term m",
                    suptitle=r"PM Dice modulating term $m = |y - \\hat{p}|^{\\gamma}$",
                )
                for ax in fig.axes[:6]:
                    ax.contour(small, levels=[0.5], colors="c", linewidths=0.6, linestyles="--")
                """
            ),
            md(
                """
                ## Where the gradient goes

                The modulating term changes the *gradient*, not only the loss value.
                `contribution_map(kind="gradient")` gives Σ_c |∂L/∂z_c| per pixel. We measure which
                share of the total gradient falls on the small polyp, on a 3-pixel band around the
                large polyp's boundary, on the large polyp's interior and on the rest of the background.
                """
            ),
            code(
                """
                band = ndimage.binary_dilation(large, iterations=3) & ~ndimage.binary_erosion(large, iterations=3)
                regions = {
                    "small polyp": small,
                    "large: boundary ±3 px": band,
                    "large: interior": large & ~band,
                    "background": ~(small | band | large),
                }
                grads, share = {}, {}
                for g in GAMMAS:
                    loss = get_loss("pm_dice", gamma=g)
                    grads[g] = contribution_map(loss, logits, target, kind="gradient")[0].numpy()
                    total = grads[g].sum()
                    label = "Dice (γ = 0)" if g == 0 else f"PM Dice γ = {g}"
                    share[label] = {name: float(grads[g][r].sum() / total) for name, r in regions.items()}
                print(f"{'':<16}" + "".join(f"{name:>23}" for name in regions) + f"{'boundary/interior':>19}")
                for label, row in share.items():
                    # per-pixel ratio: mean gradient on the boundary band / on the easy interior
                    per_px = (row["large: boundary ±3 px"] / band.sum()) / (
                        row["large: interior"] / (large & ~band).sum()
                    )
                    print(f"{label:<16}" + "".join(f"{v:23.1%}" for v in row.values()) + f"{per_px:19.0f}")
                print("pixels per region: " + ", ".join(f"{n}: {r.mean():.1%}" for n, r in regions.items()))
                fig = bar_with_errors(
                    share,
                    ylabel="share of the total |∂L/∂z|",
                    title="Where the gradient goes, by region",
                )
                """
            ),
            code(
                """
                fig = show_maps_grid(
                    [grads[g] / grads[g].max() for g in GAMMAS],
                    [("Dice" if g == 0 else f"PM Dice γ = {g}") + ": |∂L/∂z| / max" for g in GAMMAS],
                    ncols=3,
                    cmap="magma",
                    vmin=0,
                    vmax=1,
                    colorbar_label="relative gradient",
                    suptitle="Per-pixel gradient of the loss w.r.t. the logits",
                )
                """
            ),
            md("## Loss against γ"),
            code(
                """
                gammas = np.linspace(0, 5, 6 if QUICK else 26)
                fig = plot_curves(
                    gammas,
                    {
                        "PM Dice": [float(get_loss("pm_dice", gamma=g)(logits, target)) for g in gammas],
                        "Dice (γ-independent)": [dice] * len(gammas),
                    },
                    xlabel="focusing parameter γ",
                    ylabel="loss",
                    title="PM Dice loss of the fig. 2 prediction against γ",
                )
                """
            ),
            md(
                """
                ## What changes at boundaries and small objects

                * **Loss value.** The Dice loss of this prediction is close to the loss of the large
                  polyp alone: missing most of the small polyp costs little, because its pixels are a
                  small share of the foreground sums. PM Dice rises with γ, as in fig. 2.
                * **Modulating term.** m is ≈ 0 inside the confidently found large polyp and in the far
                  background, ≈ 1 on the missed small polyp, and intermediate on the soft boundary of
                  the large polyp. Higher γ makes the map sparser: only the hardest pixels keep
                  weight (0.5^5 ≈ 0.03 for a pixel at p = 0.5).
                * **Gradient.** With Dice a sizeable share of the gradient still goes to pixels that are
                  already right (the interior of the large polyp and the far background). With growing
                  γ the small polyp takes most of the gradient, the easy interior and background drop
                  towards zero, and per pixel the large polyp's uncertain boundary gains weight over
                  its interior (the boundary/interior column). At very high γ (5) even the boundary
                  is dropped in favour of the worst pixels only — the focusing the paper tunes with γ
                  (its figs. 3-4). This is the mechanism behind its better NSD (boundary) and
                  small-object results.
                """
            ),
        ]
    )


# --------------------------------------------------------------------------------------------
# 02 — prediction space
# --------------------------------------------------------------------------------------------
def nb02() -> nbformat.NotebookNode:
    return notebook(
        [
            md(
                r"""
                # 02 — Loss landscapes in prediction space

                How does each loss react to a *controlled* mistake? We fix a ground truth (a disk),
                build predictions with an exact amount of error and plot the loss as a function of
                that error. Knobs (all in `napari_segloss.landscape`):

                * **FN fraction** — fraction of object pixels predicted as background (1 − recall).
                * **FP fraction** — false-positive pixels *relative to the object size* (1.0 = as many
                  false positives as the object has pixels), so the axis means the same thing for a
                  tiny and a large object.
                * Errors are placed where networks make them: false negatives from the object boundary
                  inwards, false positives from the boundary outwards (`order="boundary"`).
                * **Confidence** *c*: pixels predicted as foreground get *p = c*, the others *1 − c*.
                * **Object size** (class imbalance) and **boundary shift** (the boundary moved in or out
                  by a number of pixels).

                Losses (binary, one sigmoid output; region losses average foreground and background as
                in eq. 4 of the PM-Dice paper, Hosseini et al. 2025):
                Dice (eq. 4, squared denominator), PM Dice (eq. 5, focusing parameter γ),
                Tversky (α = 0.3 on FP, β = 0.7 on FN), Focal Tversky (γ = 0.75), Unified Focal
                (Yeung et al. 2021, λ = 0.5, δ = 0.6, γ = 0.5), WSDice (Wang et al. 2020, v1 = 0.15),
                cross entropy (eq. 1) and Focal CE (eq. 3, γ = 2).
                """
            ),
            code(
                MODE_CELL
                + """
SIZE = 64 if QUICK else 128  # image side (pixels)
N_GRID = 6 if QUICK else 21  # grid points per axis of the contour plots
N_CURVE = 6 if QUICK else 25  # points per curve
print(f"mode={MODE}: {SIZE}x{SIZE} images, {N_GRID}x{N_GRID} grids, {N_CURVE} points per curve")
"""
            ),
            code(
                """
                import numpy as np

                from napari_segloss.landscape import (
                    boundary_shift,
                    controlled_prediction,
                    disk_target,
                    evaluate_losses,
                    logit_gradient,
                    loss_grid,
                )
                from napari_segloss.losses import get_loss
                from napari_segloss.plotting import (
                    bar_with_errors,
                    contour_landscapes,
                    plot_curves,
                    show_maps_grid,
                )

                LOSSES = {
                    "Dice": get_loss("dice"),
                    "PM Dice γ=0.5": get_loss("pm_dice", gamma=0.5),
                    "PM Dice γ=1": get_loss("pm_dice", gamma=1.0),
                    "PM Dice γ=2": get_loss("pm_dice", gamma=2.0),
                    "Tversky": get_loss("tversky", alpha=0.3, beta=0.7),
                    "Focal Tversky": get_loss("focal_tversky"),
                    "Unified Focal": get_loss("unified_focal"),
                    "WSDice": get_loss("wsdice"),
                    "CE": get_loss("ce"),
                    "Focal": get_loss("focal", gamma=2.0),
                }
                """
            ),
            md(
                """
                ## What the knobs produce

                Thresholded at 0.5, each prediction below has exactly the requested errors.
                """
            ),
            code(
                """
                target = disk_target((SIZE, SIZE), 0.10)  # one object covering 10 % of the image
                examples = {
                    "ground truth (10 % of the image)": target.astype(float),
                    "FN fraction 0.3": controlled_prediction(target, fn_fraction=0.3),
                    "FP fraction 0.3": controlled_prediction(target, fp_fraction=0.3),
                    "FN 0.3 + FP 0.3, confidence 0.7": controlled_prediction(
                        target, fn_fraction=0.3, fp_fraction=0.3, confidence=0.7
                    ),
                }
                fig = show_maps_grid(
                    list(examples.values()),
                    list(examples),
                    vmin=0,
                    vmax=1,
                    cmap="gray",
                    colorbar_label="foreground probability",
                    suptitle="Controlled-error predictions",
                )
                """
            ),
            md(
                """
                ## 1. False negatives against false positives

                Each panel is one loss over the (FP fraction, FN fraction) plane; the lower-left
                corner is the perfect (confidence 0.9) prediction.
                """
            ),
            code(
                """
                fn_fractions = np.linspace(0, 0.9, N_GRID)
                fp_fractions = np.linspace(0, 0.9, N_GRID)
                grid = loss_grid(LOSSES, target, fn_fractions, fp_fractions, confidence=0.9)
                fig = contour_landscapes(
                    fp_fractions,
                    fn_fractions,
                    grid,
                    xlabel="FP fraction (FP pixels / object pixels)",
                    ylabel="FN fraction (1 − recall)",
                    ncols=5,
                    suptitle="Loss against controlled errors (object = 10 % of the image, confidence 0.9)",
                )
                """
            ),
            md(
                """
                Asymmetry: the same amount of error as false negatives or as false positives. A ratio
                above 1 means the loss punishes missed object pixels more than false alarms
                (Tversky-style losses do this on purpose with β > α).
                """
            ),
            code(
                """
                k = N_GRID // 2
                print(f"error fraction a = {fn_fractions[k]:.2f}")
                print(f"{'loss':<15}{'L(0,0)':>9}{'L(FN=a)':>10}{'L(FP=a)':>10}{'FN/FP rise':>12}")
                for name, z in grid.items():
                    base = z[0, 0]
                    rise_fn, rise_fp = z[k, 0] - base, z[0, k] - base
                    ratio = rise_fn / rise_fp if rise_fp > 0 else float("nan")
                    print(f"{name:<15}{base:9.4f}{z[k, 0]:10.4f}{z[0, k]:10.4f}{ratio:12.2f}")
                """
            ),
            md(
                """
                ## 2. Object size (class imbalance)

                Objects from 0.5 % to 50 % of the image. Left: the same *relative* error (20 % of the
                object missed). Right: the same *absolute* error (the boundary eroded by one pixel).
                Region losses normalise by the object size, pixel-averaged losses (CE, Focal) by the
                image size — which is why the latter shrink for small objects.
                """
            ),
            code(
                """
                fractions = np.geomspace(0.005, 0.5, N_CURVE)
                relative = {name: [] for name in LOSSES}
                absolute = {name: [] for name in LOSSES}
                for f in fractions:
                    t = disk_target((SIZE, SIZE), f)
                    miss = controlled_prediction(t, fn_fraction=0.2, confidence=0.9)
                    eroded = np.where(boundary_shift(t, -1), 0.9, 0.1)
                    for name, v in evaluate_losses(LOSSES, miss, t).items():
                        relative[name].append(v)
                    for name, v in evaluate_losses(LOSSES, eroded, t).items():
                        absolute[name].append(v)
                fig = plot_curves(
                    100 * fractions,
                    relative,
                    xlabel="object size (% of the image)",
                    ylabel="loss",
                    title="20 % of the object missed (confidence 0.9)",
                    logx=True,
                    normalize=True,
                )
                fig = plot_curves(
                    100 * fractions,
                    absolute,
                    xlabel="object size (% of the image)",
                    ylabel="loss",
                    title="boundary eroded by 1 pixel (confidence 0.9)",
                    logx=True,
                    normalize=True,
                )
                """
            ),
            md(
                """
                ## 3. Boundary shift

                The boundary moved inwards (negative: false negatives) or outwards (positive: false
                positives) by up to 4 pixels, for a 10 % and a 1 % object.
                """
            ),
            code(
                """
                shifts = np.arange(-4, 4.01, 1.0 if QUICK else 0.5)
                for frac in (0.10, 0.01):
                    t = disk_target((SIZE, SIZE), frac)
                    curves = {name: [] for name in LOSSES}
                    for s in shifts:
                        probs = np.where(boundary_shift(t, s), 0.9, 0.1)
                        for name, v in evaluate_losses(LOSSES, probs, t).items():
                            curves[name].append(v)
                    fig = plot_curves(
                        shifts,
                        curves,
                        xlabel="boundary shift (pixels; < 0 shrinks, > 0 grows)",
                        ylabel="loss",
                        title=f"Boundary shift, object = {100 * frac:g} % of the image",
                        normalize=True,
                    )
                """
            ),
            md(
                """
                ## 4. Confidence

                Left: a *correct* segmentation whose confidence goes from 0.55 to 0.99 — how much does
                each loss still push an already correct prediction? Right: 20 % of the object missed,
                with the confidence of every pixel (so also of the wrong ones) varied.
                """
            ),
            code(
                """
                confidences = np.linspace(0.55, 0.99, N_CURVE)
                correct = {name: [] for name in LOSSES}
                wrong = {name: [] for name in LOSSES}
                for c in confidences:
                    ok = controlled_prediction(target, confidence=c)
                    bad = controlled_prediction(target, fn_fraction=0.2, confidence=c)
                    for name, v in evaluate_losses(LOSSES, ok, target).items():
                        correct[name].append(v)
                    for name, v in evaluate_losses(LOSSES, bad, target).items():
                        wrong[name].append(v)
                fig = plot_curves(
                    confidences,
                    correct,
                    xlabel="confidence c",
                    ylabel="loss",
                    title="Correct segmentation, varying confidence",
                    logy=True,
                )
                fig = plot_curves(
                    confidences,
                    wrong,
                    xlabel="confidence c",
                    ylabel="loss",
                    title="20 % of the object missed, varying confidence",
                    logy=True,
                )
                """
            ),
            md(
                """
                ## 5. Gradient on a hard and an easy pixel

                What the loss tells the network: |∂L/∂z| (z = logit) at a *hard* pixel — an object
                pixel the network missed (p = 0.1, y = 1) — and at *easy* pixels — deep inside the
                found object (p = 0.9, y = 1) and far in the background (p = 0.1, y = 0). The
                prediction misses 10 % of the object at its boundary. The PM-Dice modulating term
                |y − p̂|^γ shrinks the weight of easy pixels by 0.1^γ, so the hard/easy ratio grows with γ.
                """
            ),
            code(
                """
                probs = controlled_prediction(target, fn_fraction=0.1, confidence=0.9)
                missed = (target == 1) & (probs < 0.5)
                hard = tuple(np.argwhere(missed)[0])
                inside = (SIZE // 2, SIZE // 2)
                background = (1, 1)
                magnitude, grads = {}, {}
                for name, loss in LOSSES.items():
                    g = logit_gradient(loss, probs, target)
                    grads[name] = np.abs(g)
                    magnitude[name] = {
                        "hard (missed object pixel)": abs(g[hard]),
                        "easy (inside object)": abs(g[inside]),
                        "easy (background)": abs(g[background]),
                    }
                fig = bar_with_errors(
                    magnitude,
                    ylabel="|∂loss / ∂logit|",
                    title="Gradient at a hard and at easy pixels (log scale)",
                    log=True,
                )
                print(f"{'loss':<15}{'hard / easy inside':>20}{'hard / easy background':>24}")
                for name, m in magnitude.items():
                    r_in = m["hard (missed object pixel)"] / max(m["easy (inside object)"], 1e-30)
                    r_bg = m["hard (missed object pixel)"] / max(m["easy (background)"], 1e-30)
                    print(f"{name:<15}{r_in:20.1f}{r_bg:24.1f}")
                """
            ),
            code(
                """
                shown = ["Dice", "PM Dice γ=2", "CE", "Focal"]
                fig = show_maps_grid(
                    [grads[name] / grads[name].max() for name in shown],
                    [f"{name}: |∂L/∂z| (max-normalised)" for name in shown],
                    cmap="magma",
                    vmin=0,
                    vmax=1,
                    colorbar_label="relative gradient",
                    suptitle="Where each loss pushes (10 % of the object missed at the boundary)",
                )
                """
            ),
            md(
                """
                ## Take-aways (object = 10 % of the image, confidence 0.9; numbers printed above)

                * **FN vs FP.** Cross entropy and Focal CE are exactly symmetric (same number of wrong
                  pixels at the same confidence). Dice with its squared denominator already charges a
                  missed object pixel more than a false alarm (≈ 1.5×); PM Dice with γ = 1 is
                  symmetric; Tversky (β/α = 0.7/0.3) and Focal Tversky charge FN ≈ 2.5-3× more by
                  design; WSDice (v1 = 0.15) is almost blind to false positives here (≈ 30×).
                * **Object size.** With the same *relative* error, CE and above all Focal CE shrink as
                  the object gets small — the image average is dominated by easy background — while
                  the region losses stay large: this is the class-imbalance argument for Dice-type
                  losses (PM-Dice paper, sec. 2).
                * **Hard vs easy pixels.** The PM-Dice modulating term turns Dice into a loss that
                  focuses on hard pixels: the hard/easy gradient ratio grows from ≈ 5 (Dice) to ≈ 24
                  (γ = 1) and ≈ 140 (γ = 2), without the easy background dominating as it does for
                  CE. Tversky and Focal Tversky give a missed and a correct object pixel the same
                  gradient (their sums are linear in p); Focal CE focuses hardest of all, but only
                  pixel-wise, so it inherits CE's dependence on object size.
                """
            ),
        ]
    )


# --------------------------------------------------------------------------------------------
# 03 — parameter space (Li et al. 2018)
# --------------------------------------------------------------------------------------------
def nb03() -> nbformat.NotebookNode:
    return notebook(
        [
            md(
                r"""
                # 03 — Loss landscapes in parameter space

                The loss of a *trained* network on a plane through its weights θ*
                (Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
                NeurIPS 2018):

                $$f(\alpha, \beta) = L(\theta^* + \alpha\,\delta + \beta\,\eta)$$

                δ and η are Gaussian random directions, **filter-normalised**: every filter (a slice
                of a conv/linear weight along its output dimension) is rescaled to the norm of the
                matching filter of θ*, which removes the scale invariance of ReLU networks and makes
                landscapes of different networks comparable. Bias and batch-norm directions are zero
                (Li et al.'s default), batch norm uses its running statistics (eval mode).
                Implementation: `napari_segloss.landscape.random_directions` and `loss_surface`.

                Protocol: the **same** U-Net (same initialisation, same data, same optimiser and
                number of steps) is trained once per loss on the bundled Kvasir pairs. Around each trained network we evaluate *every* loss from the same
                forward passes, so we can look at each network's own training loss and at how the
                other losses see the same weights. This is a training-set landscape of a deliberately
                small experiment — a tool to explore, not a benchmark.
                """
            ),
            code(
                MODE_CELL
                + """
SEED = 0
SIZE = 64 if QUICK else 96  # image side (pixels)
STEPS = 20 if QUICK else 100  # full-batch Adam steps per loss
GRID = 7 if QUICK else 11  # grid points per direction
SPAN = 0.5  # alpha, beta in [-SPAN, SPAN] (Li et al. plot [-1, 1]; the basins here are narrower)
LOSS_NAMES = ["dice", "pm_dice"] if QUICK else ["dice", "pm_dice", "ce"]
if QUICK:  # a tiny U-Net: MobileNetV2 encoder cut after 3 stages
    MODEL = {"encoder": "mobilenet_v2", "kwargs": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}}
else:  # the full U-Net with the encoder the quickstart uses (fastest smp encoder on CPU)
    MODEL = {"encoder": "mobilenet_v2", "kwargs": {}}
print(f"mode={MODE}: {SIZE}px, {STEPS} steps, {GRID}x{GRID} grid, losses {LOSS_NAMES}, {MODEL}")
"""
            ),
            code(
                """
                import warnings

                import numpy as np
                import torch

                # smp imports tqdm.auto, which warns when ipywidgets is not installed: harmless here.
                warnings.filterwarnings("ignore", message="IProgress not found")

                from napari_segloss.data.datasets import ArrayDataset
                from napari_segloss.engine.config import ModelConfig
                from napari_segloss.engine.model import build_model
                from napari_segloss.landscape import loss_surface, random_directions
                from napari_segloss.losses import get_loss
                from napari_segloss.plotting import (
                    contour_landscapes,
                    plot_curves,
                    show_maps_grid,
                    surfaces_3d,
                )
                from napari_segloss.samples import list_samples, load_sample, sample_files
                """
            ),
            md(
                """
                ## Data

                The bundled Kvasir pairs, resized and normalised by the package's `ArrayDataset`
                (evaluation mode: no random augmentation), plus (full mode) their mirror images.
                """
            ),
            code(
                """
                assert "kvasir" in list_samples()
                pairs = [load_sample("kvasir", index=i) for i in range(len(sample_files("kvasir")))]
                dataset = ArrayDataset(
                    [img for img, _ in pairs], [np.array(m) for _, m in pairs], size=(SIZE, SIZE), train=False
                )
                x = torch.stack([dataset[i][0] for i in range(len(dataset))])
                y = torch.stack([dataset[i][1] for i in range(len(dataset))])
                if not QUICK:
                    x, y = torch.cat([x, x.flip(-1)]), torch.cat([y, y.flip(-1)])
                device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
                x, y = x.to(device), y.to(device)
                print(f"device {device}; ", end="")
                print(f"images {tuple(x.shape)}, masks {tuple(y.shape)}, foreground {y.float().mean():.1%}")
                """
            ),
            md("## Train the same network with each loss"),
            code(
                """
                def train(loss_name: str) -> tuple[torch.nn.Module, list[float]]:
                    torch.manual_seed(SEED)  # identical initial weights for every loss
                    model = build_model(ModelConfig(arch="Unet", encoder_weights=None, classes=1, **MODEL))
                    model = model.to(device)
                    loss_fn = get_loss(loss_name)
                    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                    model.train()
                    history = []
                    for _ in range(STEPS):
                        optimizer.zero_grad()
                        loss = loss_fn(model(x), y)
                        loss.backward()
                        optimizer.step()
                        history.append(loss.item())
                    # Recompute the batch-norm running statistics on the training images (cumulative
                    # average, as in SWA): after few steps the running means lag behind the weights,
                    # and the landscape is evaluated in eval mode (Li et al.).
                    torch.optim.swa_utils.update_bn([x], model)
                    return model, history


                models, histories = {}, {}
                for name in LOSS_NAMES:
                    models[name], histories[name] = train(name)
                    print(f"{name:>8}: loss {histories[name][0]:.3f} -> {histories[name][-1]:.3f}")
                fig = plot_curves(
                    np.arange(1, STEPS + 1),
                    histories,
                    xlabel="training step",
                    ylabel="training loss",
                    title="Training curves (same network, data and initialisation)",
                )
                """
            ),
            code(
                """
                with torch.no_grad():
                    preds = {name: torch.sigmoid(m.eval()(x[:1]))[0, 0].cpu().numpy() for name, m in models.items()}
                fig = show_maps_grid(
                    [y[0].float().cpu().numpy(), *preds.values()],
                    ["ground truth", *[f"trained with {n}" for n in preds]],
                    cmap="viridis",
                    vmin=0,
                    vmax=1,
                    colorbar_label="foreground probability",
                    suptitle="Predictions of the trained networks (first training image)",
                )
                """
            ),
            md(
                """
                ## Loss surfaces

                For each trained network: two filter-normalised directions (seeded), a GRID × GRID
                plane of α, β ∈ [−SPAN, SPAN], every loss evaluated at every point.
                """
            ),
            code(
                """
                coords = np.linspace(-SPAN, SPAN, GRID)
                eval_losses = {name: get_loss(name) for name in LOSS_NAMES}
                surfaces = {}
                for name, model in models.items():
                    directions = random_directions(model, n=2, seed=SEED)
                    surfaces[name] = loss_surface(model, eval_losses, x, y, directions, coords)
                own = {f"{n} (trained with {n})": surfaces[n].values[n] for n in LOSS_NAMES}
                fig = contour_landscapes(
                    coords,
                    coords,
                    own,
                    xlabel="α (direction δ)",
                    ylabel="β (direction η)",
                    mark=(0.0, 0.0),
                    suptitle="Training-loss surface around each trained network (★ = trained weights)",
                )
                """
            ),
            code(
                """
                fig = surfaces_3d(
                    coords,
                    coords,
                    own,
                    xlabel="α",
                    ylabel="β",
                    suptitle="The same surfaces in 3D",
                )
                """
            ),
            md(
                """
                ## Every loss around every network

                Rows: the network (trained with …); columns: the loss evaluated. Losses have
                different scales, so compare shapes (each panel has its own colour bar) and the
                rise printed below: mean loss on the border of the plane minus the loss at the
                trained weights.
                """
            ),
            code(
                """
                cross = {
                    f"{loss} around net({trained})": surfaces[trained].values[loss]
                    for trained in LOSS_NAMES
                    for loss in LOSS_NAMES
                }
                fig = contour_landscapes(
                    coords,
                    coords,
                    cross,
                    xlabel="α",
                    ylabel="β",
                    ncols=len(LOSS_NAMES),
                    mark=(0.0, 0.0),
                    lines=False,
                    suptitle="Each loss (column) around each trained network (row)",
                )
                border = np.ones((GRID, GRID), dtype=bool)
                border[1:-1, 1:-1] = False
                c = GRID // 2
                print(f"{'network':<14}{'loss':<10}{'L(θ*)':>10}{'border mean':>13}{'rise':>10}")
                for trained in LOSS_NAMES:
                    for loss in LOSS_NAMES:
                        z = surfaces[trained].values[loss]
                        print(
                            f"net({trained})".ljust(14)
                            + f"{loss:<10}{z[c, c]:10.4f}{z[border].mean():13.4f}{z[border].mean() - z[c, c]:10.4f}"
                        )
                """
            ),
            md(
                """
                ## Reading the plots

                * The ★ sits in a basin for each network's own loss (a network trained with a loss
                  should be near a minimum of it; with few steps it may still sit on a slope).
                * Filter normalisation makes the α, β units comparable between networks: a flatter
                  basin (smaller rise) means the solution is less sensitive to weight
                  perturbations, which Li et al. relate to generalisation.
                * The same weights can look different through different losses: PM Dice keeps weight
                  on the hard pixels, so it can stay higher and rise differently than Dice around the
                  same network. Run in full mode (`SEGLOSS_NB_MODE=full`, the default) for a larger
                  network, longer training and a finer grid.
                """
            ),
        ]
    )


# --------------------------------------------------------------------------------------------
# 04 — compare losses (paper tables 1-3 and fig. 5)
# --------------------------------------------------------------------------------------------
def nb04() -> nbformat.NotebookNode:
    return notebook(
        [
            md(
                r"""
                # 04 — Compare losses: metric table and FP/FN overlays

                `segloss compare` trains a list of losses × seeds with the rest of a config fixed and
                writes `results.csv` (one row per loss: mean and std over seeds of mDice, mIoU, mNSD,
                mPrec., mRec. in %, as in tables 1-3 of the PM-Dice paper), `runs.csv` (one row per
                run) and one run folder per (loss, seed) with its checkpoints. This notebook plots that
                table as bars with error bars and draws false positives (red) and false negatives
                (blue) of each loss on a few images, like the paper's fig. 5.

                **Which results.** Set `SEGLOSS_COMPARE_DIR` to the `--output` folder of a compare you
                ran, e.g. the paper protocol on Kvasir-SEG:

                ```
                segloss compare --config training/configs/kvasir_pm_dice.yaml \
                    --set data.root=/path/to/kvasir-seg \
                    --losses ce dice ce+dice pm_dice ce+pm_dice --seeds 0 1 2 --output runs/kvasir_compare
                ```

                Without it, the notebook runs a small compare itself through the Python API
                (`napari_segloss.engine.compare.run_compare`) on the three Kvasir pairs bundled with
                the package: in quick mode a tiny network for a few epochs (a smoke test — the numbers
                mean nothing), in full mode a small U-Net for 40 epochs and 3 seeds. With 3 pairs the
                held-out split is a single image, so those numbers are only a demonstration.
                """
            ),
            code(
                MODE_CELL
                + """
from pathlib import Path

COMPARE_DIR = os.environ.get("SEGLOSS_COMPARE_DIR")  # an existing `segloss compare` output
OUTPUT = Path(os.environ.get("SEGLOSS_NB_OUTPUT", "runs")) / f"nb04_compare_{MODE}"
LOSSES = ["dice", "pm_dice"] if QUICK else ["ce", "dice", "ce+dice", "pm_dice", "ce+pm_dice"]
SEEDS = [0, 1] if QUICK else [0, 1, 2]
N_IMAGES = 3  # images in the overlay figure
print(f"mode={MODE}: results from {COMPARE_DIR or OUTPUT}, losses {LOSSES}, seeds {SEEDS}")
"""
            ),
            code(
                """
                import csv
                import warnings

                import numpy as np

                warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, no ipywidgets

                from napari_segloss.engine.checkpoint import load_checkpoint
                from napari_segloss.engine.compare import run_compare, write_tables
                from napari_segloss.engine.inference import predict
                from napari_segloss.plotting import bar_with_errors, error_overlay_grid
                from napari_segloss.samples import load_sample, sample_files, sample_pairs_dir
                """
            ),
            md("## Run (or load) the comparison"),
            code(
                """
                if COMPARE_DIR:
                    results_dir = Path(COMPARE_DIR)
                    print(f"using the existing compare results in {results_dir}")
                else:
                    results_dir = OUTPUT
                    model = {"arch": "Unet", "encoder": "mobilenet_v2", "encoder_weights": None, "in_channels": 3, "classes": 1}
                    if QUICK:  # tiny U-Net, 64 px, 3 epochs
                        model["kwargs"] = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
                    base = {
                        "data": {
                            "kind": "folder",
                            "root": str(sample_pairs_dir("kvasir")),
                            "val_fraction": 0.34,  # 3 bundled pairs: 2 train, 1 held out
                            "size": [64, 64] if QUICK else [128, 128],
                            "augment": not QUICK,
                        },
                        "model": model,
                        "loss": {"name": "dice", "params": {}},  # replaced by each compared loss
                        "optim": {"name": "adam", "lr": 1e-3},
                        "train": {
                            "epochs": 3 if QUICK else 40,
                            "batch_size": 2,
                            "amp": False,
                            "device": "auto",
                            "num_workers": 0,
                            "val_every": 1 if QUICK else 5,
                        },
                        "output": str(OUTPUT / "unused"),
                    }
                    runs = run_compare(base, LOSSES, SEEDS, OUTPUT)  # resumable: finished runs are skipped
                    write_tables(OUTPUT, runs, title="bundled Kvasir samples")
                print((results_dir / "results.md").read_text())
                """
            ),
            md(
                """
                ## The table as bars

                Mean over seeds, error bars = sample standard deviation over seeds (absent with one
                seed), values in %.
                """
            ),
            code(
                """
                with open(results_dir / "results.csv", newline="") as fh:
                    rows = list(csv.DictReader(fh))
                metrics = ["mDice", "mIoU", "mNSD", "mPrec.", "mRec."]
                metrics = [m for m in metrics if f"{m}_mean" in rows[0]]
                # any further columns (e.g. per-class Dice of ACDC) follow the five paper metrics
                metrics += [k[: -len("_mean")] for k in rows[0] if k.endswith("_mean") and k[: -len("_mean")] not in metrics]


                def cell(value: str, default: float) -> float:
                    return float(value) if value not in ("", None) else default


                means = {r["name"]: {m: cell(r[f"{m}_mean"], np.nan) for m in metrics} for r in rows}
                stds = {r["name"]: {m: cell(r[f"{m}_std"], 0.0) for m in metrics} for r in rows}
                runs_per_loss = {r["name"]: f"{r['n_ok']} ok, {r['n_failed']} failed" for r in rows}
                print(runs_per_loss)
                fig = bar_with_errors(
                    means,
                    stds,
                    ylabel="score (%)",
                    xlabel="metric (foreground classes)",
                    title=f"segloss compare: mean ± std over seeds ({results_dir.name})",
                )
                """
            ),
            md(
                """
                ## False positives and false negatives (fig. 5)

                One checkpoint per loss (the first successful seed, its best validation checkpoint),
                applied with `napari_segloss.engine.inference.predict` — which reads the
                preprocessing from the checkpoint — to the bundled samples. Red: false positives, blue:
                false negatives, translucent green: true positives.
                """
            ),
            code(
                """
                with open(results_dir / "runs.csv", newline="") as fh:
                    per_run = [r for r in csv.DictReader(fh) if r["status"] == "ok"]
                checkpoints = {}
                for r in per_run:
                    run_dir = Path(r["run_dir"])
                    if not run_dir.is_absolute() and not run_dir.exists():
                        run_dir = results_dir / run_dir  # relative paths: relative to the compare dir
                    ckpt = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "checkpoint.pt"
                    if r["loss"] not in checkpoints and ckpt.exists():
                        checkpoints[r["loss"]] = ckpt
                print({loss: str(path) for loss, path in checkpoints.items()})
                if not checkpoints:
                    raise RuntimeError(f"no successful run with a checkpoint in {results_dir / 'runs.csv'}")

                meta = load_checkpoint(next(iter(checkpoints.values())))["meta"]
                if int(meta.get("in_channels", 3)) == 3:  # RGB model: the Kvasir samples
                    n = min(N_IMAGES, len(sample_files("kvasir")))
                    samples = [load_sample("kvasir", index=i) for i in range(n)]
                    titles = [f"Kvasir sample {i}" for i in range(n)]
                else:  # grey model (e.g. ACDC): mid-ventricular slices of the ACDC sample volume
                    volume, labels = load_sample("acdc", index=0)
                    zs = np.linspace(volume.shape[0] * 0.3, volume.shape[0] * 0.7, N_IMAGES).astype(int)
                    samples = [(volume[z], labels[z]) for z in zs]
                    titles = [f"ACDC slice {z}" for z in zs]

                predictions = {loss: [] for loss in checkpoints}
                for loss, ckpt in checkpoints.items():
                    for image, _ in samples:
                        labels_pred, _ = predict(ckpt, image, device="cpu")
                        predictions[loss].append(labels_pred)
                fig = error_overlay_grid(
                    [image for image, _ in samples],
                    [gt for _, gt in samples],
                    predictions,
                    row_titles=titles,
                    suptitle="FP (red) and FN (blue) of each loss — PM-Dice paper fig. 5 style",
                )
                """
            ),
            md(
                """
                The PM-Dice paper reports that PM Dice gives the highest NSD and, unlike plain Dice,
                high precision without a CE term. On a real compare (Kvasir-SEG or ACDC, 3 seeds),
                look for fewer red pixels along the polyp boundary and fewer missed (blue) small
                structures in the PM Dice column; the bundled-sample run above only shows the
                mechanics.
                """
            ),
        ]
    )


# --------------------------------------------------------------------------------------------
NOTEBOOKS = {
    "01_pm_dice_modulating_maps.ipynb": nb01,
    "02_loss_landscapes_prediction_space.ipynb": nb02,
    "03_loss_landscapes_parameter_space.ipynb": nb03,
    "04_compare_losses.ipynb": nb04,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in NOTEBOOKS.items():
        nb = build()
        nbformat.validate(nb)
        path = args.out / name
        nbformat.write(nb, path)
        written.append(str(path))
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff:
        # the repository's ruff settings, also when writing outside the repository (--out)
        pyproject = HERE.parent / "pyproject.toml"
        config = ["--config", str(pyproject)] if pyproject.is_file() else []
        subprocess.run([ruff, "format", "--quiet", *config, *written], check=True)
        subprocess.run([ruff, "check", "--fix", "--quiet", *config, *written], check=False)
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
