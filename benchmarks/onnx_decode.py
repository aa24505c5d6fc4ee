"""Per-token decode latency of the cached ONNX decoder vs torch eager, dense vs a ~2x pruned llama-mini.

Random weights (latency does not depend on them). The member removes 2 of the 4 KV groups and half the
SwiGLU neurons of every layer (about half the layer parameters; the 4096 x 256 embedding and LM head stay).
Each round times, interleaved in this process, a greedy decode of `--new` tokens after a `--prompt`-token
prompt at batch 1 for every (model, engine) pair; the prefill is excluded from the per-token figure.
Medians over rounds; a shared machine makes the numbers indicative.

    python benchmarks/onnx_decode.py                         # prompt 32, 64 new tokens, 1 thread, 7 rounds
    python benchmarks/onnx_decode.py --threads 2 --rounds 11
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ziplm.core.structure import Structure
from ziplm.deploy.onnx_decoder import empty_caches, export_decoder, sidecar_path
from ziplm.deploy.onnx_export import onnx_session
from ziplm.models import ModelSpec, adapter_for, build_model

# conf/model/llama-mini.yaml
LLAMA_MINI = ModelSpec(
    name="llama-mini", family="llama", source="scratch", hidden_size=256, num_layers=6, num_heads=8,
    num_key_value_heads=4, intermediate_size=688, vocab_size=4096, max_position_embeddings=128,
)  # fmt: skip


def half_member(model: nn.Module) -> nn.Module:
    """Keep KV groups 0-1 of 4 and every other SwiGLU neuron in every layer (~2x fewer layer parameters)."""
    dims = adapter_for(model).dims(model)
    layers = len(adapter_for(model).layers(model))
    heads = [list(range(dims.num_heads // 2))] * layers
    neurons = [list(range(0, dims.intermediate_size, 2))] * layers
    adapter_for(model).apply_structure(model, Structure.from_kept(dims, heads, neurons))
    return model


def torch_decoder(model: nn.Module, prompt: torch.Tensor, new: int) -> Callable[[], float]:
    """A timed greedy decode in torch eager with transformers' DynamicCache; returns decode seconds."""

    def run() -> float:
        with torch.no_grad():
            out = model(input_ids=prompt, use_cache=True)
            cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            start = time.perf_counter()
            for _ in range(new - 1):
                out = model(input_ids=token, cache=cache, use_cache=True)
                cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            return time.perf_counter() - start

    return run


def ort_decoder(path: Path, prompt: np.ndarray, new: int, threads: int) -> Callable[[], float]:
    """The same greedy decode through the exported graph in onnxruntime; returns decode seconds."""
    session = onnx_session(path, threads=threads)
    meta = json.loads(sidecar_path(path).read_text())
    presents = [name for name in meta["outputs"] if name.startswith("present.")]

    def step(feeds: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, dict]:
        feeds |= {"input_ids": ids, "attention_mask": mask}
        feeds["position_ids"] = np.arange(mask.shape[1] - ids.shape[1], mask.shape[1], dtype=np.int64)[None]
        logits, *cache = session.run(None, feeds)
        past = {n.replace("present.", "past_key_values."): t for n, t in zip(presents, cache, strict=True)}
        return np.argmax(logits[:, -1], axis=-1)[:, None].astype(np.int64), past

    def run() -> float:
        mask = np.ones_like(prompt)
        token, feeds = step(empty_caches(meta, 1), prompt, mask)
        start = time.perf_counter()
        for _ in range(new - 1):
            mask = np.concatenate([mask, np.ones_like(token)], axis=1)
            token, feeds = step(feeds, token, mask)
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dense = build_model(LLAMA_MINI, "lm").eval()
    member = half_member(build_model(LLAMA_MINI, "lm").eval())
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("dense", dense), ("2x", member))}
    prompt = torch.randint(0, 4096, (1, args.prompt))
    runs: dict[str, Callable[[], float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in (("dense", dense), ("2x", member)):
            path = export_decoder(model, Path(tmp) / name / "model.onnx")
            runs[f"{name} torch"] = torch_decoder(model, prompt, args.new)
            runs[f"{name} onnxruntime"] = ort_decoder(path, prompt.numpy(), args.new, args.threads)
        for run in runs.values():  # warm-up
            run()
        times: dict[str, list[float]] = {key: [] for key in runs}
        for _ in range(args.rounds):
            for key, run in runs.items():
                times[key].append(run() / (args.new - 1) * 1e3)
    print(f"batch 1, prompt {args.prompt}, {args.new} new tokens, {args.threads} thread(s), {args.rounds} rounds")
    print(f"parameters: dense {params['dense'] / 1e6:.2f} M, 2x member {params['2x'] / 1e6:.2f} M")
    base = statistics.median(times["dense torch"])
    for key, values in times.items():
        median = statistics.median(values)
        print(f"{key:>18}: {median:6.3f} ms/token (min {min(values):.3f}); {base / median:4.2f}x dense torch")


if __name__ == "__main__":
    main()
