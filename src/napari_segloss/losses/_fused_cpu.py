"""Fused CPU kernels (numba) for the losses' integer-label paths, straight from the (B, K, N)
logits, each a forward and a backward pass:

* the Dice / PM-Dice eq. 5 sums (:class:`~napari_segloss.losses.dice._SoftmaxHardLabelDice`,
  with per-class gamma and the TopK losses' fixed masks): :class:`LabelDicePass`,
  :func:`label_dice_sums`, :func:`label_dice_grad`; for the reduced Dice / PM-Dice loss
  also the class mean (:func:`dice_class_mean`) and, when autograd needs it, the gradient
  in the same parallel region as the sums (:meth:`LabelDicePass.loss_and_grad`);
* the cross-entropy family's per-pixel ``-w_t (1 - p_t)^gamma_t log p_t``:
  :func:`label_pixel_loss`, :func:`label_pixel_loss_grad`;
* Combo's weighted CE: :func:`combo_pixel_ce`, :func:`combo_pixel_ce_grad`;
* and the TopK selection :func:`topk_keep` (the mask of ``_topk.topk_keep``).

Why: in eager PyTorch every step (softmax, the label gather, the powers, the scatter, the
softmax backward) is its own pass over the full tensor and its own full-size temporary, and on
CPU fresh large temporaries cost page faults. Here the pixels are processed in blocks of
``_BLOCK`` whose buffers stay in cache; nothing full-size is written except the output, and
the softmax is recomputed in the backward instead of being stored.

* ``exp``, ``log`` and non-integer powers are vectorisable float32 versions (Cody-Waite range
  reduction, a minimax polynomial for ``exp`` and the Cephes one for ``log``; relative error
  of ``exp`` at most 3.1e-7 on [-87, 0]). ``exp`` is
  only called on ``x - max <= 0``, and arguments below -87 are clamped (``exp(-87) =
  1.6e-38``: such classes get probability ~0, as in float32 softmax). Integer exponents are
  multiplications.
* ``1 - p`` is taken from the other classes' share, never as ``1 - p``, so nothing cancels for
  confident predictions.
* Per-class sums run in float32 over one block and are added into float64 totals.
* Work is split over ``torch.get_num_threads()`` threads, in a parallel region of torch's own
  GNU OpenMP runtime where there is one (:mod:`._parallel`), else on a thread pool;
  no Python runs on the worker threads.

Used only for float32 CPU tensors outside ``torch.compile`` tracing and when numba imports;
``SEGLOSS_FUSED_CPU=0`` switches it off (the eager PyTorch paths give the same values).
:func:`start_warm_up` compiles everything in the background (numba caches it on disk).
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import _parallel

try:  # numba is a dependency, but the losses must keep working where it cannot import
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None

_BLOCK = 1024  # pixels per block: the block's buffers stay in L2 (256: +20 %, 2048: +5 %)
_ROW = _BLOCK + 16  # scratch rows are staggered (see _arena)

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split in two so that k * ln2 is exact (Cody-Waite)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_FLOOR = np.float32(-87.0)  # 2^k stays a normal float32 above this
_ZERO = np.float32(0.0)
_POWER_ONE = (True, False, False, False)  # the _power_of flags of the exponent 1
_ONE = np.float32(1.0)
_TINY = 1e-12  # the clamp of 1 - p_t in the focal terms (losses._base.TINY)
# fastmath without "no infs": reassociation lets the sums vectorise and "no NaNs" the max/min
# (NaN logits are rejected by the default validation), while -inf logits (masked classes) keep
# IEEE behaviour, as in the PyTorch path
_FAST = {"nnan", "reassoc", "nsz", "arcp", "contract", "afn"}


def available() -> bool:
    """Whether the fused kernels can run here (numba imports, not switched off)."""
    return njit is not None and os.environ.get("SEGLOSS_FUSED_CPU", "1") != "0"


def applies(x: Tensor) -> bool:
    """Whether the fused kernels handle these logits: float32 on the CPU, outside
    ``torch.compile`` tracing (which cannot see into numba)."""
    return x.dtype == torch.float32 and x.is_cpu and available() and not _is_compiling()


# torch >= 2.3 has torch.compiler.is_compiling; looked up once (this runs at every loss call)
_is_compiling = getattr(torch.compiler, "is_compiling", None) or torch._dynamo.is_compiling


def _drop_stale_cache(cache_dir: Path, dependency: Path, prefix: str = "_fused_cpu.") -> bool:
    """Delete this module's numba cache files in ``cache_dir`` when ``dependency`` changed
    since they were written; True if it deleted them.

    numba keys its disk cache on the source file of each function alone, but the parallel
    regions compiled here inline the job helpers of :mod:`._parallel` (and the job layout
    they share with its Python side): an edit there alone would leave stale regions that
    read the job wrongly. A digest of that file, kept next to the cache, catches it."""
    digest = hashlib.sha256(dependency.read_bytes()).hexdigest()
    marker = cache_dir / f"{prefix}depends-{dependency.stem}"
    if marker.is_file() and marker.read_text() == digest:
        return False
    for f in cache_dir.glob(f"{prefix}*.nb[ic]"):
        f.unlink(missing_ok=True)
    marker.write_text(digest)
    return True


def _kernel(**options):
    """``njit`` with this module's settings, cached on disk; without a writable cache location
    (a read-only install and no writable home) numba refuses ``cache=True`` at decoration, and
    the kernels then compile once per process instead."""

    def decorate(fn):
        settings = {"fastmath": _FAST, "error_model": "numpy", **options}
        try:
            return njit(cache=True, **settings)(fn)
        except RuntimeError:
            return njit(**settings)(fn)

    return decorate


if njit is not None:

    @_kernel(inline="always")
    def _exp_nonpositive(x):
        """Vectorisable float32 ``exp(x)`` for ``x <= 0``: ``2^k exp(f)`` with ``|f| <= ln2 / 2``
        and a degree-6 minimax polynomial for ``exp(f)`` (fitted here: 2e-9 relative error,
        one multiply-add per degree; the Cephes form took two more operations for precision
        float32 cannot hold)."""
        x = max(x, _EXP_FLOOR)
        k = np.floor(x * _LOG2E + np.float32(0.5))  # np.floor stays float32 (math.floor: int)
        f = x - k * _LN2_HI
        f = f - k * _LN2_LO
        y = np.float32(1.3836807338520885e-3)
        y = y * f + np.float32(8.374815806746483e-3)
        y = y * f + np.float32(4.166822507977486e-2)
        y = y * f + np.float32(1.6666419804096222e-1)
        y = y * f + np.float32(4.9999991059303284e-1)
        y = y * f + _ONE
        y = y * f + _ONE
        two_to_k = np.int32((np.int32(k) + np.int32(127)) << np.int32(23))  # bits of 2^k
        return y * _parallel.reinterpret(two_to_k, np.float32)

    @_kernel(inline="always")
    def _log_positive(x):
        """Vectorisable float32 ``ln x`` for ``x > 0`` (arguments below 1e-37 are clamped):
        ``x = 2^e m`` with ``m`` in [sqrt(1/2), sqrt(2)) and the Cephes ``logf`` polynomial."""
        x = max(x, np.float32(1e-37))
        bits = _parallel.reinterpret(x, np.int32)
        e = np.float32((bits >> np.int32(23)) - np.int32(127))
        mantissa = np.int32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F800000))
        m = _parallel.reinterpret(mantissa, np.float32)  # [1, 2)
        big = m > np.float32(1.4142135623730951)
        m = m * np.float32(0.5) if big else m
        e = e + _ONE if big else e
        f = m - _ONE
        z = f * f
        y = np.float32(7.0376836292e-2)
        y = y * f - np.float32(1.1514610310e-1)
        y = y * f + np.float32(1.1676998740e-1)
        y = y * f - np.float32(1.2420140846e-1)
        y = y * f + np.float32(1.4249322787e-1)
        y = y * f - np.float32(1.6668057665e-1)
        y = y * f + np.float32(2.0000714765e-1)
        y = y * f - np.float32(2.4999993993e-1)
        y = y * f + np.float32(3.3333331174e-1)
        y = y * f * z
        y = y + e * _LN2_LO - np.float32(0.5) * z
        return f + y + e * _LN2_HI

    @_kernel(inline="always")
    def _power_unit(v, e):
        """``v^e`` for ``v`` in [0, 1] and ``e >= 0`` as ``exp(e ln v)`` (vectorisable, unlike
        ``pow``); exactly 0 for ``v = 0``."""
        r = _exp_nonpositive(min(e * _log_positive(v), _ZERO))
        return r if v > _ZERO else _ZERO

    @_kernel(inline="always")
    def _power_of(v, flags):
        """``v^e`` for an integer exponent 0-4 given as ``flags = (e >= 1, ..., e >= 4)``:
        selects and multiplications only, so the pixel loops stay vectorised."""
        t = v if flags[0] else _ONE
        t = t * (v if flags[1] else _ONE)
        t = t * (v if flags[2] else _ONE)
        return t * (v if flags[3] else _ONE)

    @_kernel(inline="always")
    def _exponent_flags(e):
        """``(slow, (e >= 1, ..., e >= 4))``: integer exponents 0-4 become multiplications
        (:func:`_power_of`), the others (``slow``) go through :func:`_power_unit`."""
        slow = not (e == 0.0 or e == 1.0 or e == 2.0 or e == 3.0 or e == 4.0)
        fast = not slow
        return slow, (fast and e >= 1.0, fast and e >= 2.0, fast and e >= 3.0, fast and e >= 4.0)

    @_kernel(inline="always")
    def _labels_and_max(x, labels, b, s0, n, lab, m):
        """Block ``s0 .. s0 + n`` of image ``b``: ``lab`` its labels as int32 (their compares
        then vectorise with the float32 lanes) and ``m`` the max over the classes. Two
        classes per pass here and in :func:`_softmax_block`: a pass is bound by its loads and
        stores of the block buffers as much as by its arithmetic."""
        num_k = x.shape[1]
        src = labels[b, s0 : s0 + n]
        x0 = x[b, 0, s0 : s0 + n]
        x1 = x[b, min(1, num_k - 1), s0 : s0 + n]
        for i in range(n):
            lab[i] = np.int32(src[i])
            m[i] = max(x0[i], x1[i])
        for k in range(2, num_k - 1, 2):
            xa = x[b, k, s0 : s0 + n]
            xb = x[b, k + 1, s0 : s0 + n]
            for i in range(n):
                m[i] = max(m[i], max(xa[i], xb[i]))
        if num_k > 2 and num_k % 2 == 1:
            xa = x[b, num_k - 1, s0 : s0 + n]
            for i in range(n):
                m[i] = max(m[i], xa[i])

    @_kernel(inline="always")
    def _exponentials(x, labels, b, s0, n, lab, m, e):
        """:func:`_labels_and_max`, then ``e[k] = exp(x_k - m)``."""
        _labels_and_max(x, labels, b, s0, n, lab, m)
        for k in range(x.shape[1]):
            xk = x[b, k, s0 : s0 + n]
            ek = e[k]
            for i in range(n):
                ek[i] = _exp_nonpositive(xk[i] - m[i])

    @_kernel(inline="always")
    def _softmax_block(x, labels, wb, gammas, b, s0, n, lab, e, z, py, a, u):
        """One block of pixels ``s0 .. s0 + n`` of image ``b`` with validity ``wb``:

        * ``lab``: the labels as int32;
        * ``e[:, :n]``: ``exp(x - max)`` and ``z = w / sum_k e``, so that ``p' = softmax(x) w
          = e z``. Masking p itself is exact for the softmax backward too: an ignored pixel
          has ``p g = 0`` for every class, so its gradient ``p g - p sum_k p g`` is 0
          whatever p is;
        * at the label entry ``py = p'_y``, ``a = m w`` with ``m = (1 - p'_y)^gamma_y`` and
          ``u = a p'_y``.

        The normaliser and the label's exponential are summed in the same passes as the
        exponentials, two classes per pass, and p is never written out.
        """
        _labels_and_max(x, labels, b, s0, n, lab, z)  # z: the max, for now
        for i in range(n):
            u[i] = _ZERO  # sum_k e, for now
            py[i] = _ZERO  # e at the label, for now
        num_k = x.shape[1]
        for k in range(0, num_k - 1, 2):
            xa = x[b, k, s0 : s0 + n]
            xb = x[b, k + 1, s0 : s0 + n]
            ea = e[k]
            eb = e[k + 1]
            ka = np.int32(k)
            kb = np.int32(k + 1)
            for i in range(n):
                va = _exp_nonpositive(xa[i] - z[i])
                vb = _exp_nonpositive(xb[i] - z[i])
                ea[i] = va
                eb[i] = vb
                u[i] += va + vb
                py[i] += va if lab[i] == ka else (vb if lab[i] == kb else _ZERO)
        if num_k % 2 == 1:
            k = num_k - 1
            xk = x[b, k, s0 : s0 + n]
            ek = e[k]
            kk = np.int32(k)
            for i in range(n):
                v = _exp_nonpositive(xk[i] - z[i])
                ek[i] = v
                u[i] += v
                py[i] += v if lab[i] == kk else _ZERO
        for i in range(n):
            zi = wb[i] / u[i]
            z[i] = zi
            py[i] *= zi
        _modulation_at_label(gammas, lab, wb, py, n, a)
        for i in range(n):
            u[i] = a[i] * py[i]

    @_kernel(inline="always")
    def _per_label(table, lab, n, out):
        """``out[i] = table[lab[i]]`` for a small per-class table (float32), as one select
        pass per class (a gather would not vectorise)."""
        for i in range(n):
            out[i] = _ZERO
        for k in range(table.shape[0]):
            kk = np.int32(k)
            tk = np.float32(table[k])
            for i in range(n):
                out[i] += tk if lab[i] == kk else _ZERO

    @_kernel(inline="always")
    def _is_uniform(table):
        """Whether every entry of a per-class table equals the first."""
        for k in range(1, table.shape[0]):
            if table[k] != table[0]:
                return False
        return True

    @_kernel(inline="always")
    def _modulation_at_label(gammas, lab, wb, py, n, a):
        """``a = (1 - p'_y)^gamma_y w``: one pass for a single gamma, else one per class with
        a non-zero gamma (pixels of other classes keep their value)."""
        g0 = gammas[0]
        if _is_uniform(gammas):
            slow, flags = _exponent_flags(g0)
            if slow:
                gf = np.float32(g0)
                for i in range(n):
                    a[i] = _power_unit(_ONE - py[i], gf) * wb[i]
            else:
                for i in range(n):
                    a[i] = _power_of(_ONE - py[i], flags) * wb[i]
            return
        for i in range(n):
            a[i] = wb[i]  # gamma 0: m = 1
        for k in range(gammas.shape[0]):
            if gammas[k] == 0.0:
                continue
            kk = np.int32(k)
            slow, flags = _exponent_flags(gammas[k])
            gf = np.float32(gammas[k])
            for i in range(n):
                d = _ONE - py[i]
                m = _power_unit(d, gf) if slow else _power_of(d, flags)
                a[i] *= m if lab[i] == kk else _ONE

    @_kernel(inline="always")
    def _off_label_powers(ek, z, tk, n, slow, flags, e):
        """``tk = p'^e`` with ``p' = ek z``: by ``_power_unit`` when ``slow`` (a non-integer
        exponent), else by ``_power_of`` with the exponent's ``flags``."""
        if slow:
            ef = np.float32(e)
            for i in range(n):
                tk[i] = _power_unit(ek[i] * z[i], ef)
        else:
            for i in range(n):
                tk[i] = _power_of(ek[i] * z[i], flags)

    @_kernel(inline="always")
    def _apply_label_mask(label_m, b, s0, n, py, a, u):
        """The TopK losses' fixed mask at the label entries scales ``m``: ``a`` and ``u``."""
        lm = label_m[b, s0 : s0 + n]
        for i in range(n):
            a[i] *= lm[i]
            u[i] = a[i] * py[i]

    @_kernel(inline="always")
    def _block_at(j, n_pix, w, has_w, ones):
        """Block ``j`` of the flattened (image, block) range: image ``b``, first pixel ``s0``,
        length ``n`` and its validity ``wb`` (``ones`` without a mask)."""
        per_image = (n_pix + _BLOCK - 1) // _BLOCK
        b = j // per_image
        s0 = (j % per_image) * _BLOCK
        n = min(_BLOCK, n_pix - s0)
        return b, s0, n, (w[b, s0 : s0 + n] if has_w else ones[:n])

    @_kernel(inline="always")
    def _arena(rows):
        """A kernel's per-block buffers as ``rows`` rows of one page-aligned allocation, the
        last row ones. Buffers allocated one by one land wherever malloc puts them, and the
        kernels' speed varied by 30 % with that placement (cache set conflicts, loads
        stalled by stores a multiple of 4096 bytes away); staggered rows of one aligned
        block make it the same in every process."""
        flat = np.empty(rows * _ROW + 1024, np.float32)
        start = ((4096 - flat.ctypes.data % 4096) % 4096) // 4
        ar = flat[start : start + rows * _ROW].reshape((rows, _ROW))
        ones = ar[rows - 1]
        for i in range(_ROW):
            ones[i] = _ONE
        return ar

    @_kernel(inline="always")
    def _block_scratch(num_k, extra):
        """Per-block buffers: e (K, block), z, py, a, u (float32), the int32 labels, ones;
        and ``extra`` more rows for the kernel."""
        ar = _arena(num_k + extra + 6)
        r = num_k + extra
        scratch = (ar[:num_k], ar[r], ar[r + 1], ar[r + 2], ar[r + 3], ar[r + 4].view(np.int32))
        return (*scratch, ar[r + 5]), ar[num_k:r]

    @_kernel(inline="always")
    def _block_terms(x, labels, w, has_w, gammas, label_m, has_lm, j, scratch):
        """Block ``j`` (image ``b``, pixels ``s0 .. s0 + n``): its softmax and label terms
        (:func:`_softmax_block`, TopK label mask applied); returns ``b, s0, n`` and the
        block's validity ``wb``."""
        e, z, py, a, u, lab, ones = scratch
        b, s0, n, wb = _block_at(j, x.shape[2], w, has_w, ones)
        _softmax_block(x, labels, wb, gammas, b, s0, n, lab, e, z, py, a, u)
        if has_lm:
            _apply_label_mask(label_m, b, s0, n, py, a, u)
        return b, s0, n, wb

    @_kernel(inline="always")
    def _class_sums(lab, kk, u, s_lab, a, wb, base, scale, flags, om, n):
        """Class ``kk``'s share of the block's I, S, Y and label count; off the label
        ``m p'^s = p'^(gamma + s)`` is ``_power_of(base scale, flags)`` (a separate call per
        pair of arrays: one loop reading either pair would not vectorise as well)."""
        s_i = _ZERO
        s_s = _ZERO
        s_y = _ZERO
        s_n = _ZERO
        for i in range(n):
            hit = lab[i] == kk
            s_i += u[i] if hit else _ZERO
            s_s += s_lab[i] if hit else _power_of(base[i] * scale[i], flags) * om[i]
            s_y += a[i] if hit else _ZERO
            s_n += wb[i] if hit else _ZERO
        return s_i, s_s, s_y, s_n

    @_kernel(inline="always")
    def _class_pair_sums(lab, k, u, s_lab, a, wb, e, z, flags, om, n):
        """:func:`_class_sums` of classes ``k`` and ``k + 1`` (integer exponents) in one pass:
        the shared rows are loaded once."""
        ka = np.int32(k)
        kb = np.int32(k + 1)
        fa, fb = flags
        ea = e[k]
        eb = e[k + 1]
        oa, ob = om
        ia = _ZERO
        sa = _ZERO
        ya = _ZERO
        na = _ZERO
        ib = _ZERO
        sb = _ZERO
        yb = _ZERO
        nb = _ZERO
        for i in range(n):
            ha = lab[i] == ka
            hb = lab[i] == kb
            ui = u[i]
            li = s_lab[i]
            ai = a[i]
            wi = wb[i]
            zi = z[i]
            ia += ui if ha else _ZERO
            ib += ui if hb else _ZERO
            sa += li if ha else _power_of(ea[i] * zi, fa) * oa[i]
            sb += li if hb else _power_of(eb[i] * zi, fb) * ob[i]
            ya += ai if ha else _ZERO
            yb += ai if hb else _ZERO
            na += wi if ha else _ZERO
            nb += wi if hb else _ZERO
        return (ia, sa, ya, na), (ib, sb, yb, nb)

    @_kernel(nogil=True)
    def _forward_kernel(x, labels, w, has_w, gammas, sq, general, masks, first, last, out):
        """Blocks ``first..last-1`` (block j: image ``j // blocks_per_image``) into the
        float64 sums ``out[b, 0|1|2|3, k]``: I, S, Y of the eq. 5 form and the valid label
        count; ``gammas`` (K,) float64; ``masks = (label_m, has_label_m, off_m, has_off_m)``
        the TopK losses' fixed masks, (B, N) at the label entries and (B, K, N) elsewhere.
        ``general``: None when every ``gamma_k + s`` is an integer 0-4 (numba then compiles
        that case alone: a loop next to the other case's loop ran 20-25 % slower), else True."""
        label_m, has_lm, off_m, has_om = masks
        num_k = x.shape[1]
        scratch, more = _block_scratch(num_k, 2)
        e, z, py, a, u, lab, ones = scratch
        tk = more[0]
        s_lab = more[1]
        for j in range(first, last):
            b, s0, n, wb = _block_terms(x, labels, w, has_w, gammas, label_m, has_lm, j, scratch)
            for i in range(n):  # the label entry of S: m p'_y^s
                s_lab[i] = u[i] * (py[i] if sq == 2 else _ONE)
            first_single = 0
            if general is None:  # two classes per pass, then the odd one
                first_single = num_k - num_k % 2
                for k in range(0, num_k - 1, 2):
                    flags = (
                        _exponent_flags(gammas[k] + sq)[1],
                        _exponent_flags(gammas[k + 1] + sq)[1],
                    )
                    om = (
                        off_m[b, k, s0 : s0 + n] if has_om else ones[:n],
                        off_m[b, k + 1, s0 : s0 + n] if has_om else ones[:n],
                    )
                    pair = _class_pair_sums(lab, k, u, s_lab, a, wb, e, z, flags, om, n)
                    for t in range(4):
                        out[b, t, k] += pair[0][t]
                        out[b, t, k + 1] += pair[1][t]
            for k in range(first_single, num_k):
                kk = np.int32(k)
                slow, flags = _exponent_flags(gammas[k] + sq)
                om = off_m[b, k, s0 : s0 + n] if has_om else ones[:n]
                if general is None:
                    sums = _class_sums(lab, kk, u, s_lab, a, wb, e[k], z, flags, om, n)
                else:
                    _off_label_powers(e[k], z, tk, n, slow, flags, gammas[k] + sq)
                    sums = _class_sums(lab, kk, u, s_lab, a, wb, tk, ones, _POWER_ONE, om, n)
                for t in range(4):
                    out[b, t, k] += sums[t]

    @_kernel(inline="always")
    def _class_grad_terms(lab, kk, u, a, gl, gs, gs_off, base, scale, flags, om, n, tk, total):
        """``tk = p g`` of class ``kk`` (off the label ``s dL/dS m p'^s``, at it
        ``m p'_y (dL/dI + s dL/dS p'_y^(s-1))``) and its sum over the classes in ``total``."""
        for i in range(n):
            on = u[i] * gl + a[i] * gs
            off = gs_off * _power_of(base[i] * scale[i], flags) * om[i]
            v = on if lab[i] == kk else off
            tk[i] = v
            total[i] += v

    @_kernel(nogil=True)
    def _backward_kernel(
        x, labels, w, has_w, gammas, sq, general, masks, g_inter, g_s, first, last, grad
    ):
        """``grad = dL/dx`` for blocks ``first..last-1`` given ``dL/dI``, ``dL/dS`` (B, K);
        ``general`` as in :func:`_forward_kernel`."""
        label_m, has_lm, off_m, has_om = masks
        num_k = x.shape[1]
        scratch, more = _block_scratch(num_k, num_k + 2)
        e, z, py, a, u, lab, ones = scratch
        pg = more[:num_k]
        # p'^e for a non-integer e goes here, not into pg[k]: a loop that reads and writes
        # one array through two names fails the vectoriser's alias check (5x slower)
        powers = more[num_k]
        total = more[num_k + 1]
        for j in range(first, last):
            b, s0, n, _ = _block_terms(x, labels, w, has_w, gammas, label_m, has_lm, j, scratch)
            if sq == 2:  # a becomes s p'_y^(s-1) m p'_y: the label entry's factor of dL/dS
                for i in range(n):
                    a[i] = np.float32(2.0) * u[i] * py[i]
            else:
                for i in range(n):
                    a[i] = u[i]
            for i in range(n):
                total[i] = _ZERO  # sum_k p g (softmax backward)
            for k in range(num_k):
                kk = np.int32(k)
                gs = np.float32(g_s[b, k])
                gs_off = np.float32(sq * g_s[b, k])
                gl = np.float32(g_inter[b, k])
                slow, flags = _exponent_flags(gammas[k] + sq)
                om = off_m[b, k, s0 : s0 + n] if has_om else ones[:n]
                if general is None:
                    _class_grad_terms(
                        lab, kk, u, a, gl, gs, gs_off, e[k], z, flags, om, n, pg[k], total
                    )
                else:
                    _off_label_powers(e[k], z, powers, n, slow, flags, gammas[k] + sq)
                    one = _POWER_ONE
                    _class_grad_terms(
                        lab, kk, u, a, gl, gs, gs_off, powers, ones, one, om, n, pg[k], total
                    )
            for i in range(n):
                total[i] *= z[i]  # p' = e z: the z of the p in p sum_k p g
            for k in range(num_k):
                ek = e[k]
                tk = pg[k]
                out = grad[b, k, s0 : s0 + n]
                for i in range(n):
                    out[i] = tk[i] - ek[i] * total[i]

    @_kernel(nogil=True)
    def _topk_keep_kernel(error, group, count, first, last, out):
        """:func:`~napari_segloss.losses._topk.topk_keep` for rows ``first..last-1``: per row
        and group the ``count`` largest errors get 1, ties at the threshold share the
        remaining slots, everything else (and group ``G``, the excluded) 0.

        Three passes over a row: a histogram of the top 11 bits of every group's keys (the
        float32 bits: non-negative floats order like them; inf/NaN rank as the largest
        finite float), which locates the bin holding each group's threshold; the keys in those
        bins, partitioned for the exact threshold and its ties; the mask.
        """
        n = error.shape[1]
        num_g = count.shape[1]
        bins = 2048
        keys = np.empty(n, np.int32)
        hist = np.empty((num_g + 1, bins), np.int32)
        top = np.empty(num_g + 1, np.int32)  # the threshold's bin per group
        need = np.empty(num_g + 1, np.int64)  # how many to take inside that bin
        start = np.empty(num_g + 2, np.int64)  # the groups' slices of cand
        cand = np.empty(n, np.int32)
        thresh = np.empty(num_g + 1, np.int32)
        share = np.empty(num_g + 1, np.float32)
        for r in range(first, last):
            hist[:] = 0
            for i in range(n):
                bits = _parallel.reinterpret(error[r, i], np.int32)
                key = min(bits & np.int32(0x7FFFFFFF), 0x7F7FFFFF)
                keys[i] = key
                hist[group[r, i], key >> 20] += 1
            start[0] = 0
            for g in range(num_g + 1):
                c = np.int64(count[r, g]) if g < num_g else 0
                size = 0
                for d in range(bins):
                    size += hist[g, d]
                if c <= 0 or c >= size:  # nothing, or everything, is kept: no threshold
                    top[g] = -1
                    thresh[g] = np.int32(0x7FFFFFFF) if c <= 0 else np.int32(-1)
                    start[g + 1] = start[g]
                    continue
                above = 0
                d = bins - 1
                while above + hist[g, d] < c:
                    above += hist[g, d]
                    d -= 1
                top[g] = d
                need[g] = c - above
                start[g + 1] = start[g] + hist[g, d]
            fill = start[: num_g + 1].copy()
            for i in range(n):
                g = group[r, i]
                if keys[i] >> 20 == top[g]:
                    cand[fill[g]] = keys[i]
                    fill[g] += 1
            for g in range(num_g + 1):
                if top[g] < 0:
                    continue
                m = start[g + 1] - start[g]
                part = cand[start[g] : start[g + 1]]
                t = np.partition(part, m - need[g])[m - need[g]]
                n_above = 0
                n_tied = 0
                for j in range(m):
                    n_above += part[j] > t
                    n_tied += part[j] == t
                thresh[g] = t
                share[g] = np.float32(need[g] - n_above) / np.float32(n_tied)
            row = out[r]
            for i in range(n):
                g = group[r, i]
                t = thresh[g]
                key = keys[i]
                row[i] = _ONE if key > t else (share[g] if key == t else _ZERO)

    @_kernel(inline="always")
    def _label_log_prob_block(x, labels, gammas, weights, wb, b, s0, n, scratch):
        """Block ``s0 .. s0 + n`` of image ``b`` for the cross-entropy family: ``e`` the
        exponentials ``exp(x - max)``, ``rs = 1 / sum e``, ``lp = log p_t``, ``base =
        max(1 - p_t, TINY)`` (``1 - p_t`` as the sum of the other classes' shares: accurate
        when ``p_t`` is close to 1), ``pw = base^gamma_t`` and ``wt = weight_t w``; ``gt``
        the exponent ``gamma_t`` per pixel, filled only when the gammas differ by class."""
        e, m, rs, lp, base, pw, wt, gt, _, lab = scratch
        num_k = x.shape[1]
        _exponentials(x, labels, b, s0, n, lab, m, e)
        for i in range(n):
            rs[i] = _ZERO
            lp[i] = _ZERO  # x_t - max, for now
            base[i] = _ZERO  # sum of the other classes' exponentials, for now
        # one accumulator per loop: loops storing to several arrays fail the alias checks
        for k in range(num_k):
            ek = e[k]
            for i in range(n):
                rs[i] += ek[i]
        for k in range(num_k):
            xk = x[b, k, s0 : s0 + n]
            kk = np.int32(k)
            for i in range(n):
                lp[i] += xk[i] - m[i] if lab[i] == kk else _ZERO
        for k in range(num_k):
            ek = e[k]
            kk = np.int32(k)
            for i in range(n):
                base[i] += _ZERO if lab[i] == kk else ek[i]
        _per_label(weights, lab, n, wt)
        for i in range(n):
            lp[i] -= _log_positive(rs[i])
            rs[i] = _ONE / rs[i]
            base[i] = max(base[i] * rs[i], np.float32(_TINY))
            wt[i] *= wb[i]
        g0 = gammas[0]
        if _is_uniform(gammas):
            slow, flags = _exponent_flags(g0)
            gf = np.float32(g0)
            if slow:
                for i in range(n):
                    pw[i] = _power_unit(base[i], gf)
            else:
                for i in range(n):
                    pw[i] = _power_of(base[i], flags)
        else:
            _per_label(gammas, lab, n, gt)
            for i in range(n):
                pw[i] = _power_unit(base[i], gt[i])

    @_kernel(inline="always")
    def _ce_scratch(num_k):
        """e (K, block), m, rs, lp, base, pw, wt, gt, coef (float32), the int32 labels; ones."""
        ar = _arena(num_k + 10)
        r = num_k
        rows = (ar[r], ar[r + 1], ar[r + 2], ar[r + 3], ar[r + 4], ar[r + 5], ar[r + 6], ar[r + 7])
        return (ar[:num_k], *rows, ar[r + 8].view(np.int32)), ar[r + 9]

    @_kernel(nogil=True)
    def _pixel_loss_kernel(x, labels, w, has_w, gammas, weights, first, last, out):
        """``out[b, i] = -w_t (1 - p_t)^gamma_t log p_t`` (times validity) for blocks
        ``first..last-1``."""
        scratch, ones = _ce_scratch(x.shape[1])
        _, _, _, lp, _, pw, wt, _, _, _ = scratch
        for j in range(first, last):
            b, s0, n, wb = _block_at(j, x.shape[2], w, has_w, ones)
            _label_log_prob_block(x, labels, gammas, weights, wb, b, s0, n, scratch)
            row = out[b, s0 : s0 + n]
            for i in range(n):
                row[i] = -wt[i] * pw[i] * lp[i]

    @_kernel(nogil=True)
    def _pixel_loss_grad_kernel(x, labels, w, has_w, gammas, weights, g_out, first, last, grad):
        """``dL/dx`` of :func:`_pixel_loss_kernel` given ``dL/dout`` (B, N):
        ``dL/dx_k = g w_t A (p_k - [k = t])`` with ``A = base^g - g base^(g-1) p_t log p_t``
        (the second term only where ``1 - p_t`` is above the clamp, as autograd of the
        clamped expression gives)."""
        scratch, ones = _ce_scratch(x.shape[1])
        e, _, rs, lp, base, pw, wt, gt, coef, lab = scratch
        num_k = x.shape[1]
        uniform = _is_uniform(gammas)  # else the block has put gamma_t into gt
        g0 = np.float32(gammas[0])
        focal = not (uniform and g0 == _ZERO)
        for j in range(first, last):
            b, s0, n, wb = _block_at(j, x.shape[2], w, has_w, ones)
            _label_log_prob_block(x, labels, gammas, weights, wb, b, s0, n, scratch)
            go = g_out[b, s0 : s0 + n]
            if not focal:  # plain (weighted) cross-entropy: A = 1
                for i in range(n):
                    coef[i] = go[i] * wt[i]
            else:
                for i in range(n):
                    p_t = _ONE - base[i]
                    free = base[i] > np.float32(_TINY)
                    g_t = g0 if uniform else gt[i]
                    term = g_t * pw[i] / base[i] * p_t * lp[i] if free else _ZERO
                    coef[i] = go[i] * wt[i] * (pw[i] - term)
            for k in range(num_k):
                kk = np.int32(k)
                ek = e[k]
                out = grad[b, k, s0 : s0 + n]
                for i in range(n):  # p_k - [k = t], with 1 - p_t from the other classes
                    out[i] = coef[i] * (-base[i] if lab[i] == kk else ek[i] * rs[i])

    @_kernel(inline="always")
    def _combo_block(x, labels, b, s0, n, scratch):
        """Block ``s0 .. s0 + n`` of image ``b`` for Combo's weighted CE: ``e`` the
        exponentials ``exp(x - max)``, ``others[c] = sum_{j != c} e_j`` (prefix plus suffix
        sums: no cancellation when ``p_c`` is close to 1), ``l1m[c] = log(1 - p_c)``,
        ``lp = log p_y`` and ``rs = 1 / sum e``."""
        e, others, l1m, m, rs, lp, lab = scratch
        num_k = x.shape[1]
        _exponentials(x, labels, b, s0, n, lab, m, e)
        for i in range(n):
            lp[i] = _ZERO  # x_y - max, for now
        for k in range(num_k):
            xk = x[b, k, s0 : s0 + n]
            kk = np.int32(k)
            for i in range(n):
                lp[i] += xk[i] - m[i] if lab[i] == kk else _ZERO
        for i in range(n):
            rs[i] = _ZERO  # the prefix sum, then the total
            m[i] = _ZERO  # the max is no longer needed: the suffix sum
        for k in range(num_k):
            ek = e[k]
            ok = others[k]
            for i in range(n):
                ok[i] = rs[i]
            for i in range(n):
                rs[i] += ek[i]
        for k in range(num_k - 1, -1, -1):
            ek = e[k]
            ok = others[k]
            for i in range(n):
                ok[i] += m[i]
            for i in range(n):
                m[i] += ek[i]
        for i in range(n):
            m[i] = _log_positive(rs[i])  # m becomes log(sum e)
            lp[i] -= m[i]
            rs[i] = _ONE / rs[i]
        for k in range(num_k):
            ok = others[k]
            lk = l1m[k]
            for i in range(n):
                lk[i] = _log_positive(ok[i]) - m[i]

    @_kernel(inline="always")
    def _combo_scratch(num_k):
        """e, others, l1m, t (K, block), m, rs, lp, coef (float32), the int32 labels; ones."""
        ar = _arena(4 * num_k + 6)
        r = 4 * num_k
        planes = (ar[:num_k], ar[num_k : 2 * num_k], ar[2 * num_k : 3 * num_k])
        rows = (ar[r], ar[r + 1], ar[r + 2])
        scratch = (*planes, *rows, ar[r + 4].view(np.int32))
        return scratch, ar[3 * num_k : r], ar[r + 3], ar[r + 5]

    @_kernel(nogil=True)
    def _combo_ce_kernel(x, labels, w, has_w, beta, l1m_floor, first, last, out):
        """Combo's per-pixel weighted CE for integer labels,
        ``-(beta log p_y + (1 - beta) sum_{c != y} max(log(1 - p_c), l1m_floor))`` times
        the validity, for blocks ``first..last-1``."""
        num_k = x.shape[1]
        scratch, _, acc, ones = _combo_scratch(num_k)
        _, _, l1m, _, _, lp, lab = scratch
        bf = np.float32(beta)
        floor = np.float32(l1m_floor)
        for j in range(first, last):
            b, s0, n, wb = _block_at(j, x.shape[2], w, has_w, ones)
            _combo_block(x, labels, b, s0, n, scratch)
            for i in range(n):
                acc[i] = _ZERO
            for k in range(num_k):
                kk = np.int32(k)
                lk = l1m[k]
                for i in range(n):
                    acc[i] += _ZERO if lab[i] == kk else max(lk[i], floor)
            row = out[b, s0 : s0 + n]
            for i in range(n):
                row[i] = -(bf * lp[i] + (_ONE - bf) * acc[i]) * wb[i]

    @_kernel(nogil=True)
    def _combo_ce_grad_kernel(x, labels, w, has_w, beta, l1m_floor, g_out, first, last, grad):
        """``dL/dx`` of :func:`_combo_ce_kernel` given ``dL/dout`` (B, N). With
        ``D_c = -p_c / (1 - p_c)`` for the classes ``c != y`` above the floor (0 elsewhere):
        ``dL/dx_j = g w (beta (p_j - [j = y]) + (1 - beta) p_j (T_j + [D_j != 0]))``,
        ``T_j = sum_{c != j} D_c``. Written so that nothing cancels when a ``p_c`` is close
        to 1 (``D_c`` huge): ``T_j`` from prefix and suffix sums that leave ``D_j`` out,
        ``1 - p_y`` from the other classes' share."""
        num_k = x.shape[1]
        scratch, t_excl, coef, ones = _combo_scratch(num_k)
        e, others, d, run, rs, _, lab = scratch
        bf = np.float32(beta)
        floor = np.float32(l1m_floor)
        for j in range(first, last):
            b, s0, n, wb = _block_at(j, x.shape[2], w, has_w, ones)
            _combo_block(x, labels, b, s0, n, scratch)
            for k in range(num_k):  # d holds log(1 - p_c); it becomes D_c
                kk = np.int32(k)
                ek = e[k]
                ok = others[k]
                dk = d[k]
                for i in range(n):
                    free = dk[i] > floor and lab[i] != kk
                    dk[i] = -ek[i] / ok[i] if free else _ZERO
            for i in range(n):
                run[i] = _ZERO
            for k in range(num_k):  # T_j = sum of D_c, c != j: prefix ...
                dk = d[k]
                tk = t_excl[k]
                for i in range(n):
                    tk[i] = run[i]
                for i in range(n):
                    run[i] += dk[i]
            for i in range(n):
                run[i] = _ZERO
            for k in range(num_k - 1, -1, -1):  # ... plus suffix
                dk = d[k]
                tk = t_excl[k]
                for i in range(n):
                    tk[i] += run[i]
                for i in range(n):
                    run[i] += dk[i]
            go = g_out[b, s0 : s0 + n]
            for i in range(n):
                coef[i] = go[i] * wb[i]
            for k in range(num_k):
                kk = np.int32(k)
                ek = e[k]
                ok = others[k]
                dk = d[k]
                tk = t_excl[k]
                out = grad[b, k, s0 : s0 + n]
                for i in range(n):
                    p = ek[i] * rs[i]
                    hit = lab[i] == kk
                    ce = -ok[i] * rs[i] if hit else p  # p_j - [j = y]
                    off = p * (tk[i] + (_ONE if dk[i] != _ZERO else _ZERO))
                    out[i] = coef[i] * (bf * ce + (_ONE - bf) * off)


if njit is not None:

    @_kernel()
    def _dice_class_mean(parts, eps, batch, drop_background, skip_absent, mean, outs):
        """The class mean of ``1 - dsc_c``, ``dsc_c = (2 I_c + eps) / (S_c + Y_c + eps)``
        (PM-Dice eq. 5; eq. 4 for gamma 0), from the (parts, B, 4, K) sums of the Dice
        forward kernel, and its derivatives, into ``outs``: the per-image loss (B,) (``(1,)``
        with ``batch``) float32; its mean (``mean``) or sum, float32 (1,); and ``dL/dI``,
        ``dL/dS`` (B, K) float64 per unit of the loss's incoming gradient.

        A class enters the mean with weight 1 unless it is the dropped background or, with
        ``skip_absent``, has no label in the image (the batch with ``batch``); an image where
        none enters has loss 0 (mean over ``max(sum of weights, 1)``). ``batch`` sums I, S + Y
        + eps and the counts over the images first (:meth:`RegionLoss.class_mean` over
        :func:`label_dice`, the generic path: tested equal)."""
        loss, reduced, grad_i, grad_s = outs
        n_parts, b, _, k = parts.shape
        rows = 1 if batch else b
        inter = np.zeros((rows, k))
        den = np.zeros((rows, k))
        counts = np.zeros((rows, k))
        for i in range(b):
            r = 0 if batch else i
            for c in range(k):
                si = 0.0
                ss = 0.0
                sy = 0.0
                sn = 0.0
                for t in range(n_parts):  # in part order: the same sum on any threads
                    si += parts[t, i, 0, c]
                    ss += parts[t, i, 1, c]
                    sy += parts[t, i, 2, c]
                    sn += parts[t, i, 3, c]
                inter[r, c] += si
                den[r, c] += ss + sy + eps
                counts[r, c] += sn
        d_inter = np.empty((rows, k))
        d_s = np.empty((rows, k))
        total_loss = 0.0
        for r in range(rows):
            weights = np.ones(k)
            if drop_background:
                weights[0] = 0.0
            if skip_absent:
                for c in range(k):
                    weights[c] *= 1.0 if counts[r, c] > 0.0 else 0.0
            norm = max(weights.sum(), 1.0)
            total = 0.0
            for c in range(k):
                num = 2.0 * inter[r, c] + eps
                w = weights[c] / norm
                total += w * (1.0 - num / den[r, c])
                d_inter[r, c] = -2.0 * w / den[r, c]
                d_s[r, c] = w * num / (den[r, c] * den[r, c])
            loss[r] = np.float32(total)
            total_loss += np.float64(loss[r])
        scale = 1.0 / rows if mean else 1.0
        reduced[0] = np.float32(total_loss * scale)
        for i in range(b):
            r = 0 if batch else i
            for c in range(k):
                grad_i[i, c] = d_inter[r, c] * scale
                grad_s[i, c] = d_s[r, c] * scale


def _class_mean_outputs(b: int, k: int, batch: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The outputs of :func:`_dice_class_mean`, as tensors; the reduced loss is 0-d (the
    kernels write it through a (1,) view): a view returned by an autograd Function cannot
    be modified in place (``loss += other``)."""
    f4, f8 = torch.float32, torch.float64
    return (
        torch.empty(1 if batch else b, dtype=f4),
        torch.empty((), dtype=f4),
        torch.empty((b, k), dtype=f8),
        torch.empty((b, k), dtype=f8),
    )


def _as_written(outs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The class mean's outputs as the kernels take them: the 0-d reduced loss as (1,)."""
    loss, reduced, d_inter, d_s = outs
    return loss, reduced.view(1), d_inter, d_s


def dice_class_mean(
    parts: np.ndarray, eps: float, batch: bool, drop_background: bool, skip_absent: bool, mean: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """See :func:`_dice_class_mean` (numba: one call instead of a dozen numpy operations,
    each slow when it runs with cold caches, as at every training step)."""
    outs = _class_mean_outputs(parts.shape[1], parts.shape[3], batch)
    args = (eps, batch, drop_background, skip_absent, mean)
    _dice_class_mean(parts, *args, tuple(t.numpy() for t in _as_written(outs)))
    return outs


# ----- parallel regions (see ._parallel): the kernels' arguments unpacked from the job ------
#: argument specs: (dtype, ndim) of a tensor, int (or bool) or float for a scalar
_F4_1, _F4_2, _F4_3 = ((torch.float32, d) for d in (1, 2, 3))
_F8_1, _F8_2, _F8_4 = ((torch.float64, d) for d in (1, 2, 4))
_I8_2 = (torch.int64, 2)
_LABEL_INPUTS = (_F4_3, _I8_2, _F4_2, int)  # x, labels, w, has_w
_MASKS = (_F4_2, int, _F4_3, int)  # label_m, has_label_m, off_m, has_off_m
_DICE_INPUTS = (*_LABEL_INPUTS, _F8_1, int, *_MASKS)  # ... gammas, sq, masks

if njit is not None:

    @_kernel(inline="always")
    def _label_inputs(job):
        """``x, labels, w, has_w`` (arguments 0-3 of every label kernel)."""
        x = _parallel.array3(job, 0, np.float32)
        labels = _parallel.array2(job, 1, np.int64)
        return x, labels, _parallel.array2(job, 2, np.float32), _parallel.flag(job, 3)

    @_kernel(inline="always")
    def _dice_inputs(job):
        """The Dice kernels' ``x, labels, w, has_w, gammas, sq, masks`` (arguments 0-9)."""
        masks = (
            _parallel.array2(job, 6, np.float32),
            _parallel.flag(job, 7),
            _parallel.array3(job, 8, np.float32),
            _parallel.flag(job, 9),
        )
        gammas = _parallel.array1(job, 4, np.float64)
        return (*_label_inputs(job), gammas, _parallel.integer(job, 5), masks)

    @_kernel(inline="always")
    def _dice_forward_parts(data, general):
        pointer, job = _parallel.job_view(data)
        x, labels, w, has_w, gammas, sq, masks = _dice_inputs(job)
        args = (x, labels, w, has_w, gammas, sq, general, masks)
        out = _parallel.array4(job, 10, np.float64)
        _parallel.each_part_into_own_row(pointer, job, _forward_kernel, args, out)

    @_kernel(inline="always")
    def _dice_loss_parts(data, general):
        """The whole reduced Dice loss in one region: phase 0 the forward parts, then the
        thread that finishes the last one computes the class mean and its derivatives
        (:func:`_dice_class_mean`) and opens phase 1, the gradient for an incoming gradient
        of 1. Arguments: the Dice inputs (0-9), the part sums (10), eps, batch,
        drop_background, skip_absent, mean (11-15), the class mean's outputs (16-19), the
        gradient (20)."""
        pointer, job = _parallel.job_view(data)
        x, labels, w, has_w, gammas, sq, masks = _dice_inputs(job)
        args = (x, labels, w, has_w, gammas, sq, general, masks)
        part_sums = _parallel.array4(job, 10, np.float64)
        while True:
            t, first, last = _parallel.next_part(pointer, job)
            if t < 0:
                break
            _forward_kernel(*args, first, last, part_sums[t])
            if _parallel.finish_part(pointer, job):
                outs = (
                    _parallel.array1(job, 16, np.float32),
                    _parallel.array1(job, 17, np.float32),
                    _parallel.array2(job, 18, np.float64),
                    _parallel.array2(job, 19, np.float64),
                )
                flags = (_parallel.flag(job, 12), _parallel.flag(job, 13), _parallel.flag(job, 14))
                mean = _parallel.flag(job, 15)
                _dice_class_mean(part_sums, _parallel.real(job, 11), *flags, mean, outs)
                _parallel.open_phase_1(pointer)
        _parallel.wait_for_phase_1(pointer)
        coefficients = (
            _parallel.array2(job, 18, np.float64),
            _parallel.array2(job, 19, np.float64),
        )
        grad = _parallel.array3(job, 20, np.float32)
        _parallel.each_part(pointer, job, _backward_kernel, (*args, *coefficients), grad, 1)

    @_kernel(inline="always")
    def _dice_backward_parts(data, general):
        pointer, job = _parallel.job_view(data)
        x, labels, w, has_w, gammas, sq, masks = _dice_inputs(job)
        g_inter = _parallel.array2(job, 10, np.float64)
        g_s = _parallel.array2(job, 11, np.float64)
        args = (x, labels, w, has_w, gammas, sq, general, masks, g_inter, g_s)
        grad = _parallel.array3(job, 12, np.float32)
        _parallel.each_part(pointer, job, _backward_kernel, args, grad)

    @_kernel(inline="always")
    def _per_pixel_parts(data, kernel, tables, g_out):
        """A per-pixel kernel's parts: ``x, labels, w, has_w``, two per-class tables
        (``tables`` True) or two reals (None), the (B, N) ``g_out`` of a gradient kernel
        (``g_out`` True), the output. None/True: numba compiles each case alone."""
        pointer, job = _parallel.job_view(data)
        if tables is None:
            params = (_parallel.real(job, 4), _parallel.real(job, 5))
        else:
            params = (_parallel.array1(job, 4, np.float64), _parallel.array1(job, 5, np.float64))
        args = (*_label_inputs(job), *params)
        if g_out is None:
            _parallel.each_part(pointer, job, kernel, args, _parallel.array2(job, 6, np.float32))
        else:
            args_g = (*args, _parallel.array2(job, 6, np.float32))
            _parallel.each_part(pointer, job, kernel, args_g, _parallel.array3(job, 7, np.float32))


def _dice_forward_integer(data):
    _dice_forward_parts(data, None)


def _dice_forward_general(data):
    _dice_forward_parts(data, True)


def _dice_loss_integer(data):
    _dice_loss_parts(data, None)


def _dice_loss_general(data):
    _dice_loss_parts(data, True)


def _dice_backward_integer(data):
    _dice_backward_parts(data, None)


def _dice_backward_general(data):
    _dice_backward_parts(data, True)


def _pixel_loss(data):
    _per_pixel_parts(data, _pixel_loss_kernel, True, None)


def _pixel_loss_grad(data):
    _per_pixel_parts(data, _pixel_loss_grad_kernel, True, True)


def _combo_ce(data):
    _per_pixel_parts(data, _combo_ce_kernel, None, None)


def _combo_ce_grad(data):
    _per_pixel_parts(data, _combo_ce_grad_kernel, None, True)


def _topk_keep(data):
    pointer, job = _parallel.job_view(data)
    error = _parallel.array2(job, 0, np.float32)
    group = _parallel.array2(job, 1, np.int64)
    count = _parallel.array2(job, 2, np.float64)
    out = _parallel.array2(job, 3, np.float32)
    _parallel.each_part(pointer, job, _topk_keep_kernel, (error, group, count), out)


#: the Dice kernels' regions by their ``general`` argument (see :func:`_general`)
_DICE_FORWARD = {
    None: _parallel.Region(_dice_forward_integer, (*_DICE_INPUTS, _F8_4)),
    True: _parallel.Region(_dice_forward_general, (*_DICE_INPUTS, _F8_4)),
}
_DICE_BACKWARD = {
    None: _parallel.Region(_dice_backward_integer, (*_DICE_INPUTS, _F8_2, _F8_2, _F4_3)),
    True: _parallel.Region(_dice_backward_general, (*_DICE_INPUTS, _F8_2, _F8_2, _F4_3)),
}
_DICE_LOSS_SPEC = (*_DICE_INPUTS, _F8_4, float, int, int, int, int, _F4_1, _F4_1, _F8_2, _F8_2)
_DICE_LOSS = {
    None: _parallel.Region(_dice_loss_integer, (*_DICE_LOSS_SPEC, _F4_3)),
    True: _parallel.Region(_dice_loss_general, (*_DICE_LOSS_SPEC, _F4_3)),
}
_PIXEL_LOSS = _parallel.Region(_pixel_loss, (*_LABEL_INPUTS, _F8_1, _F8_1, _F4_2))
_PIXEL_LOSS_GRAD = _parallel.Region(_pixel_loss_grad, (*_LABEL_INPUTS, _F8_1, _F8_1, _F4_2, _F4_3))
_COMBO_CE = _parallel.Region(_combo_ce, (*_LABEL_INPUTS, float, float, _F4_2))
_COMBO_CE_GRAD = _parallel.Region(_combo_ce_grad, (*_LABEL_INPUTS, float, float, _F4_2, _F4_3))
_TOPK_KEEP = _parallel.Region(_topk_keep, (_F4_2, _I8_2, _F8_2, _F4_2))
_REGIONS = (*_DICE_FORWARD.values(), *_DICE_BACKWARD.values(), *_DICE_LOSS.values())
_REGIONS += (_PIXEL_LOSS, _PIXEL_LOSS_GRAD)
_REGIONS += (_COMBO_CE, _COMBO_CE_GRAD, _TOPK_KEEP)


def _run(region: _parallel.Region, total_blocks: int, n_pixels: int, *args) -> None:
    """``region`` over every block, on the threads :func:`._parallel.split` gives."""
    threads, parts = _parallel.split(total_blocks, n_pixels)
    region.run(threads, parts, total_blocks, *args)


def _per_pixel(region, x: Tensor, labels: Tensor, valid: Tensor | None, *params) -> Tensor:
    """Run a per-pixel loss region (arguments ``x, labels, w, has_w, *params, out``): the
    (B, N) float32 values."""
    b, _, n = x.shape
    out = torch.empty((b, n), dtype=torch.float32)
    _run(region, _blocks(x), b * n, *_label_args(x, labels, valid), *params, out)
    return out


def _per_pixel_grad(
    region, x: Tensor, labels: Tensor, valid: Tensor | None, g_out: Tensor, *params
) -> Tensor:
    """Run the gradient region of a per-pixel loss (arguments ``x, labels, w, has_w,
    *params, g_out, grad``): ``dL/dx`` (B, K, N) given ``dL/dout`` (B, N)."""
    b, _, n = x.shape
    grad = torch.empty(x.shape, dtype=torch.float32)
    go = g_out.detach().float().reshape(b, n).contiguous()
    _run(region, _blocks(x), b * n, *_label_args(x, labels, valid), *params, go, grad)
    return grad


def combo_pixel_ce(
    x: Tensor, labels: Tensor, valid: Tensor | None, beta: float, l1m_floor: float
) -> Tensor:
    """Combo's per-pixel weighted CE (B, N) for (B, K, N) logits and (B, 1, N) integer labels
    (see :func:`_combo_ce_kernel`)."""
    return _per_pixel(_COMBO_CE, x, labels, valid, float(beta), float(l1m_floor))


def combo_pixel_ce_grad(
    x: Tensor,
    labels: Tensor,
    valid: Tensor | None,
    beta: float,
    l1m_floor: float,
    g_out: Tensor,
) -> Tensor:
    """``dL/dx`` (B, K, N) of :func:`combo_pixel_ce` given ``dL/dout`` (B, N)."""
    return _per_pixel_grad(_COMBO_CE_GRAD, x, labels, valid, g_out, float(beta), float(l1m_floor))


def label_pixel_loss(
    x: Tensor,
    labels: Tensor,
    valid: Tensor | None,
    gammas: np.ndarray,
    weights: np.ndarray,
) -> Tensor:
    """Per-pixel ``-w_t (1 - p_t)^gamma_t log p_t`` (B, N) float32 (zero at ignored pixels)
    for (B, K, N) logits, (B, 1, N) integer labels, the (B, 1, N) validity, per-class
    ``gammas`` and ``weights`` (K,) float64: cross-entropy with gamma 0 and weights 1."""
    tables = torch.from_numpy(gammas), torch.from_numpy(weights)
    return _per_pixel(_PIXEL_LOSS, x, labels, valid, *tables)


def label_pixel_loss_grad(
    x: Tensor,
    labels: Tensor,
    valid: Tensor | None,
    gammas: np.ndarray,
    weights: np.ndarray,
    g_out: Tensor,
) -> Tensor:
    """``dL/dx`` (B, K, N) of :func:`label_pixel_loss` given ``dL/dout`` (B, N)."""
    tables = torch.from_numpy(gammas), torch.from_numpy(weights)
    return _per_pixel_grad(_PIXEL_LOSS_GRAD, x, labels, valid, g_out, *tables)


def topk_keep(error: Tensor, group: Tensor, count: Tensor) -> Tensor:
    """:func:`napari_segloss.losses._topk.topk_keep` (same arguments and result) with the
    numba kernel: a histogram and a partition per (row, group) instead of the radix passes."""
    r, n = error.shape
    out = torch.empty((r, n), dtype=torch.float32)
    inputs = (error.detach().float(), group.to(torch.int64), count.detach().double())
    _run(_TOPK_KEEP, r, r * n, *(t.contiguous() for t in inputs), out)  # a block is a row
    return out


#: stand-ins for absent optional inputs (the kernels read them only when told they exist)
_NO_MASK_2D = torch.ones(1, 1, dtype=torch.float32)
_NO_MASK_3D = torch.ones(1, 1, 1, dtype=torch.float32)


def _optional(t: Tensor | None, shape: tuple[int, ...]) -> tuple[Tensor, bool]:
    """``t`` as a contiguous float32 tensor of ``shape`` and True, or a stand-in and False."""
    if t is None:
        return (_NO_MASK_2D if len(shape) == 2 else _NO_MASK_3D), False
    return t.detach().reshape(shape).float().contiguous(), True


def _label_args(x: Tensor, labels: Tensor, valid: Tensor | None) -> tuple:
    """The label kernels' first arguments ``x, labels, w, has_w`` for (B, K, N) logits and
    (B, 1, N) labels and validity."""
    b, _, n = x.shape
    return (x.detach().contiguous(), labels.reshape(b, n).contiguous(), *_optional(valid, (b, n)))


def _blocks(x: Tensor) -> int:
    b, _, n = x.shape
    return b * ((n + _BLOCK - 1) // _BLOCK)


def class_table(
    value: float | Sequence[float] | Tensor | None, k: int, default: float = 0.0
) -> np.ndarray:
    """A per-class float64 table (K,) for the kernels (gamma, class weights): a scalar
    broadcast, one value per class (a sequence, or a (K,) CPU tensor read without a host
    sync), or ``default`` for None."""
    if value is None:
        return np.full(k, default)
    if isinstance(value, Tensor):
        return value.detach().double().numpy()
    if isinstance(value, int | float):
        return np.full(k, float(value))
    if len(value) != k:
        raise ValueError(f"need one value per class channel ({k}), got {len(value)}")
    return np.asarray(value, dtype=np.float64)


def _general(gammas: np.ndarray, sq: int) -> bool | None:
    """The Dice kernels' ``general`` argument: None when every off-label exponent
    ``gamma_k + s`` is an integer 0-4 (multiplications only), else True."""
    integer = all(float(g) + sq in (0.0, 1.0, 2.0, 3.0, 4.0) for g in gammas)
    return None if integer else True


@functools.lru_cache(maxsize=64)
def _gamma_terms(gamma: float | tuple[float, ...], k: int, sq: int) -> tuple[Tensor, bool | None]:
    """The per-class gamma table (K,) float64 and the ``general`` flag, cached: the same few
    settings come back at every training step."""
    gammas = class_table(gamma, k)
    return torch.from_numpy(gammas), _general(gammas, sq)


class LabelDicePass:
    """The kernel arguments of one label Dice / PM-Dice call, prepared once for its forward
    (:meth:`part_totals`) and its backward (:meth:`grad`): (B, K, N) logits, (B, 1, N)
    integer labels, an optional (B, 1, N) validity mask, ``m = |y - p|^gamma`` with one gamma
    or one per class, times the optional fixed masks ``label_m`` (B, 1, N) at the label
    entries and ``off_m`` (B, K, N) elsewhere; ``sq`` the power of ``p`` in S (1 or 2)."""

    def __init__(
        self,
        x: Tensor,
        labels: Tensor,
        valid: Tensor | None,
        gamma: float | Sequence[float] | Tensor,
        sq: int,
        label_m: Tensor | None = None,
        off_m: Tensor | None = None,
    ) -> None:
        b, k, n = x.shape
        if isinstance(gamma, int | float):
            gamma = float(gamma)
        else:  # one per class: a sequence, or a (K,) CPU tensor
            if isinstance(gamma, Tensor):
                gamma = gamma.detach()
            gamma = tuple(np.asarray(gamma, dtype=np.float64).reshape(-1).tolist())
        if isinstance(gamma, tuple) and len(gamma) != k:
            raise ValueError(f"need one value per class channel ({k}), got {len(gamma)}")
        gammas, general = _gamma_terms(gamma, k, sq)
        masks = (*_optional(label_m, (b, n)), *_optional(off_m, (b, k, n)))
        self.inputs = (*_label_args(x, labels, valid), gammas, sq, *masks)  # kept alive
        self.forward, self.backward = _DICE_FORWARD[general], _DICE_BACKWARD[general]
        self.whole = _DICE_LOSS[general]
        self.words = self.forward.arg_words(self.inputs)  # the same in both regions
        self.shape = (b, k, n)
        blocks = _blocks(x)
        self.split = (*_parallel.split(blocks, b * n), blocks)

    def part_totals(self) -> np.ndarray:
        """The sums (parts, B, 4, K) float64 of the parts the work was split into (add them
        in part order for a result that does not depend on the threads): ``I, S, Y`` of the
        eq. 5 form and the valid label count per class."""
        b, k, _ = self.shape
        out = torch.zeros((self.split[1], b, 4, k), dtype=torch.float64)
        self.forward.run(*self.split, out, packed=self.words)
        return out.numpy()

    def loss_and_grad(
        self, eps: float, batch: bool, drop_background: bool, skip_absent: bool, mean: bool
    ) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], Tensor]:
        """The outputs of :func:`dice_class_mean` and the gradient for an incoming gradient
        of 1, in one parallel region (:func:`_dice_loss_parts`): no Python, no second
        region start and no second trip through memory-cold code between the passes."""
        b, k, _ = self.shape
        part_sums = torch.zeros((self.split[1], b, 4, k), dtype=torch.float64)
        outs = _class_mean_outputs(b, k, batch)
        grad = torch.empty(self.shape, dtype=torch.float32)
        flags = (batch, drop_background, skip_absent, mean)
        args = (part_sums, float(eps), *flags, *_as_written(outs), grad)
        self.whole.run(*self.split, *args, packed=self.words)
        return outs, grad

    def grad(self, g_inter: Tensor, g_s: Tensor) -> Tensor:
        """``dL/dx`` (B, K, N) float32 from ``dL/dI`` and ``dL/dS`` (B, K)."""
        grad = torch.empty(self.shape, dtype=torch.float32)
        g = [t if t.dtype == torch.float64 else t.double() for t in (g_inter, g_s)]
        self.backward.run(*self.split, *(t.contiguous() for t in g), grad, packed=self.words)
        return grad


def label_dice_sums(
    x: Tensor,
    labels: Tensor,
    valid: Tensor | None,
    gamma: float | Sequence[float],
    sq: int,
    label_m: Tensor | None = None,
    off_m: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The eq. 5 sums of ``_SoftmaxHardLabelDice`` and the valid pixels per class as four
    (B, K) float32 tensors ``(I, S, Y, counts)`` (arguments as in :class:`LabelDicePass`)."""
    totals = LabelDicePass(x, labels, valid, gamma, sq, label_m, off_m).part_totals().sum(0)
    sums = torch.from_numpy(totals.astype(np.float32))
    return sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]


def label_dice_grad(
    x: Tensor,
    labels: Tensor,
    valid: Tensor | None,
    gamma: float | Sequence[float],
    sq: int,
    g_inter: Tensor,
    g_s: Tensor,
    label_m: Tensor | None = None,
    off_m: Tensor | None = None,
) -> Tensor:
    """``dL/dx`` (B, K, N) float32 from ``dL/dI`` and ``dL/dS`` (B, K) of
    :func:`label_dice_sums` (same inputs)."""
    return LabelDicePass(x, labels, valid, gamma, sq, label_m, off_m).grad(g_inter, g_s)


def _check_cache() -> None:
    """:func:`_drop_stale_cache` for the directory numba caches this module in (nothing on
    any error, a read-only install say: the worst case is then a stale cache, as without
    it)."""
    try:
        from numba.core.caching import FunctionCache

        cache_dir = Path(FunctionCache(_kernel).cache_path)  # numba creates it
        cache_dir.mkdir(parents=True, exist_ok=True)
        _drop_stale_cache(cache_dir, Path(_parallel.__file__))
    except Exception:  # a cache check must never break the import
        pass


if njit is not None:
    _check_cache()


def warm_up() -> None:
    """Compile (or load from numba's disk cache) every kernel with tiny inputs. The first
    compilation takes several seconds per kernel; :func:`start_warm_up` does it in the
    background so that the napari panels' first maps do not wait for it."""
    if not available():
        return
    x = torch.zeros(1, 2, 8)
    labels = torch.zeros(1, 1, 8, dtype=torch.int64)
    g = torch.zeros(1, 2)
    label_dice_sums(x, labels, None, 1.0, 2)
    label_dice_grad(x, labels, None, 1.0, 2, g, g)
    LabelDicePass(x, labels, None, 1.0, 2).loss_and_grad(1e-6, False, False, True, True)
    table = np.zeros(2)
    label_pixel_loss(x, labels, None, table, table)
    label_pixel_loss_grad(x, labels, None, table, table, torch.zeros(1, 8))
    combo_pixel_ce(x, labels, None, 0.5, -16.0)
    combo_pixel_ce_grad(x, labels, None, 0.5, -16.0, torch.zeros(1, 8))
    topk_keep(torch.zeros(1, 8), torch.zeros(1, 8, dtype=torch.int64), torch.ones(1, 1))


_warm_up_started = False
_warm_up_lock = threading.Lock()


def start_warm_up() -> None:
    """:func:`warm_up` once per process in a daemon thread (numba compiles without the GIL's
    help but off the caller's thread; a loss called meanwhile waits for the same compile)."""
    global _warm_up_started
    with _warm_up_lock:
        if _warm_up_started or not available():
            return
        _warm_up_started = True
    threading.Thread(target=warm_up, name="segloss-numba-warm-up", daemon=True).start()
