"""``ziplm smoke`` (and, until the pipeline issue lands, ``ziplm run``): an end-to-end check of what exists.

Builds the configured model, prunes it physically to a few structures (heads and FFN neurons kept by
weight norm, plus removed modules), saves each, reloads it offline and checks the reload is exact,
then prints a table. It proves the install, the config tree, the adapters and save/load work.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ziplm.core.structure import ModelDims, Structure
from ziplm.models import (
    adapter_for,
    build_model,
    build_tokenizer,
    count_parameters,
    get_output_weight,
    load_pruned,
    save_pruned,
)
from ziplm.pipelines.common import model_spec
from ziplm.pipelines.outputs import run_dir


def _norm_structure(model: torch.nn.Module, keep_fraction: float, drop_last_ffn: bool) -> Structure:
    """Keep the largest-norm heads/neurons per layer (a stand-in until OBS picks them)."""
    adapter = adapter_for(model)
    dims: ModelDims = adapter.dims(model)
    heads, neurons = [], []
    for i in range(dims.num_layers):
        w_attn = get_output_weight(adapter, model, i, "attention")
        head_norms = w_attn.reshape(w_attn.shape[0], dims.num_heads, dims.head_dim).norm(dim=(0, 2))
        k_heads = max(1, round(keep_fraction * dims.num_heads))
        heads.append(head_norms.topk(k_heads).indices.tolist())
        col_norms = get_output_weight(adapter, model, i, "ffn").norm(dim=0)
        k_neurons = max(1, round(keep_fraction * dims.intermediate_size))
        neurons.append(col_norms.topk(k_neurons).indices.tolist())
    if drop_last_ffn:
        neurons[-1] = []
    return Structure.from_kept(dims, heads, neurons)


def _sample_batch(cfg: DictConfig, vocab: int) -> dict[str, torch.Tensor]:
    from ziplm.data.builtin import train_texts  # a bpe: tokenizer trains on it; loads datasets, so only here

    try:
        tok = build_tokenizer(model_spec(cfg), cache_dir=str(cfg.cache_dir), corpus=train_texts)
        texts = [
            "ZipLM prunes heads and neurons.",
            "Inference-aware pruning meets a speedup target on your device.",
        ]
        batch = tok(texts, padding=True, return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    except (ImportError, ValueError, OSError):
        ids = torch.randint(0, vocab, (2, 16))
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def run_smoke(cfg: DictConfig) -> None:
    """Prune, save, reload and verify the configured model at a few sizes; print and save a table."""
    console = Console()
    out = run_dir(cfg)
    torch.manual_seed(cfg.seed)
    spec = model_spec(cfg)
    start = time.perf_counter()
    dense: Any = build_model(spec, "base").eval()
    batch = _sample_batch(cfg, dense.config.vocab_size)
    dense_params = count_parameters(dense)
    table = Table(title=f"ziplm smoke: {spec.name} ({spec.source})")
    for column in ("member", "heads kept", "neurons kept", "params", "% of dense", "reload exact"):
        table.add_column(column)
    rows = []
    for fraction in (1.0, 0.5, 0.25):
        model = build_model(spec, "base").eval() if fraction < 1.0 else dense
        structure = _norm_structure(model, fraction, drop_last_ffn=fraction < 0.5)
        adapter_for(model).apply_structure(model, structure)
        folder = save_pruned(model, structure, out / "family" / f"keep{fraction:g}")
        with torch.no_grad():
            exact = torch.equal(model(**batch).last_hidden_state, load_pruned(folder)(**batch).last_hidden_state)
        if not exact:
            raise RuntimeError(f"reloaded model in {folder} does not reproduce the saved model's outputs")
        params = count_parameters(model)
        row = {
            "member": folder.name,
            "heads_kept": sum(len(la.heads) for la in structure.layers),
            "neurons_kept": sum(len(la.neurons) for la in structure.layers),
            "params": params,
            "fraction_of_dense": params / dense_params,
            "reload_exact": exact,
        }
        rows.append(row)
        table.add_row(
            folder.name,
            str(row["heads_kept"]),
            str(row["neurons_kept"]),
            f"{params:,}",
            f"{100 * params / dense_params:.1f}",
            "yes",
        )
    (out / "smoke.json").write_text(json.dumps(rows, indent=2) + "\n")
    console.print(table)
    console.print(f"[green]smoke passed[/green] in {time.perf_counter() - start:.1f}s; outputs in {out}")
