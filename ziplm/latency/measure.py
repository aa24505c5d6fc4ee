"""Measure a latency table: whole-model anchor timings (`ziplm.latency.anchors`) drawn into per-level times.

`measure_latency_table` times uniformly pruned whole models interleaved in rounds (each model's time is
the median over rounds of its ratio to the dense model in the same round), takes per-layer attention
and FFN times at the anchor levels, draws every level on straight lines between them, and times a few
uneven structures in the same rounds as the table's own predicted-vs-measured `self_check`. The
anchors are stored, so `refit_table` can draw the same measurements another way (`FITS`).

The environment (device, dtype, batch, sequence length, threads, engine) is part of the table's
fingerprint: a table is only valid in the environment it was measured in.
"""

from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from rich.progress import Progress
from torch import nn

from ziplm.core.latency import LatencyModel, LatencyTable
from ziplm.core.latency_fit import FittedCosts, fit_costs
from ziplm.core.latency_fit import monotone_times as monotone_times  # re-exported
from ziplm.latency.allocator import current_allocator
from ziplm.latency.anchors import check_choices, in_situ_times, mixed_choices, smooth_anchors, through_anchors
from ziplm.latency.engines import compiled_call, onnxruntime_call
from ziplm.latency.environment import DTYPE_NAMES as DTYPE_NAMES  # re-exported: their home is torch-free
from ziplm.latency.environment import ENGINES as ENGINES
from ziplm.latency.environment import Environment as Environment
from ziplm.models.registry import adapter_for

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}  # float32 | float16 | bfloat16
ANCHORS_PER_KIND = 7  # whole-model timings per sublayer kind: the fit's knots and its prior
CHECKS = 2  # uneven structures timed with the anchors: the table's own predicted-vs-measured check
MIXED = 12  # search-like mixed structures the per-level costs are fitted to (with the uniform anchors)
MEMBER_WEIGHT = 4  # a measured member counts as this many timed structures when a cached table learns from it
FIT_RIDGE = 1e-2  # pull of each fitted knot towards its anchor estimate (relative to the timings' scale)
ANCHOR_MODEL = "additive, whole-model anchors + smallest kept level, per-round ratios, anchors kept (v8)"
LATENCY_MODEL = "additive, fitted to uniform anchors and search-like mixed structures (v9)"
# How every level's time is drawn from the anchors: "lines" (straight lines between anchors: what tables use)
# or "quadratic" (a least-squares curve, kept to compare; benchmarks/LATENCY_NOTES.md has the A/B).
FITS: dict[str, Callable[[Sequence[int], Mapping[int, float]], dict[int, float]]] = {
    "quadratic": smooth_anchors,
    "lines": through_anchors,
}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_fingerprint(
    env: Environment,
    model: nn.Module,
    head_levels: Sequence[int],
    ffn_levels: Sequence[int],
    latency_model: str = LATENCY_MODEL,
) -> dict[str, Any]:
    """Everything a table's timings depend on, compared key by key on reuse (sdpa and eager attention differ)."""
    import transformers

    env.apply()
    fields = asdict(env)
    for key in ("warmup", "repetitions", "max_seconds_per_entry"):
        fields.pop(key)  # how carefully we measured, not what we measured
    return {
        **fields,
        "threads": torch.get_num_threads() if env.device == "cpu" else None,
        "allocator": current_allocator(),
        "device_name": device_name(env.device),
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "model_type": str(getattr(model.config, "model_type", "")),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "dims": adapter_for(model).dims(model).to_dict(),
        "head_levels": list(head_levels),
        "ffn_levels": list(ffn_levels),
        "latency_model": latency_model,
    }


def model_timer(model: nn.Module, env: Environment) -> Callable[[], object]:
    """A zero-argument call of the whole model, run by `env.engine`, on a random batch of the environment's shape.

    The call returns the model's outputs (a ``ModelOutput`` for eager/compile, a list of numpy arrays
    for onnxruntime). Building it may take long (compilation, export); calling it does only inference.
    """
    vocab = int(getattr(model.config, "vocab_size", 0))
    ids = torch.randint(0, vocab, (env.batch_size, env.seq_length))
    mask = torch.ones_like(ids)
    model = timing_copy(model, "cpu" if env.engine == "onnxruntime" else env.device, env.dtype)
    if env.engine == "onnxruntime":
        return onnxruntime_call(model, ids, mask, env)
    ids, mask = ids.to(env.device), mask.to(env.device)
    if env.engine == "compile":
        return compiled_call(model, ids, mask)
    return lambda: model(input_ids=ids, attention_mask=mask)


