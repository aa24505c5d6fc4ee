"""Layer-by-layer calibration (SparseGPT-style): peak memory flat in depth.

Whole-model calibration (`ziplm.pruning.capture`) hooks the projections of every layer still to build, so
all their float64 Hessians (d×d per attention out-projection, d_ff×d_ff per FC2) live at once. Here the
inputs of the first transformer block are recorded once (hidden states plus whatever else the model passes
the block: masks, position ids or embeddings), then each block in turn is moved to the compute device,
fed the stored activations with the same statistics hooks (`statistics_hooks`), handed to `solve`, and
its outputs become the next block's inputs. Only one layer's Hessians exist at a time.

The levels describe the *dense* model, so the next block sees the dense block's outputs, as in a
whole-model pass; the statistics are the same up to float rounding. Nothing here knows a family: blocks
come from the adapter's ``layers(model)`` and are replayed with exactly the call the model made.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import Progress
from torch import nn
from transformers.cache_utils import Cache

from ziplm.models.adapter import Sublayer
from ziplm.models.registry import adapter_for
from ziplm.pruning.capture import ProjectionStats, collect_stats, projections, statistics_hooks

Solve = Callable[[int, dict[tuple[int, Sublayer], ProjectionStats]], None]
"""Called once per layer to build, with that layer's statistics, while its block is on the compute device."""


class _FirstBlockReached(Exception):
    """Raised by the first block's pre-hook: the recorded call is all this pass is for."""


@dataclass
class BlockCall:
    """One calibration batch as the blocks see it: the recorded call, and its padding mask for the hooks."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    token_mask: torch.Tensor | None  # (batch, seq), 1 = real token; None = every token counts

    @property
    def hidden(self) -> torch.Tensor:
        hidden = self.args[0] if self.args else self.kwargs["hidden_states"]
        assert isinstance(hidden, torch.Tensor)
        return hidden

    def replace_hidden(self, hidden: torch.Tensor) -> None:
        if self.args:
            self.args = (hidden, *self.args[1:])
        else:
            self.kwargs["hidden_states"] = hidden


def _move(value: Any, device: torch.device) -> Any:
    """Tensors inside `value` (tuples, lists, dicts of them: masks, rotary cos/sin) moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_move(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    return value


def _no_cache(value: Any) -> Any:
    """A key/value cache is the state of one generation, not an input: a replayed block gets None."""
    return None if isinstance(value, Cache) else value


def first_block_calls(
    model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]], device: torch.device
) -> list[BlockCall]:
    """Run each batch through the model up to its first block and record that block's call (on `device`).

    The part before the first block (embeddings, mask and rotary preparation) runs where the model is.
    """
    first = adapter_for(model).layers(model)[0]
    home = next(model.parameters()).device
    # A generation cache would be filled by the blocks during replay; ask for none where the model has one.
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    recorded: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        recorded.append((args, kwargs))
        raise _FirstBlockReached

    calls = []
    handle = first.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for cpu_batch in batches:
            with contextlib.suppress(_FirstBlockReached):
                model(**{k: v.to(home) for k, v in cpu_batch.items()}, **extra)
            if not recorded:
                raise RuntimeError(f"{type(model).__name__} never called its first transformer block")
            args, kwargs = recorded.pop()
            calls.append(
                BlockCall(
                    tuple(_move(_no_cache(a), device) for a in args),
                    {k: _move(_no_cache(v), device) for k, v in kwargs.items()},
                    cpu_batch.get("attention_mask"),
                )
            )
    finally:
        handle.remove()
    return calls


def _block_device(block: nn.Module) -> torch.device | None:
    param = next(block.parameters(), None)
    return None if param is None else param.device


def _forward(block: nn.Module, calls: list[BlockCall], modules: Mapping[str, nn.Module]) -> tuple[Any, Any]:
    """Every call through `block` with statistics hooks on `modules`; each call's hidden state is replaced
    by the block's output as soon as it is computed (no second copy of the activations)."""
    with statistics_hooks(modules) as (accumulators, energy, token_mask):
        for call in calls:
            token_mask.set(call.token_mask)
            out = block(*call.args, **call.kwargs)
            call.replace_hidden(out[0] if isinstance(out, tuple | list) else out)
    return accumulators, energy


def calibrate_layerwise(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    todo: Collection[int],
    solve: Solve,
    device: torch.device | str | None = None,
    show_progress: bool = True,
) -> None:
    """Calibrate the layers in `todo` one at a time, calling ``solve(layer, stats)`` for each.

    Layers before the last one in `todo` that are not in it (already in a resumed database) are only
    propagated through: one forward pass, no hooks, no solve. Each block runs on `device` (default: the
    model's) and goes back where it was afterwards; the rest of the model never moves.

    Raises:
        ValueError: if the calibration set is empty or holds no non-padding token.
    """
    if not batches:
        raise ValueError("the calibration set is empty: give at least one batch of calibration samples")
    if not todo:
        return
    blocks = adapter_for(model).layers(model)
    target = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with Progress(disable=not show_progress, transient=True) as progress:
            with torch.no_grad():
                calls = first_block_calls(model, batches, target)
            last = max(todo)
            task = progress.add_task("layer-wise calibration + OBS", total=last + 1)
            for layer in range(last + 1):
                block, home = blocks[layer], _block_device(blocks[layer])
                block.to(target)
                try:
                    keys = projections(model, [layer]) if layer in todo else {}
                    names = {key: f"{key[0]}.{key[1]}" for key in keys}
                    with torch.no_grad():
                        accumulators, energy = _forward(block, calls, {names[k]: m for k, m in keys.items()})
                    if layer in todo:
                        stats = collect_stats(names, accumulators, energy)
                        solve(layer, stats)
                        del stats, accumulators  # this layer's Hessians go before the next layer's come
                finally:
                    if home is not None:
                        block.to(home)
                progress.advance(task)
    finally:
        model.train(was_training)
