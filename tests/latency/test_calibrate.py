"""Whole-model calibration of isolated sublayer timings."""

from __future__ import annotations

import pytest

from ziplm.latency.calibrate import fit_calibration, probe_configs

ATTENTION = {0: 0.0, 2: 1.0, 4: 2.0}
FFN = {0: 0.0, 32: 3.0, 64: 5.0}


def test_fit_recovers_intercept_and_scales() -> None:
    configs = probe_configs([4, 2, 0], [64, 32, 0])
    assert configs[0] == (4, 64) and (0, 0) in configs
    truth = [0.7 + 1.5 * 3 * ATTENTION[h] + 0.8 * 3 * FFN[m] for h, m in configs]
    fit = fit_calibration(configs, truth, ATTENTION, FFN, num_layers=3)
    assert (fit.intercept, fit.attention_scale, fit.ffn_scale) == pytest.approx((0.7, 1.5, 0.8))
    assert max(abs(p["relative_error"]) for p in fit.probes) < 1e-9


def test_fit_never_returns_non_positive_scales() -> None:
    configs = probe_configs([4, 2, 0], [64, 32, 0])
    # Attention time anti-correlated with measurement: a free fit would give it a negative scale.
    measured = [10.0 - 0.5 * ATTENTION[h] + 3 * FFN[m] for h, m in configs]
    fit = fit_calibration(configs, measured, ATTENTION, FFN, num_layers=3)
    assert fit.attention_scale > 0 and fit.ffn_scale > 0