def timing_copy(model: nn.Module, device: str, dtype: str) -> nn.Module:
    """A copy of `model` in eval mode on `device` in `dtype`: what is timed. The caller's model is never
    moved, cast or switched to eval (timing the fp32 teacher in an fp16 environment once converted the
    teacher itself, and every member evaluated, saved and distilled after it)."""
    clone = copy.deepcopy(model)
    return clone.to(device=device, dtype=DTYPES[dtype]).eval()


def measure_latency_table(
    model: nn.Module,
    env: Environment,
    head_levels: Sequence[int],
    ffn_levels: Sequence[int],
    show_progress: bool = True,
    mixed: int | None = None,
) -> LatencyTable:
    """Per-level sublayer times as they cost *inside* the model (see `ziplm.latency.anchors`).

    Whole uniformly pruned models are timed interleaved at anchor levels, together with `mixed` structures
    shaped like a search's picks (`mixed_choices`); additive per-level costs are fitted to all of them
    (`ziplm.core.latency_fit`), with the anchor estimates as the fit's prior.
    ``mixed=0``: the anchors alone, on straight lines (the v8 table). Two further uneven structures are
    held out of the fit as the table's own predicted-vs-measured `self_check`.
    """
    env.validate()
    mixed = MIXED if mixed is None else mixed
    version = LATENCY_MODEL if mixed else ANCHOR_MODEL
    fingerprint = environment_fingerprint(env, model, head_levels, ffn_levels, latency_model=version)
    num_layers = adapter_for(model).dims(model).num_layers
    checks = check_choices(num_layers, head_levels, ffn_levels, CHECKS)
    fitted = mixed_choices(num_layers, head_levels, ffn_levels, mixed)
    rounds = max(5, env.repetitions)
    with Progress(disable=not show_progress, transient=True) as progress:
        progress.add_task(f"latency table: {len(fitted)} mixed structures + anchors x {rounds} rounds", total=None)
        base, attn_anchor, ffn_anchor, probes, extra_seconds = in_situ_times(
            model,
            head_levels,
            ffn_levels,
            lambda models: interleaved_medians(models, env, rounds),
            anchors_per_kind=ANCHORS_PER_KIND,
            checks=[*fitted, *checks],
        )
    fitted_seconds, check_seconds = extra_seconds[: len(fitted)], extra_seconds[len(fitted) :]
    attention, ffn = _curves(attn_anchor, ffn_anchor, head_levels, ffn_levels, "lines")
    metadata: dict[str, Any] = {
        "whole_model_probes": probes,
        "rounds": rounds,
        "anchors_per_kind": ANCHORS_PER_KIND,
        "anchors": {"attention": attn_anchor, "ffn": ffn_anchor},  # per-layer seconds: `refit_table`
    }
    if fitted:
        observed: list[tuple[Sequence[tuple[int, int]], float]] = [
            ([(int(p["heads"]), int(p["neurons"]))] * num_layers, float(p["seconds"])) for p in probes
        ]
        observed += zip(fitted, fitted_seconds, strict=True)
        attention, ffn, fit = _regression(observed, attn_anchor, ffn_anchor, head_levels, ffn_levels)
        metadata.update(fit)
    table = LatencyTable(environment=fingerprint, base_time=base, attention=attention, ffn=ffn, metadata=metadata)
    table.metadata["self_check"] = _self_check(table, checks, check_seconds)  # held out of the fit
    return table


