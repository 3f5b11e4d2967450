"""Generate the notebooks in this folder from the cell sources below (outputs stripped).

Run from anywhere: ``python notebooks/_make_notebooks.py``. The committed artifacts are the
``.ipynb`` files; this script only keeps them consistent and easy to review. It formats them
with ``ruff format`` when ruff is installed (the repository lints notebooks too).
"""

from __future__ import annotations

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
        ]
    )


# --------------------------------------------------------------------------------------------
NOTEBOOKS = {
    "02_loss_landscapes_prediction_space.ipynb": nb02,
}


def main() -> int:
    written = []
    for name, build in NOTEBOOKS.items():
        nb = build()
        nbformat.validate(nb)
        path = HERE / name
        nbformat.write(nb, path)
        written.append(str(path))
    ruff = shutil.which("ruff")
    if ruff:
        subprocess.run([ruff, "format", "--quiet", *written], check=True)
        subprocess.run([ruff, "check", "--fix", "--quiet", *written], check=False)
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
