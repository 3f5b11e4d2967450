"""Per-class sums of one-channel (binary) outputs, from the single channel.

A binary output is two region classes, background ``(1 - y, q)`` and foreground ``(y, p)``
with ``p = sigmoid(x)`` and ``q = sigmoid(-x)`` (both exact, no ``1 - p``). Both classes have
the same error ``e = |y - p|``, so every per-class sum of the Dice, Tversky and WSDice
families is a sum over one (B, 1, *spatial) tensor: no two-channel probabilities, no one-hot
target, no index arithmetic. Each function returns the same (B, 2) sums, class 0 the
background, as its general counterpart in :mod:`.functional`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .inputs import BinaryParts, power


def _sum(x: Tensor) -> Tensor:
    """(B, 1, *sp) -> (B,) float32 sum over the pixels."""
    return x.flatten(1).sum(1)


def _pair(bg: Tensor, fg: Tensor) -> Tensor:
    """Two per-image sums (B,) -> (B, 2), background first."""
    return torch.stack([bg, fg], dim=1)


def binary_error(parts: BinaryParts) -> Tensor:
    """``|y - p|`` as ``|y q - (1 - y) p|``: ``q`` at ``y = 1``, ``p`` at ``y = 0`` exactly."""
    y, p, q = parts.target, parts.prob, parts.complement
    return (y * q - (1.0 - y) * p).abs()


def binary_dice_sums(
    parts: BinaryParts,
    gamma: float | Tensor,
    squared: bool,
    overlap: bool,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(err, den, y_sum, overlap)`` of :func:`.functional.dice_sums`, each (B, 2).

    ``gamma``: a float or ``[gamma_BG, gamma_FG]``; ``mask`` (B, 2, *sp) constant modulation
    (TopK Dice), background channel first."""
    y, p, q, valid = parts
    y_bg = 1.0 - y if valid is None else (1.0 - y) * valid
    e = binary_error(parts)
    with torch.no_grad():
        g_bg, g_fg = (gamma[0], gamma[1]) if isinstance(gamma, Tensor) else (gamma, gamma)
        base = e.detach()
        m_bg = None if _is_zero(g_bg) else power(base, g_bg)
        m_fg = m_bg if g_fg is g_bg else (None if _is_zero(g_fg) else power(base, g_fg))
        m_bg, m_fg = (_times(m, valid) for m in (m_bg, m_fg))
        if mask is not None:
            m_bg, m_fg = _times(m_bg, mask[:, :1]), _times(m_fg, mask[:, 1:])
    if squared:
        err_px = e.square()
        den_bg, den_fg = y_bg.square() + q.square(), y.square() + p.square()
    else:  # y + p - 2 y p = y q + (1 - y) p, the same for both classes
        err_px = y * q + (1.0 - y) * p
        den_bg, den_fg = y_bg + q, y + p
    err = _pair(_sum(_times(err_px, m_bg)), _sum(_times(err_px, m_fg)))
    den = _pair(_sum(_times(den_bg, m_bg)), _sum(_times(den_fg, m_fg)))
    y_sum = _pair(_sum(y_bg), _sum(y))
    both = None
    if overlap:
        both = 2.0 * _pair(_sum(_times(y_bg * q, m_bg)), _sum(_times(y * p, m_fg)))
    return err, den, y_sum, both


def binary_tversky_sums(parts: BinaryParts) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(TP, FP, FN, y_sum)`` of :func:`.functional.tversky_sums`, each (B, 2): the
    background's false positives are the foreground's false negatives and vice versa."""
    y, p, q, valid = parts
    if valid is not None:
        p, q = p * valid, q * valid
    y_bg = 1.0 - y if valid is None else (1.0 - y) * valid
    tp_fg, fp_fg, fn_fg = _sum(y * p), _sum(y_bg * p), _sum(y * q)
    return (
        _pair(_sum(y_bg * q), tp_fg),
        _pair(fn_fg, fp_fg),
        _pair(fp_fg, fn_fg),
        _pair(_sum(y_bg), _sum(y)),
    )


def binary_wsdice_sums(parts: BinaryParts, v1: float, v2: float) -> tuple[Tensor, Tensor]:
    """``(err, den)`` of :func:`.functional.wsdice_sums` for both classes, each (B, 2)."""
    y, p, q, valid = parts
    e2 = binary_error(parts).square()
    out_err, out_den = [], []
    for t, prob in ((1.0 - y, q), (y, p)):  # background, foreground
        w = t * (v2 - v1) + v1
        if valid is not None:
            w = w * valid
        w2 = w.square()
        out_err.append(4.0 * _sum(w2 * e2))
        out_den.append(_sum(w2 * ((2.0 * prob - 1.0).square() + (2.0 * t - 1.0).square())))
    return _pair(*out_err), _pair(*out_den)


def _is_zero(g: float | Tensor) -> bool:
    return not isinstance(g, Tensor) and g == 0.0


def _times(x: Tensor | None, factor: Tensor | None) -> Tensor | None:
    """``x * factor`` where either may be None (meaning 1)."""
    if factor is None:
        return x
    return factor if x is None else x * factor
