"""The Loss Explorer's core (napari_segloss.explorer): usable without Qt or napari."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_segloss import explorer
from napari_segloss.explorer import ExplorerLoss, compute_explorer
from napari_segloss.losses import get_loss, list_losses, loss_parameters
from napari_segloss.maps import contribution_map, modulating_map

#: imports of these fail in the probe interpreter, as on a headless cluster without a GUI stack
_BLOCKED = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt")

_PROBE = """
import importlib.abc, sys
blocked = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"blocked for this test: {{name}}")
sys.meta_path.insert(0, Block())
import numpy as np
from napari_segloss import explorer
gt = np.zeros((8, 8), dtype=np.int64); gt[2:6, 2:6] = 1
probs = np.where(gt == 1, 0.8, 0.1).astype(np.float32)[None]
res = explorer.compute_explorer(probs, gt, [explorer.ExplorerLoss("dice")], [1.0, 2.0])
print(sorted(res.contributions), [g for g, _ in res.modulating], len(explorer.loss_catalog()))
print(sorted({{m.split(".")[0] for m in sys.modules}} & set(blocked)))
"""


def test_importable_and_usable_with_qt_and_napari_blocked():
    code = _PROBE.format(blocked=_BLOCKED)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = out.stdout.strip().splitlines()[-2:]
    assert first == f"['dice'] [1.0, 2.0] {len(list_losses())}"
    assert second == "[]"


def test_probe_blocks_gui_imports():
    """Guard against a probe that cannot fail: a blocked import must raise in it."""
    code = _PROBE.format(blocked=_BLOCKED).replace(
        "from napari_segloss import explorer", "import qtpy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "blocked for this test: qtpy" in out.stderr


def test_editable_parameters_come_from_the_registry_without_plumbing():
    for name in ("pm_dice", "focal", "ce+pm_dice"):
        params = explorer.editable_parameters(name)
        registry = loss_parameters(name)
        assert set(params) == set(registry) - explorer.PLUMBING_PARAMS
        for key, p in params.items():
            assert p == registry[key]  # the registry's defaults and annotations, unchanged
    assert explorer.editable_parameters("pm_dice")["gamma"].default == 1.0
    catalog = explorer.loss_catalog()
    assert list(catalog) == list_losses()
    assert all(isinstance(p, inspect.Parameter) for ps in catalog.values() for p in ps.values())


def test_iter_explorer_yields_one_step_per_loss_and_gamma_then_the_result():
    gt = np.zeros((6, 6), dtype=np.int64)
    gt[1:4, 1:4] = 1
    probs = np.where(gt == 1, 0.7, 0.2).astype(np.float32)[None]
    specs = [explorer.ExplorerLoss("dice"), explorer.ExplorerLoss("focal", {"gamma": 3.0})]
    steps = explorer.iter_explorer(probs, gt, specs, [2.0, 0.5, 2.0])
    seen = []
    while True:
        try:
            seen.append(next(steps))
        except StopIteration as stop:
            res = stop.value
            break
    assert [(s.done, s.total) for s in seen] == [(0, 4), (1, 4), (2, 4), (3, 4)]
    assert [s.what for s in seen] == [
        "dice",
        "focal(gamma=3)",
        explorer.modulating_title(0.5),
        explorer.modulating_title(2.0),
    ]
    assert res.labels == {"dice": "dice", "focal": "focal(gamma=3)"}
    values = dict(res.values)
    p = torch.from_numpy(probs)[None]
    logits = explorer.probabilities_to_logits(p)  # what the explorer feeds every loss
    target = torch.from_numpy(gt)[None]
    assert values["focal(gamma=3)"] == pytest.approx(
        float(get_loss("focal", gamma=3.0)(logits, target)), rel=1e-6
    )
    expected = modulating_map(p, target, 0.5)
    np.testing.assert_allclose(res.modulating[0][1], expected[0, 0].numpy(), atol=1e-6)


def test_compute_explorer_keeps_one_map_per_spec_when_a_loss_repeats():
    """Two settings of one loss (a notebook comparing gammas) give two maps, not the last one."""
    gt = np.zeros((12, 12), dtype=np.int64)
    gt[3:9, 3:9] = 1
    probs = np.where(gt == 1, 0.7, 0.2).astype(np.float32)[None]
    specs = [
        explorer.ExplorerLoss("pm_dice", {"gamma": 0.5}),
        explorer.ExplorerLoss("pm_dice", {"gamma": 3.0}),
        explorer.ExplorerLoss("dice"),
    ]
    res = explorer.compute_explorer(probs, gt, specs, [], relative=False)
    assert res.labels == {
        "pm_dice(gamma=0.5)": "pm_dice(gamma=0.5)",
        "pm_dice(gamma=3)": "pm_dice(gamma=3)",
        "dice": "dice",
    }
    logits = explorer.probabilities_to_logits(torch.from_numpy(probs)[None])
    target = torch.from_numpy(gt)[None]
    for spec in specs:
        expected = contribution_map(spec.build(), logits, target, kind="gradient")[0].numpy()
        np.testing.assert_allclose(res.contributions[spec.label], expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((3, 5), np.float32), "expected probabilities of shape (4, 5)"),
        (np.full((4, 5), 1.5, np.float32), "expected probabilities in [0, 1]"),
        (np.zeros((4, 5), bool), "expected a numeric probability image"),
        # independent sigmoids (sums 1.4): the losses saw them renormalised (softmax of log p)
        # while the prediction and modulating maps showed them as given
        (
            np.full((2, 4, 5), 0.7, np.float32),
            "must sum to 1 at every pixel (softmax), got sums in [1.4, 1.4]",
        ),
        (np.full((3, 4, 5), 0.2, np.float32), "got sums in [0.6, 0.6]"),
    ],
)
def test_probabilities_from_image_says_what_was_wrong(data, message):
    with pytest.raises(ValueError) as info:
        explorer.probabilities_from_image(data, (4, 5))
    assert message in str(info.value)


def test_probabilities_from_image_accepts_binary_and_class_stacks():
    p = np.full((4, 5), 0.25, np.float32)
    assert explorer.probabilities_from_image(p, (4, 5)).shape == (1, 4, 5)
    stack = np.stack([1 - p, p])
    assert explorer.probabilities_from_image(stack, (4, 5)).shape == (2, 4, 5)
    stack[1] += 0.004  # within the tolerance (a float16 softmax, tiles blended)
    assert explorer.probabilities_from_image(stack, (4, 5)).shape == (2, 4, 5)


def test_check_target_fits_names_the_label():
    with pytest.raises(ValueError, match="has label 3 but the prediction has only 2 classes"):
        explorer.check_target_fits(np.zeros((1, 2, 2)), np.array([[0, 3], [1, 0]]))
    # one class's probability (Predict & Compare's p(LV) layer) with the acdc labels: what to
    # pick instead
    with pytest.raises(
        ValueError, match=r"pick a stack of the 4 class probabilities \(class axis first\)"
    ):
        explorer.check_target_fits(np.zeros((1, 2, 2)), np.array([[0, 3], [1, 0]]))
    with pytest.raises(ValueError) as info:
        explorer.check_target_fits(np.zeros((3, 2, 2)), np.array([[0, 3], [1, 0]]))
    assert "stack" not in str(info.value)


def test_interactive_threads_one_thread_for_small_inputs_then_restored():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with explorer.interactive_threads(320 * 273):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with explorer.interactive_threads(explorer.ONE_THREAD_PIXELS + 1):
            assert torch.get_num_threads() == 2  # a whole volume keeps torch's setting
        with pytest.raises(RuntimeError), explorer.interactive_threads(100):
            raise RuntimeError("restored even when the block fails")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def _pm_dice_of(probs: np.ndarray, gt: np.ndarray, gamma: float) -> float:
    """PM Dice (eq. 5, squared, class mean over the classes present) of ``probs`` as given."""
    p = np.concatenate([1 - probs, probs]) if probs.shape[0] == 1 else probs
    terms = []
    for c in range(p.shape[0]):
        y, pc = (gt == c).astype(np.float64), p[c].astype(np.float64)
        if y.any():
            m = np.abs(y - pc) ** gamma
            terms.append(1 - 2 * (m * y * pc).sum() / (m * (y * y + pc * pc)).sum())
    return float(np.mean(terms))


@pytest.mark.parametrize("classes", [2, 4])
def test_pm_dice_values_of_small_gammas_are_those_of_the_probabilities_given(classes):
    """Probabilities of exactly 0 or 1 (what-if predictions, one-hot labels) enter the losses
    as they are: a floor of 1e-6 gave m = |y - p|^0.5 = 1e-3 instead of 0 on every confident
    pixel, so the pm_dice values of small gammas were those of another prediction than the
    modulating map drawn (acdc, eroded: 0.503 instead of 0.554)."""
    from napari_segloss.whatif import make_whatif

    gt = np.zeros((96, 96), dtype=np.int64)
    gt[20:50, 20:50] = 1
    gt[60:80, 55:85] = classes - 1
    gt[30:40, 60:70] = classes - 2  # class 1 again when binary
    probs = make_whatif(gt, "erode", 2, softness=1.5, num_classes=classes)
    assert (probs == 0).mean() > 0.3  # many exact zeros, as in the what-if predictions
    res = explorer.compute_explorer(probs, gt, [], [0.25, 0.5, 1.0], cls=1)
    for g, value in [(0.25, res.values[0][1]), (0.5, res.values[1][1]), (1.0, res.values[2][1])]:
        assert value == pytest.approx(_pm_dice_of(probs, gt, g), rel=5e-4), g
        m = res.modulating[[0.25, 0.5, 1.0].index(g)][1]
        p1 = (probs[0] if classes == 2 else probs[1]).astype(np.float64)
        # 1 - p1 in float64, from the other classes' share as the losses take it
        q1 = 1.0 - p1 if classes == 2 else np.delete(probs, 1, axis=0).astype(np.float64).sum(0)
        np.testing.assert_allclose(m, np.where(gt == 1, q1, p1) ** g, atol=1e-6)
    logits = explorer.probabilities_to_logits(torch.from_numpy(probs)[None])
    assert torch.isfinite(logits).all()
    back = torch.sigmoid(logits) if classes == 2 else torch.softmax(logits, 1)
    torch.testing.assert_close(back[0], torch.from_numpy(probs), atol=1e-7, rtol=0)


def test_colour_scale_stays_readable_when_few_pixels_are_wrong():
    """A hard (one-hot) prediction wrong on fewer than 0.5 % of the pixels: every other
    pixel's gradient is about 1e-38, so the 99.5th percentile is too; the shared scale read
    0–5e-36 and the contribution maps were one saturated colour. It reaches at least the
    mean pixel (1 on relative maps), and the wrong pixels stand out above it."""
    gt = np.zeros((100, 100), dtype=np.int64)
    gt[30:70, 30:70] = 1
    pred = gt.copy()
    pred[:5, :5] = 1  # 25 of 10 000 pixels wrong
    probs = pred[None].astype(np.float32)
    for relative in (True, False):
        res = explorer.compute_explorer(
            probs, gt, [explorer.ExplorerLoss("ce")], [], relative=relative
        )
        cmap = res.contributions["ce"]
        assert res.clim[1] >= cmap.mean() > 0
        assert cmap[:5, :5].min() >= res.clim[1]  # the wrong pixels at the top of the scale
        assert np.median(cmap) < 1e-6 * res.clim[1]  # the right ones at its bottom
    # an ordinary soft prediction keeps the percentile
    soft = np.clip(gt + np.random.default_rng(0).normal(0, 0.2, gt.shape), 0.01, 0.99)
    res = explorer.compute_explorer(
        soft[None].astype(np.float32), gt, [explorer.ExplorerLoss("ce")], []
    )
    assert res.clim[1] == pytest.approx(np.percentile(res.contributions["ce"], 99.5))


@pytest.mark.parametrize("relative", [True, False])
def test_a_flat_map_is_drawn_blank_as_the_status_line_says(relative):
    # a hard three-class prediction: log(PROB_FLOOR) logits saturate the softmax, and the
    # Dice gradient is ~1e-38 at every pixel; divided by its mean it read 0-11 ("an average
    # pixel" = 1) while the status line called the map blank
    gt = np.zeros((16, 16), dtype=np.int64)
    gt[4:10, 4:10] = 1
    gt[11:14, 11:14] = 2
    pred = np.roll(gt, 1, axis=0)
    probs = np.stack([(pred == c).astype(np.float32) for c in range(3)])
    logits = explorer.probabilities_to_logits(torch.from_numpy(probs)[None])
    raw = contribution_map("dice", logits, torch.from_numpy(gt)[None])
    assert 0 < float(raw.max()) <= explorer.FLAT_GRADIENT  # flat, yet not exactly 0
    specs = [explorer.ExplorerLoss("dice"), explorer.ExplorerLoss("ce")]
    res = explorer.compute_explorer(probs, gt, specs, [], relative=relative)
    assert res.flat == ["dice"]
    assert not res.contributions["dice"].any()
    assert res.contributions["ce"].max() > 0
    alone = explorer.compute_explorer(probs, gt, specs[:1], [], relative=relative)
    assert not alone.contributions["dice"].any() and alone.clim == (0.0, 1.0)


def test_a_prediction_with_every_object_removed_is_not_told_to_soften():
    # the only object removed by the what-if: p = 0 everywhere whatever the softness, and the
    # status line advised "a what-if with softness > 0" while softness was 1.5
    from napari_segloss.whatif import make_whatif

    gt = np.zeros((16, 16), dtype=np.int64)
    gt[4:10, 4:10] = 1
    probs = make_whatif(gt, "remove small object", 1, softness=1.5, num_classes=2)
    res = explorer.compute_explorer(probs, gt, [explorer.ExplorerLoss("dice")], [])
    assert res.uniform and res.flat == ["dice"]
    text = explorer.summary(res)
    assert "softness > 0" not in text
    assert "one class at every pixel with certainty" in text
    soft = make_whatif(gt, "erode", 1, softness=1.5, num_classes=2)
    assert not explorer.compute_explorer(soft, gt, [explorer.ExplorerLoss("dice")], []).uniform


def test_a_nan_map_is_not_called_flat(monkeypatch):
    # NaN > FLAT_GRADIENT is False: a broken (NaN) map was reported as "no gradient at any
    # pixel (blank map)", and is now zeroed as flat maps are; it must stay NaN and unflagged
    def nan_map(loss, logits, target, kind="gradient"):
        return torch.full((logits.shape[0], *logits.shape[2:]), float("nan"))

    monkeypatch.setattr(explorer, "contribution_map", nan_map)
    gt = np.zeros((6, 6), dtype=np.int64)
    gt[1:4, 1:4] = 1
    probs = np.where(gt == 1, 0.7, 0.2).astype(np.float32)[None]
    res = explorer.compute_explorer(probs, gt, [explorer.ExplorerLoss("dice")], [])
    assert res.flat == []
    assert np.isnan(res.contributions["dice"]).all()


def test_inputs_that_would_be_misread_are_refused_or_read_right() -> None:
    """A (H, W) foreground map was read as (C=H, N=W): "69 classes", pm_dice 0.881 for 0.119;
    a float mask was truncated; a loss name failed with an AttributeError."""
    mask = np.zeros((12, 16), np.uint8)
    mask[3:9, 4:12] = 1
    fg = np.where(mask == 1, 0.8, 0.1).astype(np.float32)
    specs = [ExplorerLoss("pm_dice")]
    flat = compute_explorer(fg, mask, specs, [2.0])
    channel = compute_explorer(fg[None], mask, specs, [2.0])
    assert flat.num_classes == 2
    assert dict(flat.values)["pm_dice"] == pytest.approx(dict(channel.values)["pm_dice"])
    with pytest.raises(
        ValueError, match=r"target: expected integer labels, got a float array with non-integral"
    ):
        compute_explorer(fg, mask * 0.5, specs, [2.0])
    with pytest.raises(ValueError, match=r"expected probabilities of shape \(12, 16\)"):
        compute_explorer(fg[:, :8], mask, specs, [2.0])
    with pytest.raises(ValueError, match="must sum to 1"):
        compute_explorer(np.stack([fg, fg]), mask, specs, [2.0])
    with pytest.raises(ValueError, match=r"losses: expected ExplorerLoss items .* got 'dice'"):
        compute_explorer(fg, mask, ["dice"], [1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="gammas: expected a list of numbers, got 1"):
        compute_explorer(fg, mask, specs, 1)  # type: ignore[arg-type]


def test_a_ticked_pm_dice_and_its_gamma_in_the_list_make_one_value_row() -> None:
    """pm_dice ticked with gamma 2 and γ = 2 in the list gave two identical rows."""
    gt = np.array([[0, 1, 1], [0, 1, 0]])
    probs = np.stack([1 - gt * 0.7 - 0.1, gt * 0.7 + 0.1]).astype(np.float32)
    specs = [explorer.ExplorerLoss("pm_dice", {"gamma": 2.0})]
    res = explorer.compute_explorer(probs, gt, specs, [1.0, 2.0], cls=1)
    labels = [label for label, _ in res.values]
    assert labels == ["pm_dice(gamma=2)", "pm_dice(gamma=1)"], labels
    assert len(res.modulating) == 2  # both γ maps are still drawn


def test_the_values_of_a_hard_prediction_are_explained():
    """A labels layer as the prediction: PM Dice read 1.0000 at every gamma and ce 64, with
    nothing saying why (they are right: m is 0 or 1, and p = 0 is floored at 1.2e-38)."""
    gt = np.zeros((20, 20), np.int64)
    gt[5:15, 5:15] = 1
    hard = np.zeros((20, 20), np.float32)
    hard[6:15, 5:15] = 1.0  # one row of the square missed: 10 of 400 pixels wrong
    res = explorer.compute_explorer(hard, gt, [explorer.ExplorerLoss("ce")], [0.5, 2.0])
    values = dict(res.values)
    assert values["pm_dice(gamma=0.5)"] == pytest.approx(1.0, abs=1e-6)
    assert values["ce"] == pytest.approx(10 / 400 * -math.log(explorer.PROB_FLOOR), rel=1e-4)
    said = explorer.summary(res)
    assert "A hard 0/1 prediction" in said and "87.3" in said
    soft = explorer.compute_explorer(
        np.clip(hard, 0.1, 0.9), gt, [explorer.ExplorerLoss("ce")], [2.0]
    )
    assert "hard 0/1" not in explorer.summary(soft)


def test_the_summary_says_what_follows_the_class_box():
    """With several classes the class box changed the prediction and m maps, while the
    contribution maps (over every class) and the values stayed: nothing visible said so."""
    gt = np.zeros((12, 12), np.int64)
    gt[2:6, 2:6], gt[6:10, 6:10] = 1, 2
    probs = np.full((3, 12, 12), 1 / 3, np.float32)
    res = explorer.compute_explorer(probs, gt, [explorer.ExplorerLoss("ce")], [2.0], cls=2)
    said = explorer.summary(res)
    assert "|∂L/∂z| summed over the 3 classes" in said and "of the class picked" in said
    binary = explorer.compute_explorer(probs[1] * 0 + 0.5, gt.clip(0, 1), [], [2.0])
    assert "summed over" not in explorer.summary(binary)
