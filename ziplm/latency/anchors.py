"""Per-layer sublayer times measured inside the whole model: the anchors of a latency table.

`in_situ_times` times whole models in which *every* layer has the same attention level (FFN dense) or
the same FFN level (attention dense), plus the dense model and the model with everything prunable
removed, all interleaved in the same rounds. With L layers and a removed sublayer costing nothing,

    t_attn(k) = (T(all attention at k) − T(all attention removed)) / L,

what that level costs inside the model; likewise for FFN levels. These anchors are taken at a few
levels (`anchor_levels`: always 0, the smallest kept level and the dense level) and `through_anchors`
draws every other level on straight lines between them. `smooth_anchors` (a least-squares curve) and
`interpolate_with_shape` are kept only to compare against; why they are not used, and the other latency
models that were tried, is in benchmarks/LATENCY_NOTES.md.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from ziplm.core.latency import level_time
from ziplm.core.structure import Structure
from ziplm.models.registry import adapter_for


def anchor_levels(levels: Sequence[int], count: int) -> list[int]:
    """About `count` levels spread evenly over the sorted grid, always with 0, the smallest kept level
    and the dense level.

    The smallest kept level is always measured: going from "removed" to "one head" pays the sublayer's
    fixed costs (LayerNorm, residual, projections' launch), so interpolating from 0 undercounts it
    (MiniLM, batch 32, per layer: 2 heads 16.9 ms, 4 heads 21.9 ms — most of a small level is fixed).
    """
    ordered = sorted(set(levels))
    if len(ordered) <= count:
        return ordered
    step = (len(ordered) - 1) / (count - 1)
    picked = {ordered[round(i * step)] for i in range(count)}
    positive = [k for k in ordered if k > 0]
    if positive:
        picked.add(positive[0])
    return sorted(picked)


def uniform_model(model: nn.Module, heads: int, neurons: int) -> nn.Module:
    """A copy of `model` with every layer keeping its first `heads` heads and `neurons` neurons."""
    layers = adapter_for(model).dims(model).num_layers
    return mixed_model(model, [(heads, neurons)] * layers)


def mixed_model(model: nn.Module, choice: Sequence[tuple[int, int]]) -> nn.Module:
    """A copy of `model` whose layer l keeps its first ``choice[l] = (heads, neurons)``."""
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    pruned = copy.deepcopy(model)
    structure = Structure.from_kept(dims, [range(h) for h, _ in choice], [range(m) for _, m in choice])
    adapter.apply_structure(pruned, structure)
    return pruned


def check_choices(
    num_layers: int, head_levels: Sequence[int], ffn_levels: Sequence[int], count: int, seed: int = 0
) -> list[list[tuple[int, int]]]:
    """Uneven per-layer structures (some sublayers removed) like a search picks, to test the table on.

    Uniform anchors cannot reveal non-additivity between layers of different widths; these can.
    """
    rng = random.Random(seed)
    heads, ffn = sorted(set(head_levels) | {0}), sorted(set(ffn_levels) | {0})
    choices = []
    for _ in range(count):
        choices.append(
            [
                (rng.choice(heads) if rng.random() > 0.2 else 0, rng.choice(ffn) if rng.random() > 0.2 else 0)
                for _ in range(num_layers)
            ]
        )
    return choices


def mixed_choices(
    num_layers: int, head_levels: Sequence[int], ffn_levels: Sequence[int], count: int, seed: int = 1
) -> list[list[tuple[int, int]]]:
    """Structures like a search's picks, to fit the table on: dense layers beside small and removed ones.

    SPDY's picks are extreme mixtures (MiniLM 3x: FFN 80 of 1536 next to 1244, 3 heads next to 11); random
    uniform draws rarely are. Each layer here is dense, removed or at a level drawn log-uniformly (small
    levels as often as large ones), so the fit sees the width changes a search makes.
    """
    rng = random.Random(seed)
    heads, ffn = sorted(set(head_levels) - {0}), sorted(set(ffn_levels) - {0})

    def level(levels: list[int]) -> int:
        draw = rng.random()
        if draw < 0.25:
            return levels[-1]
        if draw < 0.4:
            return 0
        return min(levels, key=lambda k: abs(k - levels[-1] ** rng.random()))

    return [[(level(heads), level(ffn)) for _ in range(num_layers)] for _ in range(count)]


def interpolate_with_shape(isolated: Mapping[int, float], anchors: Mapping[int, float]) -> dict[int, float]:
    """Values at every level of `isolated`: exact at anchors, following the isolated curve in between."""
    points = sorted(anchors)
    result = {}
    for level in sorted(isolated):
        upper = min((a for a in points if a >= level), default=points[-1])
        lower = max((a for a in points if a <= level), default=points[0])
        if upper == lower:
            result[level] = anchors[lower]
            continue
        span = isolated[upper] - isolated[lower]
        frac = (isolated[level] - isolated[lower]) / span if span > 0 else (level - lower) / (upper - lower)
        result[level] = anchors[lower] + min(max(frac, 0.0), 1.0) * (anchors[upper] - anchors[lower])
    return result


def through_anchors(levels: Sequence[int], anchors: Mapping[int, float]) -> dict[int, float]:
    """Every level's time on straight lines between the anchors (exact at each: noise included).

    `level_time` is the project's one interpolation of table times (the search uses it too); the anchors
    always include the grid's ends (`anchor_levels`), so every level lies between two of them."""
    return {k: level_time(anchors, k) for k in sorted(levels)}


def smooth_anchors(levels: Sequence[int], anchors: Mapping[int, float], degree: int = 2) -> dict[int, float]:
    """Every level's per-layer time from a least-squares polynomial in the kept count through the anchors
    of kept levels (exact at the dense level; a removed sublayer keeps its anchor, 0).

    Not what tables use (measured worse than `through_anchors`: benchmarks/LATENCY_NOTES.md).

    With fewer than ``degree + 2`` kept anchors nothing would be averaged: straight lines between them.
    """
    kept = sorted(k for k in anchors if k > 0)
    if len(kept) < degree + 2:
        return through_anchors(levels, anchors)
    dense = kept[-1]
    x = torch.tensor(kept, dtype=torch.float64) / dense
    y = torch.tensor([anchors[k] for k in kept], dtype=torch.float64)
    weight = torch.where(x == 1.0, 1e3, 1.0)  # ~exact at the dense level
    powers = torch.stack([x**p for p in range(degree + 1)], dim=1)
    coef = torch.linalg.lstsq(powers * weight[:, None], (y * weight)[:, None]).solution[:, 0]

    def poly(k: int) -> float:
        return float(sum(c * (k / dense) ** p for p, c in enumerate(coef.tolist())))

    return {k: float(anchors.get(0, 0.0)) if k == 0 else poly(k) for k in levels}


def in_situ_times(
    model: nn.Module,
    head_levels: Sequence[int],
    ffn_levels: Sequence[int],
    time_models: Callable[[list[nn.Module]], list[float]],
    anchors_per_kind: int = 8,
    checks: Sequence[Sequence[tuple[int, int]]] = (),
) -> tuple[float, dict[int, float], dict[int, float], list[dict[str, float]], list[float]]:
    """Whole-model anchor timings.

    Args:
        time_models: returns the median seconds of each model (timed interleaved, first = dense).
        checks: per-layer (heads, neurons) structures timed in the same rounds, to validate the table.

    Returns:
        (T_base, per-layer attention time at anchor levels, FFN likewise, the raw probe records,
        the seconds of each check structure).
    """
    dims = adapter_for(model).dims(model)
    dense_h, dense_f = max(head_levels), max(ffn_levels)
    attn_anchors = anchor_levels([*head_levels, 0], anchors_per_kind)
    ffn_anchors = anchor_levels([*ffn_levels, 0], anchors_per_kind)
    configs = [(dense_h, dense_f)]
    configs += [(k, dense_f) for k in attn_anchors if k != dense_h]
    configs += [(dense_h, m) for m in ffn_anchors if m != dense_f]
    configs.append((0, 0))  # everything prunable removed: the overhead, measured rather than inferred
    models = [uniform_model(model, h, m) for h, m in configs] + [mixed_model(model, c) for c in checks]
    seconds = time_models(models)
    measured = dict(zip(configs, seconds[: len(configs)], strict=True))
    layers = dims.num_layers
    attention = {k: (measured[(k, dense_f)] - measured[(0, dense_f)]) / layers for k in attn_anchors}
    ffn = {m: (measured[(dense_h, m)] - measured[(dense_h, 0)]) / layers for m in ffn_anchors}
    # Small models have a small overhead, so timing noise can make L·(t_attn + t_ffn) exceed what
    # removing everything saves, T_base − T(all removed): the table would be inconsistent. Only then
    # shrink both curves to fit. (Always rescaling to that total was measured to overpredict speedups
    # by ~10% on MiniLM at batch 32: removing both sublayers saves less than the sum of each.)
    prunable = measured[(dense_h, dense_f)] - measured[(0, 0)]
    raw = layers * (attention[dense_h] + ffn[dense_f])
    scale = min(1.0, prunable / raw) if raw > 0 and prunable > 0 else 1.0
    attention = {k: t * scale for k, t in attention.items()}
    ffn = {m: t * scale for m, t in ffn.items()}
    probes = [{"heads": h, "neurons": m, "seconds": t} for (h, m), t in measured.items()]
    return measured[(dense_h, dense_f)], attention, ffn, probes, list(seconds[len(configs) :])
