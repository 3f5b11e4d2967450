"""The fused numba kernels of the label Dice / PM Dice (losses/_fused_cpu.py) against the eager
PyTorch autograd Function they replace on CPU (same sums, same gradients)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_segloss.losses import _fused_cpu, _parallel, get_loss
from napari_segloss.losses.dice import _SoftmaxHardLabelDice


def test_numba_kernels_are_available() -> None:
    # numba is a dependency: without it every CPU Dice silently takes the slower path
    assert _fused_cpu.available()


def test_exp_matches_numpy_to_float32_rounding() -> None:
    x = np.linspace(-87.0, 0.0, 200_001, dtype=np.float32)
    got = np.array([_fused_cpu._exp_nonpositive(v) for v in x[::97]], dtype=np.float64)
    ref = np.exp(x[::97].astype(np.float64))
    assert np.max(np.abs(got / ref - 1.0)) < 3e-7
    # below the clamp: a tiny positive number, never 0 (no 0/0), never inf/NaN
    tiny = _fused_cpu._exp_nonpositive(np.float32(-1e4))
    assert 0.0 < tiny < 1e-37


def test_log_and_power_match_numpy() -> None:
    x = np.geomspace(1e-30, 1.0, 20_011).astype(np.float32)
    got = np.array([_fused_cpu._log_positive(v) for v in x[::7]], dtype=np.float64)
    ref = np.log(x[::7].astype(np.float64))
    assert np.max(np.abs(got - ref)) < 1e-5  # absolute: ln is near 0 at 1
    for e in (0.3, 1.5, 2.5):
        v = x[::7][x[::7] > 1e-6]  # results above float32's smallest normals
        got = np.array([_fused_cpu._power_unit(s, np.float32(e)) for s in v], dtype=np.float64)
        assert np.max(np.abs(got / (v.astype(np.float64) ** e) - 1.0)) < 1e-5
    assert _fused_cpu._power_unit(np.float32(0.0), np.float32(0.5)) == 0.0


def _inputs(b: int, k: int, n: int, with_valid: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, k, n, generator=g) * 4
    labels = torch.randint(0, k, (b, 1, n), generator=g)
    valid = None
    if with_valid:
        valid = (torch.rand(b, 1, n, generator=g) > 0.25).float()
        labels = labels * valid.long()  # ignored pixels carry label 0 (as Prepared makes them)
    return x, labels, valid


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 0.5])
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("with_valid", [False, True])
@pytest.mark.parametrize(("b", "k", "n"), [(2, 2, 700), (3, 4, 1537), (1, 7, 100)])
@pytest.mark.parametrize("masks", [None, "label", "both"])
def test_sums_and_gradient_match_the_eager_function(
    gamma: float, squared: bool, with_valid: bool, b: int, k: int, n: int, masks: str | None
) -> None:
    x, labels, valid = _inputs(b, k, n, with_valid)
    gm = torch.Generator().manual_seed(2)  # the TopK losses' fixed masks, values in [0, 1]
    label_m = None if masks is None else torch.rand(b, 1, n, generator=gm).round()
    off_m = torch.rand(b, k, n, generator=gm) if masks == "both" else None
    sq = 2 if squared else 1
    inter, s, y2, counts = _fused_cpu.label_dice_sums(x, labels, valid, gamma, sq, label_m, off_m)

    # reference: the eager Function in float64 (the float32 sums of either path round
    # differently, by a few 1e-6 relative)
    xr = x.double().requires_grad_(True)
    vr = None if valid is None else valid.double()
    lr = None if label_m is None else label_m.double()
    orr = None if off_m is None else off_m.double()
    r_inter, r_s, r_y2 = _SoftmaxHardLabelDice.apply(xr, labels, vr, gamma, squared, None, lr, orr)
    for got, ref in ((inter, r_inter), (s, r_s), (y2, r_y2)):
        torch.testing.assert_close(got.double(), ref.detach().double(), rtol=5e-6, atol=1e-5)
    ref_counts = torch.zeros(b, k).scatter_add_(
        1, labels.view(b, n), torch.ones(b, n) if valid is None else valid.view(b, n)
    )
    torch.testing.assert_close(counts, ref_counts)

    g = torch.Generator().manual_seed(1)
    g_inter, g_s = torch.randn(b, k, generator=g), torch.randn(b, k, generator=g)
    (ref_grad,) = torch.autograd.grad(
        (r_inter * g_inter.double()).sum() + (r_s * g_s.double()).sum(), xr
    )
    got = _fused_cpu.label_dice_grad(x, labels, valid, gamma, sq, g_inter, g_s, label_m, off_m)
    # float32 rounding of the softmax backward `p g - p sum p g` (terms of order 1)
    torch.testing.assert_close(got.double(), ref_grad, rtol=1e-5, atol=3e-6)
    if valid is not None:  # ignored pixels get no gradient at all
        assert torch.all(got * (1 - valid) == 0)


def _loss_and_grad(name: str, x: torch.Tensor, y: torch.Tensor, **kw):
    xg = x.clone().requires_grad_(True)
    value = get_loss(name, **kw)(xg, y)
    # a per-image vector (reduction="none"): weights that differ by image
    weights = torch.arange(1.0, value.numel() + 1.0).reshape(value.shape)
    (value * weights).sum().backward()
    return value.detach(), xg.grad


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("pm_dice", {}),
        ("pm_dice", {"gamma": 2.0, "ignore_index": 255}),
        ("pm_dice", {"gamma": (0.0, 1.0, 2.5)}),  # per class: one-hot path when switched off
        ("pm_dice", {"gamma": (2.0, 0.5, 1.0), "ignore_index": 255, "squared": False}),
        ("dice", {"squared": False, "batch_dice": True}),
        ("ce+pm_dice", {}),
        ("combo", {}),
        ("topk_dice", {"k": 30.0}),
        ("focal_dice_zhao", {"ignore_index": 255}),
        ("ce", {"weight": (0.2, 1.0, 3.0)}),
        ("ce", {"ignore_index": 255}),
        ("focal", {}),
        ("focal", {"gamma": 0.5, "alpha": 0.25, "ignore_index": 255}),
        ("focal", {"gamma": 3.0, "alpha": (0.2, 0.3, 0.5)}),
        ("topk_ce", {"k": 20.0}),
        ("mixed_focal", {}),
        ("unified_focal", {}),
        ("asymmetric_unified_focal", {"ignore_index": 255}),
        ("focal+pm_dice", {}),
        ("combo", {"beta": 0.7, "ignore_index": 255}),
        ("combo", {"alpha": 0.9, "beta": 0.2}),
    ],
)
def test_losses_agree_with_the_kernels_switched_off(name: str, kw: dict, monkeypatch) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 40, 33, generator=g) * 3
    y = torch.randint(0, 3, (2, 1, 40, 33), generator=g)
    if kw.get("ignore_index") is not None:
        y[:, :, :5] = 255
    fused = _loss_and_grad(name, x, y, **kw)
    monkeypatch.setenv("SEGLOSS_FUSED_CPU", "0")
    assert not _fused_cpu.available()
    eager = _loss_and_grad(name, x, y, **kw)
    # Combo's eager log(1 - p) goes through log p, which loses the relative accuracy of
    # 1 - p near p = 1 (the kernel sums the other classes instead; checked against float64
    # in test_combo_kernel_against_float64_autograd)
    atol = 2e-5 if name == "combo" else 1e-7
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-4, atol=atol)


@pytest.mark.parametrize("name", ["dice", "pm_dice"])
@pytest.mark.parametrize(
    "kw",
    [
        {"include_background": False},
        {"skip_absent": False},
        {"skip_absent": False, "include_background": False, "reduction": "none"},
        {"batch_dice": True, "reduction": "sum"},
        {"batch_dice": True, "include_background": False, "ignore_index": 255},
        {"eps": 1e-2, "reduction": "none"},
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_fused_class_mean_matches_the_generic_path(
    name: str, kw: dict, channels: int, monkeypatch
) -> None:
    # _FusedCPUDiceLoss does the class mean and its gradient itself: every option that
    # changes which classes enter, and an image where a class is absent
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, channels, 17, 19, generator=g) * 3
    y = torch.randint(0, max(channels, 2), (3, 1, 17, 19), generator=g)
    y[1][y[1] == 1] = 0  # class 1 absent from image 1
    if kw.get("ignore_index") is not None:
        y[:, :, :4] = 255
    node = type(get_loss(name, **kw)(x.requires_grad_(True), y).grad_fn).__name__
    assert node == "_FusedCPUDiceLossBackward"
    x = x.detach()
    fused = _loss_and_grad(name, x, y, **kw)
    monkeypatch.setenv("SEGLOSS_FUSED_CPU", "0")
    eager = _loss_and_grad(name, x, y, **kw)
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    ("kernel", "name"),
    [
        *[("LabelDicePass.part_totals", n) for n in ("combo", "topk_dice", "focal_dice_zhao")],
        # a reduced Dice loss, also inside a compound: forward and gradient in one region
        *[("LabelDicePass.loss_and_grad", n) for n in ("dice", "pm_dice", "ce+pm_dice")],
        *[
            ("label_pixel_loss", n)
            for n in ("ce", "focal", "mixed_focal", "asymmetric_unified_focal", "ce+pm_dice")
        ],
        ("combo_pixel_ce", "combo"),
    ],
)
def test_cpu_float32_losses_take_the_fused_path(kernel: str, name: str, monkeypatch) -> None:
    calls = []
    owner = _fused_cpu
    if "." in kernel:  # a method
        owner_name, kernel = kernel.split(".")
        owner = getattr(_fused_cpu, owner_name)
    original = getattr(owner, kernel)

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(owner, kernel, counting)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    get_loss(name)(x, torch.randint(0, 3, (2, 1, 16, 16))).backward()
    assert calls


def test_applies_only_to_float32_cpu() -> None:
    x = torch.zeros(1, 2, 4)
    assert _fused_cpu.applies(x)
    assert not _fused_cpu.applies(x.double())
    assert not _fused_cpu.applies(x.bfloat16())


def test_half_precision_logits_use_the_eager_path() -> None:
    x = torch.randn(2, 3, 8, 8).bfloat16().requires_grad_(True)
    value = get_loss("pm_dice")(x, torch.randint(0, 3, (2, 1, 8, 8)))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad.float()).all()


def test_extreme_logits_stay_finite() -> None:
    x = torch.full((2, 3, 8, 8), -1e4)
    x[:, 0] = 1e4
    y = torch.randint(0, 3, (2, 1, 8, 8))
    for name in ("pm_dice", "dice"):
        value, grad = _loss_and_grad(name, x, y)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_second_backward_with_retain_graph() -> None:
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    y = torch.randint(0, 4, (2, 1, 16, 16))
    value = get_loss("pm_dice")(x, y)
    value.backward(retain_graph=True)
    first = x.grad.clone()
    value.backward()
    torch.testing.assert_close(x.grad, 2 * first)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_reduced_dice_loss_computes_its_gradient_in_the_forward(
    reduction: str, scale: float, monkeypatch
) -> None:
    # the reduced fused Dice loss runs its backward pass right after the forward one; the
    # backward scales it by the incoming gradient, once (retain_graph backward recomputes)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 20, 20, generator=g)
    y = torch.randint(0, 3, (2, 1, 20, 20), generator=g)
    calls = []
    for method in ("grad", "loss_and_grad"):
        original = getattr(_fused_cpu.LabelDicePass, method)

        def counting(*a, _name=method, _original=original):
            calls.append(_name)
            return _original(*a)

        monkeypatch.setattr(_fused_cpu.LabelDicePass, method, counting)
    loss = get_loss("pm_dice", reduction=reduction)
    with torch.no_grad():
        loss(x, y)
    assert not calls  # no gradient when none is needed
    xg = x.clone().requires_grad_(True)
    value = loss(xg, y)
    assert calls == ["loss_and_grad"]
    (value * scale).backward(retain_graph=True)
    assert calls == ["loss_and_grad"]
    first = xg.grad.clone()
    for times in (2, 3):
        (value * scale).backward(retain_graph=True)
        torch.testing.assert_close(xg.grad, times * first)
    assert calls == ["loss_and_grad", "grad", "grad"]
    monkeypatch.setenv("SEGLOSS_FUSED_CPU", "0")
    xe = x.clone().requires_grad_(True)
    (loss(xe, y) * scale).backward()
    torch.testing.assert_close(first, xe.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"weights": (0.5, 2.0)},
        {"pm_dice": {"batch_dice": True}},
        {"ignore_index": 255, "pm_dice": {"gamma": 2.0}},
    ],
)
def test_compound_with_a_self_reducing_dice_matches_the_eager_path(
    reduction: str, kw: dict, monkeypatch
) -> None:
    # with reduction "mean" a compound takes its Dice part reduced (the mean of a weighted
    # sum is the weighted sum of the means): same value and gradient as the eager path
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 4, 10, 11, generator=g)
    y = torch.randint(0, 4, (3, 10, 11), generator=g)
    if "ignore_index" in kw:
        y[:, :3] = 255

    def value_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        xg = x.clone().requires_grad_(True)
        value = get_loss("ce+pm_dice", reduction=reduction, **kw)(xg, y)
        (value.sum() * 0.7).backward()  # an incoming gradient other than 1
        return value.detach(), xg.grad

    fused = value_and_grad()
    monkeypatch.setenv("SEGLOSS_FUSED_CPU", "0")
    eager = value_and_grad()
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_dice_output_can_be_added_to_in_place(reduction: str, monkeypatch) -> None:
    # `loss += other` is a common way to sum losses: an autograd Function may not return a
    # view for that, and the gradient must still be right
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 12, 12, generator=g)
    y = torch.randint(0, 3, (2, 12, 12), generator=g)

    def grad() -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        value = get_loss("pm_dice", reduction=reduction)(xg, y)
        value += get_loss("ce", reduction=reduction)(xg, y)
        (value.sum() * 0.5).backward()
        return xg.grad

    fused = grad()
    monkeypatch.setenv("SEGLOSS_FUSED_CPU", "0")
    torch.testing.assert_close(fused, grad(), rtol=1e-4, atol=1e-7)


def test_thread_split_and_concurrent_callers_agree(thread_path: bool) -> None:
    # 2 x 65536 pixels: split over the threads; several Python threads call at once (napari
    # runs maps and training in worker threads)
    x, labels, valid = _inputs(2, 3, 65536, True, seed=5)
    g = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    threads_before = torch.get_num_threads()

    def both() -> tuple:
        sums = _fused_cpu.label_dice_sums(x, labels, valid, 1.0, 2)
        grad = _fused_cpu.label_dice_grad(x, labels, valid, 1.0, 2, g, 0.5 * g)
        # and the two-phase region: forward, class mean, gradient
        dice = _fused_cpu.LabelDicePass(x, labels, valid, 1.0, 2)
        outs, whole_grad = dice.loss_and_grad(1e-6, False, False, True, True)
        return (*sums, grad, *outs, whole_grad)

    try:
        torch.set_num_threads(1)
        single = both()
        torch.set_num_threads(2)
        assert _parallel.split(_fused_cpu._blocks(x), 2 * 65536) == (2, 8)
        split = both()
        results: list = [None] * 4

        def call(i: int) -> None:
            results[i] = both()

        workers = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        torch.set_num_threads(threads_before)
    for got in (split, *results):
        for a, b in zip(got, single, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize(
    ("gamma", "sq", "general"),
    [
        (1.0, 2, None),
        (0.0, 1, None),
        (2.0, 2, None),
        ((0.0, 1.0, 2.0), 2, None),
        (0.5, 2, True),
        ((0.0, 0.5, 1.0), 1, True),
        (3.0, 2, True),
    ],
)
def test_integer_exponents_take_the_multiplication_kernel(gamma, sq: int, general) -> None:
    # gamma + s in 0..4 for every class: the kernel compiled without the pow() path
    table = _fused_cpu.class_table(gamma, 3)
    assert _fused_cpu._general(table, sq) is general


def test_binary_per_class_gamma_matches_the_one_hot_path(monkeypatch) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 1, 20, 21, generator=g) * 2
    y = torch.randint(0, 2, (3, 1, 20, 21), generator=g)
    kw = {"gamma": (0.5, 2.0)}  # [gamma_BG, gamma_FG]
    fused = _loss_and_grad("pm_dice", x, y, **kw)
    with pytest.raises(ValueError, match="gamma has 3 values"):
        get_loss("pm_dice", gamma=(1.0, 1.0, 1.0))(x, y)
    monkeypatch.setenv("SEGLOSS_FUSED_CPU", "0")
    eager = _loss_and_grad("pm_dice", x, y, **kw)
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-4, atol=1e-7)


def test_minus_infinity_logits_match_the_eager_path(monkeypatch) -> None:
    # a masked class (-inf logits) keeps IEEE semantics in the kernels (no "no infs" fastmath)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 16, 16, generator=g)
    x[:, 2, :8] = float("-inf")
    y = torch.randint(0, 2, (2, 1, 16, 16), generator=g)
    fused = _loss_and_grad("pm_dice", x, y, validate=False)
    monkeypatch.setenv("SEGLOSS_FUSED_CPU", "0")
    eager = _loss_and_grad("pm_dice", x, y, validate=False)
    assert torch.isfinite(fused[0]) and torch.isfinite(fused[1]).all()
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-4, atol=1e-7)


def test_kernels_compile_without_a_writable_cache(monkeypatch) -> None:
    # numba refuses cache=True at decoration when no cache location is writable: the kernel
    # decorator then compiles without caching instead of breaking the import
    real_njit = _fused_cpu.njit

    def njit_without_cache(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return real_njit(**options)

    monkeypatch.setattr(_fused_cpu, "njit", njit_without_cache)

    @_fused_cpu._kernel(nogil=True)
    def add_one(a):
        for i in range(a.shape[0]):
            a[i] += 1.0

    a = np.zeros(3, np.float32)
    add_one(a)
    assert a.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["ce", "focal", "combo"])
@pytest.mark.parametrize("c", [1, 4])
def test_cross_entropy_family_binary_and_confident(name: str, c: int, monkeypatch) -> None:
    # confident logits: 1 - p_t far below float32's resolution near 1 (the focal clamp) and
    # log p_t near 0; binary logits go through the [0, x] expansion
    g = torch.Generator().manual_seed(8)
    y = torch.randint(0, max(c, 2), (2, 1, 12, 12), generator=g)
    x = torch.randn(2, c, 12, 12, generator=g)
    if c == 1:
        x = x + 30.0 * (2 * y - 1)  # confident and right
    else:
        x = x + 30.0 * torch.nn.functional.one_hot(y[:, 0], c).permute(0, 3, 1, 2)
    x[0, :, :3] *= -1  # and some confident and wrong
    fused = _loss_and_grad(name, x, y)
    monkeypatch.setenv("SEGLOSS_FUSED_CPU", "0")
    eager = _loss_and_grad(name, x, y)
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-4, atol=1e-8)


def _check_pixel_grad(ref: torch.Tensor, xr: torch.Tensor, kernel_grad) -> None:
    """A per-pixel kernel's gradient for a random ``dL/dout`` against float64 autograd of the
    reference values ``ref`` (B, N) built from ``xr``."""
    g_out = torch.rand(ref.shape, generator=torch.Generator().manual_seed(1))
    (ref_grad,) = torch.autograd.grad((ref * g_out.double()).sum(), xr)
    torch.testing.assert_close(kernel_grad(g_out).double(), ref_grad, rtol=1e-4, atol=1e-6)


def test_pixel_loss_kernel_against_float64_autograd() -> None:
    # -w_t (1 - p_t)^gamma_t log p_t with per-class gamma and weights, gradient by autograd
    x, labels, valid = _inputs(2, 3, 1100, True, seed=9)
    gammas = np.array([0.0, 2.0, 0.5])
    weights = np.array([0.5, 1.0, 2.0])
    got = _fused_cpu.label_pixel_loss(x, labels, valid, gammas, weights)
    xr = x.double().requires_grad_(True)
    lp = torch.log_softmax(xr, 1).gather(1, labels)[:, 0]
    lab = labels[:, 0]
    base = (-torch.expm1(lp)).clamp_min(1e-12)
    ref = -torch.tensor(weights)[lab] * base ** torch.tensor(gammas)[lab] * lp * valid[:, 0]
    torch.testing.assert_close(got.double(), ref.detach(), rtol=2e-5, atol=1e-6)
    _check_pixel_grad(
        ref, xr, lambda g: _fused_cpu.label_pixel_loss_grad(x, labels, valid, gammas, weights, g)
    )


def test_combo_kernel_against_float64_autograd() -> None:
    # -(beta log p_y + (1 - beta) sum_{c != y} max(log(1 - p_c), floor)), gradient by autograd
    from napari_segloss.losses.compound import _LOG1M_FLOOR

    x, labels, valid = _inputs(2, 4, 1300, True, seed=11)
    x[0, 0, :50] += 25.0  # confident pixels: 1 - p far below float32's resolution near 1
    beta = 0.3
    got = _fused_cpu.combo_pixel_ce(x, labels, valid, beta, _LOG1M_FLOOR)
    xr = x.double().requires_grad_(True)
    p = torch.softmax(xr, 1)
    lp = torch.log_softmax(xr, 1)
    # 1 - p_c as the sum of the other classes (even float64 cancels for p_c ~ 1 - 1e-17)
    others = torch.stack([torch.cat([p[:, :c], p[:, c + 1 :]], 1).sum(1) for c in range(4)], 1)
    l1m = torch.log(others).clamp_min(_LOG1M_FLOOR)
    not_y = torch.ones_like(p).scatter_(1, labels, 0.0)
    px = -(beta * lp.gather(1, labels)[:, 0] + (1 - beta) * (l1m * not_y).sum(1)) * valid[:, 0]
    torch.testing.assert_close(got.double(), px.detach(), rtol=1e-5, atol=2e-6)
    _check_pixel_grad(
        px, xr, lambda g: _fused_cpu.combo_pixel_ce_grad(x, labels, valid, beta, _LOG1M_FLOOR, g)
    )


def test_warm_up_compiles_every_kernel() -> None:
    _fused_cpu.warm_up()
    # every kernel runs inside a parallel region (the Dice ones for integer exponents here)
    general = {"_dice_forward_general", "_dice_backward_general", "_dice_loss_general"}
    regions = [r for r in _fused_cpu._REGIONS if r.body.__name__ not in general]
    assert len(regions) == 8
    assert all(r._address is not None for r in regions)


def test_start_warm_up_starts_one_background_thread(monkeypatch) -> None:
    started = []

    class RecordingThread:
        def __init__(self, *, target, name, daemon):
            assert target is _fused_cpu.warm_up and daemon
            self.name = name

        def start(self) -> None:
            started.append(self.name)

    monkeypatch.setattr(_fused_cpu, "_warm_up_started", False)
    monkeypatch.setattr(_fused_cpu.threading, "Thread", RecordingThread)
    _fused_cpu.start_warm_up()
    _fused_cpu.start_warm_up()  # the panels each call it; one compile is enough
    assert started == ["segloss-numba-warm-up"]


def test_cache_is_dropped_when_the_parallel_helpers_change(tmp_path) -> None:
    # numba's cache sees only each function's own file; the regions here inline ._parallel's
    # job helpers, so a change there must clear this module's cached regions
    helpers = tmp_path / "_parallel.py"
    helpers.write_text("LAYOUT = 1\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = [cache / "_fused_cpu._dice_loss_integer-1.py311.nbi", cache / "_fused_cpu.k-2.nbc"]
    other = cache / "_other.f-1.py311.nbi"
    for f in (*stale, other):
        f.write_text("x")
    assert _fused_cpu._drop_stale_cache(cache, helpers)  # no stamp yet: dropped
    assert not any(f.exists() for f in stale) and other.exists()
    for f in stale:
        f.write_text("x")
    assert not _fused_cpu._drop_stale_cache(cache, helpers)  # unchanged: kept
    assert all(f.exists() for f in stale)
    helpers.write_text("LAYOUT = 2\n")
    assert _fused_cpu._drop_stale_cache(cache, helpers)
    assert not any(f.exists() for f in stale)


def test_import_checks_the_real_cache_directory() -> None:
    from numba.core.caching import FunctionCache

    cache_dir = Path(FunctionCache(_fused_cpu._kernel).cache_path)
    if not cache_dir.is_dir():
        pytest.skip("numba has no cache directory for this module here")
    marker = cache_dir / "_fused_cpu.depends-_parallel"
    assert marker.is_file()
    digest = hashlib.sha256(Path(_parallel.__file__).read_bytes()).hexdigest()
    assert marker.read_text() == digest
