"""Greedy generation from a ``ziplm export`` decoder folder with numpy and onnxruntime only (no torch, no ziplm).

A pruned Llama/Qwen2/OPT/GPT-2 member has layers with their own KV-head counts and FFN widths, which stock
transformers cannot rebuild; its ONNX export carries those shapes, and ``model.onnx.json`` (the sidecar)
lists each layer's cache so this loop can allocate it. Layers whose attention was removed have no cache.

    python examples/onnx_generate.py <export folder> --prompt "The cat" --max-new-tokens 32
    python examples/onnx_generate.py <export folder> --ids 464 3797 --ignore-eos --json

Text needs ``tokenizer.json`` in the folder (written by ``ziplm export`` when the member has one) and the
``tokenizers`` package; ``--ids`` needs neither.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def load(folder: Path, threads: int | None = None) -> tuple[ort.InferenceSession, dict]:
    """The ONNX session of ``folder/model.onnx`` and its sidecar."""
    meta = json.loads((folder / "model.onnx.json").read_text())
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return session, meta


def empty_cache(meta: dict, batch: int) -> dict[str, np.ndarray]:
    """Zero-length past for each kept layer: (batch, kv_heads, 0, head_dim), float32."""
    feeds = {}
    for layer in meta["layers"]:
        if layer["attention"] == "kept":
            shape = (batch, layer["num_key_value_heads"], 0, layer["head_dim"])
            feeds[layer["past_key"]] = feeds[layer["past_value"]] = np.zeros(shape, dtype=np.float32)
    return feeds


def generate(session: ort.InferenceSession, meta: dict, ids: list[int], new_tokens: int, stop: bool) -> list[int]:
    """Greedy decoding of one prompt: the prompt in one call, then one token per call through the cache."""
    eos = meta.get("eos_token_id")
    eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    presents = [name for name in meta["outputs"] if name.startswith("present.")]
    step = np.asarray([ids], dtype=np.int64)
    mask = np.ones_like(step)
    feeds = empty_cache(meta, 1)
    out: list[int] = []
    for _ in range(new_tokens):
        feeds |= {"input_ids": step, "attention_mask": mask}
        if meta["position_ids"]:  # a single unpadded row: positions past .. past + len - 1
            feeds["position_ids"] = np.arange(mask.shape[1] - step.shape[1], mask.shape[1], dtype=np.int64)[None]
        logits, *cache = session.run(None, feeds)
        token = int(np.argmax(logits[0, -1]))
        out.append(token)
        if stop and token in eos_ids:
            break
        step = np.asarray([[token]], dtype=np.int64)
        mask = np.concatenate([mask, np.ones_like(step)], axis=1)
        feeds = {name.replace("present.", "past_key_values."): t for name, t in zip(presents, cache, strict=True)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder with model.onnx and model.onnx.json")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text (needs tokenizer.json in the folder)")
    source.add_argument("--ids", type=int, nargs="+", help="prompt token ids")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--ignore-eos", action="store_true", help="always decode --max-new-tokens tokens")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the new token ids as JSON")
    args = parser.parse_args(argv)
    if not (args.folder / "model.onnx.json").is_file():
        print(f"error: {args.folder} has no model.onnx.json; export a decoder with `ziplm export`", file=sys.stderr)
        return 2
    session, meta = load(args.folder, args.threads)
    tokenizer = None
    if args.prompt is not None:
        from tokenizers import Tokenizer

        if not (args.folder / "tokenizer.json").is_file():
            print(f"error: {args.folder} has no tokenizer.json; pass --ids instead of --prompt", file=sys.stderr)
            return 2
        tokenizer = Tokenizer.from_file(str(args.folder / "tokenizer.json"))
        ids = tokenizer.encode(args.prompt, add_special_tokens=False).ids
    else:
        ids = args.ids
    start = time.perf_counter()
    new = generate(session, meta, ids, args.max_new_tokens, stop=not args.ignore_eos)
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({"prompt_ids": ids, "new_ids": new}))
    else:
        print(tokenizer.decode(ids + new) if tokenizer else " ".join(map(str, ids + new)))
        print(f"{len(new)} tokens in {seconds:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
