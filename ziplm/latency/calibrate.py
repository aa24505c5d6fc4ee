"""Calibrating isolated sublayer timings against whole-model timings.

A sublayer timed alone runs with its weights hot in cache and without its neighbours' per-op
overheads, so a plain sum of isolated times mispredicts whole pruned models (measured on this CPU:
8–80% off). We therefore time a handful of uniformly pruned *whole* models and fit

    T(model) = a + s_attn · Σ_l t_attn(h_l) + s_ffn · Σ_l t_ffn(m_l)

by least squares; the table keeps the isolated *shape* of each curve and the fitted scales, and its
T_base comes from the same interleaved timing rounds. Raw timings and the fit stay in the metadata.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ziplm.core.structure import Structure
from ziplm.models.registry import adapter_for


@dataclass(frozen=True)
class Calibration:
    """Fitted correction: intercept (s) and one scale per sublayer kind; residuals per probe."""

    intercept: float
    attention_scale: float
    ffn_scale: float
    probes: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "intercept": self.intercept,
            "attention_scale": self.attention_scale,
            "ffn_scale": self.ffn_scale,
            "probes": self.probes,
        }


def _nearest(levels: Sequence[int], fraction: float) -> int:
    dense = max(levels)
    return min(levels, key=lambda k: abs(k - fraction * dense))


def probe_configs(head_levels: Sequence[int], ffn_levels: Sequence[int]) -> list[tuple[int, int]]:
    """Uniform (kept heads, kept neurons) settings that span both axes, dense first."""
    h, f = max(head_levels), max(ffn_levels)
    configs = [(h, f)]
    configs += [(_nearest(head_levels, x), f) for x in (2 / 3, 1 / 3, 0.0)]
    configs += [(h, _nearest(ffn_levels, x)) for x in (2 / 3, 1 / 3, 0.0)]
    configs += [(_nearest(head_levels, 0.5), _nearest(ffn_levels, 0.5)), (0, 0)]
    return list(dict.fromkeys(configs))


def uniform_model(model: nn.Module, heads: int, neurons: int) -> nn.Module:
    """A copy of `model` with every layer keeping its first `heads` heads and `neurons` neurons."""
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    pruned = copy.deepcopy(model)
    structure = Structure.from_kept(dims, [range(heads)] * dims.num_layers, [range(neurons)] * dims.num_layers)
    adapter.apply_structure(pruned, structure)
    return pruned


def fit_calibration(
    configs: Sequence[tuple[int, int]],
    measured: Sequence[float],
    attention: dict[int, float],
    ffn: dict[int, float],
    num_layers: int,
) -> Calibration:
    """Least-squares fit of intercept and per-kind scales; falls back to one common scale, then to none,
    whenever a fitted scale would not be positive (too few or too noisy probes)."""
    p_attn = np.array([num_layers * attention[h] for h, _ in configs])
    p_ffn = np.array([num_layers * ffn[m] for _, m in configs])
    y = np.asarray(measured, dtype=np.float64)
    a, s_attn, s_ffn = np.linalg.lstsq(np.stack([np.ones_like(y), p_attn, p_ffn], 1), y, rcond=None)[0]
    if s_attn <= 0 or s_ffn <= 0:
        a, s = np.linalg.lstsq(np.stack([np.ones_like(y), p_attn + p_ffn], 1), y, rcond=None)[0]
        s_attn = s_ffn = s if s > 0 else 1.0
        if s <= 0:
            a = float(np.median(y - p_attn - p_ffn))
    predicted = a + s_attn * p_attn + s_ffn * p_ffn
    probes = [
        {"heads": h, "neurons": m, "measured": float(t), "fitted": float(p), "relative_error": float(p / t - 1)}
        for (h, m), t, p in zip(configs, y, predicted, strict=True)
    ]
    return Calibration(float(a), float(s_attn), float(s_ffn), probes)