def _regression(
    observed: Sequence[tuple[Sequence[tuple[int, int]], float]],
    attn_anchor: Mapping[int, float],
    ffn_anchor: Mapping[int, float],
    head_levels: Sequence[int],
    ffn_levels: Sequence[int],
) -> tuple[dict[int, float], dict[int, float], dict[str, Any]]:
    """Additive per-level times fitted to every timed structure, the anchors as the prior.

    The fit is additive so that the DP's budget is exact (a pick's predicted speedup meets its target); the
    mixed structures make the per-level costs what they cost in a search's mixtures. A fit with a
    width-change context cost is recorded beside it (``context_estimate``), to show how much of the
    mixtures' cost is not additive.
    """
    overhead = min(s for c, s in observed if all(h == 0 and m == 0 for h, m in c))
    prior = FittedCosts(overhead, dict(attn_anchor), dict(ffn_anchor), 0.0, 0.0, 0.0)
    fit = fit_costs(observed, list(attn_anchor), list(ffn_anchor), prior=prior, ridge=FIT_RIDGE, context=False)
    context = fit_costs(observed, list(attn_anchor), list(ffn_anchor), prior=prior, ridge=FIT_RIDGE)
    attention = _removal_free(monotone_times(fit.level_times(head_levels, "attention")))
    ffn = _removal_free(monotone_times(fit.level_times(ffn_levels, "ffn")))
    # As for anchors (`in_situ_times`): timing noise on a small model can make L·(dense blocks) exceed what
    # removing everything saves; only then shrink the fit to fit, so the table stays consistent.
    dense = [(c, s) for c, s in observed if all(h == max(head_levels) and m == max(ffn_levels) for h, m in c)]
    scale = 1.0
    if dense:
        layers, base = len(dense[0][0]), min(s for _, s in dense)
        raw = layers * (attention[max(head_levels)] + ffn[max(ffn_levels)])
        scale = min(1.0, (base - overhead) / raw) if raw > 0 and base > overhead else 1.0
    attention = {k: t * scale for k, t in attention.items()}
    ffn = {m: t * scale for m, t in ffn.items()}
    record = {
        "fit": "regression",
        "fit_residual": fit.residual,  # relative RMS error on the timed structures
        "context_estimate": {  # seconds per width change, if the model had such a term (not used to plan)
            "attention": context.context_attention,
            "ffn": context.context_ffn,
            "fit_residual": context.residual,
        },
        "observations": [{"choice": [list(layer) for layer in c], "seconds": s} for c, s in observed],
    }
    return attention, ffn, record


def learn(table: LatencyTable, timed: Sequence[tuple[Sequence[tuple[int, int]], float]]) -> LatencyTable:
    """`table` refitted with more timed structures ``(choice, measured speedup)`` — the members a run made —
    so a cached table predicts the next run's picks better. Members count `MEMBER_WEIGHT` times in the fit:
    they are exactly what the search picks. Tables without observations (v8) are returned unchanged."""
    observed = table.metadata.get("observations")
    anchors = table.metadata.get("anchors")
    if not isinstance(observed, list) or not isinstance(anchors, dict) or not timed:
        return table
    added = [{"choice": [list(layer) for layer in c], "seconds": table.base_time / s, "member": True} for c, s in timed]
    records = [*observed, *added]
    known = []
    for o in records:
        entry = ([(int(h), int(m)) for h, m in o["choice"]], float(o["seconds"]))
        known += [entry] * (MEMBER_WEIGHT if o.get("member") else 1)
    attn = {int(k): float(v) for k, v in anchors["attention"].items()}
    ffn_anchor = {int(k): float(v) for k, v in anchors["ffn"].items()}
    attention, ffn, fit = _regression(known, attn, ffn_anchor, list(table.attention), list(table.ffn))
    metadata = {**table.metadata, **fit, "observations": records, "learned_members": len(added)
                + int(table.metadata.get("learned_members", 0))}  # fmt: skip
    return LatencyTable(table.environment, table.base_time, attention, ffn, metadata)


def _curves(
    attn_anchor: Mapping[int, float],
    ffn_anchor: Mapping[int, float],
    head_levels: Sequence[int],
    ffn_levels: Sequence[int],
    fit: str,
) -> tuple[dict[int, float], dict[int, float]]:
    if fit not in FITS:
        raise ValueError(f"unknown latency fit {fit!r}; choose one of {sorted(FITS)}")
    draw = FITS[fit]
    attention = _removal_free(monotone_times(draw(head_levels, attn_anchor)))
    return attention, _removal_free(monotone_times(draw(ffn_levels, ffn_anchor)))


def refit_table(table: LatencyTable, fit: str) -> LatencyTable:
    """The same measurements drawn with another fit (same anchors, T_base and fingerprint), to compare fits.

    Raises:
        ValueError: the table holds no anchors (measured before v8), or the fit is unknown.
    """
    anchors = table.metadata.get("anchors")
    if not isinstance(anchors, dict):
        raise ValueError("this latency table stores no anchors (measured before v8); re-measure it to refit")
    attn = {int(k): float(v) for k, v in anchors["attention"].items()}
    ffn = {int(k): float(v) for k, v in anchors["ffn"].items()}
    attention, ffn_times = _curves(attn, ffn, list(table.attention), list(table.ffn), fit)
    return LatencyTable(
        environment=table.environment,
        base_time=table.base_time,
        attention=attention,
        ffn=ffn_times,
        metadata={**table.metadata, "fit": fit},
    )


