"""ONNX export of a pruned causal-LM decoder *with its KV cache*, for users who do not have ziplm.

Why ONNX: transformers 5.24's ``per_layer_config`` cannot describe a member whose layers have their own
KV-head counts and FFN widths (Llama and Qwen2 raise ``AmbiguousGlobalPerLayerAttributeError``), so a
stock ``from_pretrained`` cannot rebuild it. An ONNX graph carries every layer's real shapes in its
weights, and onnxruntime runs it from numpy alone (see ``examples/onnx_generate.py``).

The interface is optimum's / onnxruntime-genai's, so existing ORT decoding loops fit:

* inputs ``input_ids``, ``attention_mask`` (batch x (past + sequence)), ``position_ids`` where the family
  takes them (all supported decoders do), and per *kept* attention layer ``past_key_values.{i}.key`` /
  ``.value`` of shape (batch, kv_heads_i, past_sequence, head_dim_i);
* outputs ``logits`` and ``present.{i}.key`` / ``.value`` (the past with this call's tokens appended).

A layer whose attention was removed has **no** cache tensors (``i`` keeps the model's layer numbering, so
names have gaps): inside the graph its placeholder cache (ziplm's ``RemovedCachedAttention`` writes one
zero per token so transformers reads the right length from layer 0) is rebuilt from the attention mask's
length, and its present is dropped. A loop therefore allocates exactly what the sidecar JSON lists.

Exporter: the dynamo one (``torch.onnx.export(..., dynamo=True)``), tracing transformers' own forward with
a ``DynamicCache`` built from the flat past tensors by a wrapper module; the mask's length is declared as
``past_sequence + sequence`` so all axes (batch, sequence, past) stay dynamic.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ziplm.deploy.onnx_export import _check_exportable, _quiet_exporter, _vocab_size, onnx_session, save_program
from ziplm.models.surgery import RemovedCachedAttention

SIDECAR_SUFFIX = ".json"  # model.onnx -> model.onnx.json
FORMAT = "ziplm-onnx-decoder/1"
EXAMPLE_BATCH, EXAMPLE_SEQ, EXAMPLE_PAST = 2, 3, 4  # >= 2 each: torch.export specialises axes of size 0 and 1


class OnnxDecodeError(RuntimeError):
    """The exported decoder's greedy tokens or step logits disagree with PyTorch's."""


def sidecar_path(onnx_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: the description a decoding loop reads."""
    path = Path(onnx_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def is_causal_lm(model: nn.Module) -> bool:
    """Whether `model` is a causal LM (``...ForCausalLM``, GPT-2's ``LMHeadModel``), what this module exports."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return type(model).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def cache_layout(model: nn.Module) -> list[tuple[int, int] | None]:
    """Per layer, ``(kv_heads, head_dim)`` of its cache, or None where the attention was removed.

    Read from one cached forward pass, so every family (GPT-2's pruned heads, Llama's KV groups, OPT) is
    measured the same way rather than re-derived from its modules.
    """
    removed = {m.layer_idx for m in model.modules() if isinstance(m, RemovedCachedAttention)}
    ids = torch.zeros(1, 2, dtype=torch.long)
    with torch.no_grad():
        cache = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).cache
    shapes = [(int(layer.keys.shape[1]), int(layer.keys.shape[3])) for layer in cache.layers]
    return [None if i in removed else shape for i, shape in enumerate(shapes)]


def io_names(layout: list[tuple[int, int] | None], position_ids: bool) -> tuple[list[str], list[str]]:
    """Graph input and output names for a cache layout (optimum naming; removed layers have none)."""
    kept = [i for i, shape in enumerate(layout) if shape is not None]
    inputs = ["input_ids", "attention_mask"] + (["position_ids"] if position_ids else [])
    inputs += [f"past_key_values.{i}.{kv}" for i in kept for kv in ("key", "value")]
    outputs = ["logits"] + [f"present.{i}.{kv}" for i in kept for kv in ("key", "value")]
    return inputs, outputs


def takes_position_ids(model: nn.Module) -> bool:
    return "position_ids" in inspect.signature(model.forward).parameters


def positions(mask: np.ndarray, new: int) -> np.ndarray:
    """Position ids of the last `new` tokens as ``generate`` computes them: count of real tokens so far - 1
    (padding gets 1), so left-padded rows start at 0."""
    pos = np.cumsum(mask, axis=1) - 1
    pos = np.where(mask == 0, 1, pos)
    return pos[:, -new:].astype(np.int64)


class _CachedSignature(nn.Module):
    """Positional ``(input_ids, attention_mask, [position_ids], *pasts) -> (logits, *presents)``."""

    def __init__(self, model: nn.Module, layout: list[tuple[int, int] | None], position_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.layout = layout
        self.position_ids = position_ids

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *rest: torch.Tensor) -> tuple[Any, ...]:
        from transformers import DynamicCache

        extra: dict[str, Any] = {}
        if self.position_ids:
            extra["position_ids"], rest = rest[0], rest[1:]
        past = iter(rest)
        batch, past_length = input_ids.shape[0], attention_mask.shape[1] - input_ids.shape[1]
        data = []
        for shape in self.layout:
            if shape is None:  # what RemovedCachedAttention would have cached: one zero per token
                zeros = attention_mask.new_zeros(batch, 1, past_length, 1, dtype=torch.float32)
                data.append((zeros, zeros))
            else:
                data.append((next(past), next(past)))
        cache = DynamicCache(ddp_cache_data=data)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, cache=cache, use_cache=True, **extra)
        presents = []
        for i, shape in enumerate(self.layout):
            if shape is not None:
                presents += [out.cache.layers[i].keys, out.cache.layers[i].values]
        return (out.logits, *presents)


def _example(model: nn.Module, layout: list[tuple[int, int] | None], position_ids: bool) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, _vocab_size(model), (EXAMPLE_BATCH, EXAMPLE_SEQ), generator=generator)
    mask = torch.ones(EXAMPLE_BATCH, EXAMPLE_PAST + EXAMPLE_SEQ, dtype=torch.long)
    tensors = [ids, mask]
    if position_ids:
        tensors.append(torch.from_numpy(positions(mask.numpy(), EXAMPLE_SEQ)))
    for shape in layout:
        if shape is not None:
            # Two distinct tensors: passing one object twice would let the trace tie values to keys.
            tensors += [torch.randn(EXAMPLE_BATCH, shape[0], EXAMPLE_PAST, shape[1], generator=generator) for _ in "kv"]
    return tuple(tensors)


def sidecar(model: nn.Module, layout: list[tuple[int, int] | None], position_ids: bool) -> dict[str, Any]:
    """What a loop needs to drive the graph without ziplm: names, per-layer cache shapes, special tokens."""
    config = model.config  # type: ignore[union-attr]
    generation = getattr(model, "generation_config", None)
    inputs, outputs = io_names(layout, position_ids)

    def token(key: str) -> Any:
        value = getattr(generation, key, None)
        return value if value is not None else getattr(config, key, None)

    layers = []
    for i, shape in enumerate(layout):
        entry: dict[str, Any] = {"layer": i, "attention": "removed" if shape is None else "kept"}
        if shape is not None:
            entry |= {"num_key_value_heads": shape[0], "head_dim": shape[1]}
            entry |= {"past_key": f"past_key_values.{i}.key", "past_value": f"past_key_values.{i}.value"}
            entry |= {"present_key": f"present.{i}.key", "present_value": f"present.{i}.value"}
        layers.append(entry)
    return {
        "format": FORMAT,
        "model_type": getattr(config, "model_type", None),
        "architecture": type(model).__name__,
        "dtype": "float32",
        "vocab_size": _vocab_size(model),
        "num_layers": len(layout),
        "max_position_embeddings": getattr(config, "max_position_embeddings", getattr(config, "n_positions", None)),
        "bos_token_id": token("bos_token_id"),
        "eos_token_id": token("eos_token_id"),
        "pad_token_id": token("pad_token_id"),
        "inputs": inputs,
        "outputs": outputs,
        "position_ids": "cumsum(attention_mask) - 1, 1 where masked" if position_ids else None,
        "cache_axes": ["batch", "num_key_value_heads", "past_sequence", "head_dim"],
        "removed_attention": "layers with attention 'removed' have no cache inputs or outputs",
        "layers": layers,
    }


def export_decoder(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write `model` (a CPU float32 ``...ForCausalLM``, pruned or dense) as a cached ONNX decoder plus the
    sidecar ``<path>.json``; returns the ``.onnx`` path. Weights above 2 GB go to ``<name>.data``."""
    if not is_causal_lm(model):
        raise ValueError(f"{type(model).__name__} is not a causal LM; the cached ONNX decoder takes ...ForCausalLM")
    _check_exportable(model, 2)
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a directory; pass the path of the .onnx file to write")
    model = model.eval()
    layout = cache_layout(model)
    with_positions = takes_position_ids(model)
    signature = _CachedSignature(model, layout, with_positions).eval()
    inputs, outputs = io_names(layout, with_positions)
    batch, seq, past = torch.export.Dim("batch"), torch.export.Dim("sequence"), torch.export.Dim("past_sequence")
    total = torch.export.Dim("total_sequence")
    rest: list[dict[int, Any]] = [{0: batch, 1: seq}] if with_positions else []
    rest += [{0: batch, 2: past} for name in inputs if name.startswith("past_key_values.")]
    shapes = ({0: batch, 1: seq}, {0: batch, 1: total}, tuple(rest))  # the wrapper's *rest is one argument
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            signature,
            _example(model, layout, with_positions),
            dynamo=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=shapes,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    meta = json.dumps(sidecar(model, layout, with_positions), indent=2) + "\n"
    save_program(program, target, {sidecar_path(target).name: meta})
    return target


def empty_caches(meta: dict[str, Any], batch: int) -> dict[str, np.ndarray]:
    """Zero-length past tensors for every kept layer, allocated from the sidecar alone."""
    caches = {}
    for layer in meta["layers"]:
        if layer["attention"] == "kept":
            shape = (batch, layer["num_key_value_heads"], 0, layer["head_dim"])
            caches[layer["past_key"]] = caches[layer["past_value"]] = np.zeros(shape, dtype=np.float32)
    return caches


def ort_greedy(
    session: Any, meta: dict[str, Any], ids: np.ndarray, mask: np.ndarray, new_tokens: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy decoding through the cache in onnxruntime: the prompt in one call, then one token per call.

    Returns:
        ``prompt + new tokens`` (batch x (prompt + new_tokens)) and each step's last-position logits.
    """
    feeds = empty_caches(meta, ids.shape[0])
    presents = [name for name in meta["outputs"] if name.startswith("present.")]
    tokens, step = ids.astype(np.int64), ids.astype(np.int64)
    mask = mask.astype(np.int64)
    scores = []
    for _ in range(new_tokens):
        feeds |= {"input_ids": step, "attention_mask": mask}
        if meta["position_ids"]:
            feeds["position_ids"] = positions(mask, step.shape[1])
        logits, *cached = session.run(None, feeds)
        scores.append(logits[:, -1])
        step = np.argmax(logits[:, -1], axis=-1).astype(np.int64)[:, None]
        tokens = np.concatenate([tokens, step], axis=1)
        mask = np.concatenate([mask, np.ones_like(step)], axis=1)
        feeds = {name.replace("present.", "past_key_values."): t for name, t in zip(presents, cached, strict=True)}
    return tokens, scores


def verify_decoder(
    model: nn.Module, path: str | os.PathLike[str], new_tokens: int = 8, prompt_length: int = 6, atol: float = 1e-4
) -> float:
    """Greedy-decode `new_tokens` in onnxruntime through the cache and compare with PyTorch's ``generate``
    (same tokens, each step's logits within `atol`) on a batch of 2 whose second row is left-padded.

    Returns:
        The largest absolute difference of the step logits.

    Raises:
        OnnxDecodeError: the graph does not match the sidecar, the tokens differ, or the logits by > `atol`.
    """
    file = Path(path)
    if not sidecar_path(file).is_file():
        raise FileNotFoundError(f"{sidecar_path(file)} does not exist; write the decoder with export_decoder")
    meta = json.loads(sidecar_path(file).read_text())
    session = onnx_session(file)
    graph = {i.name: i.shape for i in session.get_inputs()}
    if [i.name for i in session.get_inputs()] != meta["inputs"]:
        raise OnnxDecodeError(f"{file} inputs {list(graph)}, its sidecar lists {meta['inputs']}")
    for layer in meta["layers"]:
        if layer["attention"] == "kept":
            shape = graph[layer["past_key"]]
            if [shape[1], shape[3]] != [layer["num_key_value_heads"], layer["head_dim"]]:
                raise OnnxDecodeError(f"{file}: {layer['past_key']} has shape {shape}, the sidecar says {layer}")
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, _vocab_size(model), (2, prompt_length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, : prompt_length // 2] = 0
    generation: Any = copy.deepcopy(model.generation_config)
    greedy = {"max_new_tokens": new_tokens, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    generation.update(**greedy, output_logits=True, return_dict_in_generate=True)  # no eos stop, as the ORT loop
    with torch.no_grad():
        out = model.generate(ids, attention_mask=mask, generation_config=generation)  # type: ignore[operator]
    tokens, scores = ort_greedy(session, meta, ids.numpy(), mask.numpy(), new_tokens)
    want = out.sequences.numpy()
    diffs = [float(np.max(np.abs(g - w.numpy()))) for g, w in zip(scores, out.logits, strict=True)]
    worst = max(diffs)
    if not np.isfinite(worst) or worst > atol:
        raise OnnxDecodeError(f"{file}: step logits differ from PyTorch by {worst:.3g} (atol {atol:g})")
    if not np.array_equal(tokens, want):
        raise OnnxDecodeError(f"{file}: onnxruntime decoded {tokens.tolist()}, PyTorch generate {want.tolist()}")
    return worst