def _self_check(
    table: LatencyTable, checks: Sequence[Sequence[tuple[int, int]]], seconds: Sequence[float]
) -> list[dict[str, Any]]:
    """Predicted vs measured speedup of the check structures; empty if the table is unusable.

    An inconsistent table (timing noise exceeding a tiny model's whole runtime) is not refused here:
    `LatencyModel` refuses it with its own message where it is used.
    """
    try:
        model = LatencyModel(table, len(checks[0]) if checks else 1)
    except ValueError:
        return []
    return [
        {
            "choice": [list(layer) for layer in c],
            "predicted_speedup": model.speedup(c),
            "measured_speedup": table.base_time / t,
        }
        for c, t in zip(checks, seconds, strict=True)
    ]


def _removal_free(times: dict[int, float]) -> dict[int, float]:
    """A removed sublayer costs nothing; noise must not make any kept level free or negative."""
    positive = [t for k, t in times.items() if k > 0 and t > 0]
    floor = min(positive) if positive else 1e-9
    return {k: 0.0 if k == 0 else max(t, floor) for k, t in times.items()}


def _relative_spread(samples: list[float]) -> float:
    """Interquartile range over the median (inf with fewer than 4 samples)."""
    if len(samples) < 4:
        return float("inf")
    q = statistics.quantiles(samples, n=4)
    return (q[2] - q[0]) / max(statistics.median(samples), 1e-12)


def seconds_timer(fn: Callable[[], object], device: str) -> Callable[[], float]:
    """Seconds of one call: CUDA events on GPU (no host-side noise), perf_counter on CPU."""
    if device.startswith("cuda"):

        def cuda_seconds() -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) / 1e3

        return cuda_seconds

    def cpu_seconds() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return cpu_seconds


def interleaved_samples(
    models: Sequence[nn.Module], env: Environment, rounds: int, target_spread: float = 0.02
) -> list[list[float]]:
    """Seconds per call of each model, timed interleaved (m1, m2, …, m1, m2, …): ``samples[model][round]``.

    Slow drift of the machine (thermal, other load) then hits all models of a round alike. Adaptive:
    after `rounds` rounds, more follow (up to 3×) while the spread of any model's time *relative to
    the first model in the same round* exceeds `target_spread`, unless the time cap
    (``env.max_seconds_per_entry`` per model) is spent.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    env.validate()
    env.apply()
    timers = [seconds_timer(model_timer(m, env), env.device) for m in models]
    samples: list[list[float]] = [[] for _ in timers]
    cap = env.max_seconds_per_entry * len(models)
    with torch.inference_mode():
        for fn in timers:  # warm-up
            for _ in range(max(1, env.warmup)):
                fn()
        started = time.perf_counter()
        for done in range(3 * rounds):
            for i, fn in enumerate(timers):
                samples[i].append(fn())
            ratios = [[t / r for t, r in zip(s, samples[0], strict=True)] for s in samples[1:]]
            settled = max((_relative_spread(r) for r in ratios), default=0.0) <= target_spread
            if done + 1 >= rounds and (settled or time.perf_counter() - started > cap):
                break
    return samples


def relative_to_first(samples: Sequence[Sequence[float]]) -> list[float]:
    """Each model's median over rounds of (its time / the first model's time in the same round).

    On a shared CPU single calls vary by ±15% over seconds (measured here); the ratio of two models
    timed back to back varies far less, so per-round ratios are what we summarise. (Ratios of
    separately taken medians were measured to put the dense time 15% off in a latency table.)
    """
    reference = samples[0]
    return [statistics.median(t / r for t, r in zip(s, reference, strict=True)) for s in samples]


def interleaved_medians(
    models: Sequence[nn.Module], env: Environment, rounds: int, target_spread: float = 0.02
) -> list[float]:
    """Drift-corrected seconds of each model: the first model's median × each one's relative time."""
    samples = interleaved_samples(models, env, rounds, target_spread)
    base = statistics.median(samples[0])
    return [base * r for r in relative_to_first(samples)]


def interleaved_speedups(dense: nn.Module, members: Sequence[nn.Module], env: Environment, rounds: int) -> list[float]:
    """Measured end-to-end speedup of each member over `dense`: median of per-round time ratios."""
    relative = relative_to_first(interleaved_samples([dense, *members], env, rounds))
    return [1.0 / r for r in relative[1:]]
