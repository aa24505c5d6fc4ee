"""Save and load physically pruned models as self-describing folders, with no network.

Folder layout (written to a temporary sibling and renamed into place, so a failed save leaves
nothing half-written):
    model.safetensors   weights of the pruned (smaller) model
    config.json         the HF config of the *dense* architecture + ``ziplm_structure``
    ziplm.json          manifest: format version, family, architecture, weights checksum, totals
    structure.md        human-readable per-layer table: heads kept, neurons kept, removed, params
    (tokenizer files)   when a tokenizer is given

Why not stock ``from_pretrained``: transformers 5's ``per_layer_config`` is rejected by BERT/GPT-2
(their layers read global dims, raising AmbiguousGlobalPerLayerAttributeError), head counts cannot be
expressed because head_dim is derived from hidden/num_heads, and removed sublayers have no config form.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import transformers
from torch import nn
from transformers import AutoConfig
from transformers.initialization import no_init_weights

from ziplm.core.structure import Structure
from ziplm.models.adapter import STRUCTURE_CONFIG_KEY, adapter_parameter_counts, current_structure
from ziplm.models.registry import adapter_for, adapter_for_family

FORMAT = "ziplm-pruned-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
MANIFEST = "ziplm.json"
STRUCTURE_TABLE = "structure.md"
REQUIRED_FILES = (WEIGHTS, "config.json", MANIFEST)
SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def count_encoder_parameters(model: nn.Module) -> int:
    """Parameters of the Transformer layers alone (no embeddings, no task head): what CoFi and the ZipLM
    paper count as a model's size."""
    from ziplm.models.registry import adapter_for

    layers = adapter_for(model).layers(model)
    return sum(p.numel() for p in {id(p): p for p in layers.parameters()}.values())


def _state(removed: bool) -> str:
    return "removed" if removed else "kept"


def _structure_table(structure: Structure, counts: list[dict[str, int]], unit: str = "heads") -> str:
    """`unit` names what the structure's attention "heads" are for this family (GQA: whole KV groups)."""
    dims = structure.dims
    lines = [
        "# Pruned structure",
        "",
        f"Dense: {dims.num_layers} layers, {dims.num_heads} {unit} x {dims.head_dim} columns, "
        f"FFN {dims.intermediate_size}, hidden {dims.hidden_size}. Ids are the dense model's.",
        "",
        f"| layer | {unit} kept | {unit} ids | neurons kept | attention | ffn | attention params | ffn params |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, (layer, count) in enumerate(zip(structure.layers, counts, strict=True)):
        lines.append(
            f"| {i} | {len(layer.heads)}/{dims.num_heads} | {list(layer.heads)} | "
            f"{len(layer.neurons)}/{dims.intermediate_size} | "
            f"{_state(layer.attention_removed)} | {_state(layer.ffn_removed)} | "
            f"{count['attention']:,} | {count['ffn']:,} |"
        )
    return "\n".join(lines) + "\n"


def _manifest(model: nn.Module, structure: Structure, family: str, weights_sha: str) -> dict[str, Any]:
    adapter = adapter_for_family(family)
    counts = adapter_parameter_counts(adapter, model, structure)
    dense = adapter_parameter_counts(adapter, model, Structure.dense(structure.dims))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family,
        "architecture": type(model).__name__,
        "weights_sha256": weights_sha,
        "parameters": count_parameters(model),
        "prunable_parameters": sum(c["attention"] + c["ffn"] for c in counts),
        "prunable_parameters_dense": sum(c["attention"] + c["ffn"] for c in dense),
        "heads_kept": [len(la.heads) for la in structure.layers],
        "neurons_kept": [len(la.neurons) for la in structure.layers],
    }


def _model_dtype(model: nn.Module) -> torch.dtype:
    floating = [p.dtype for p in model.parameters() if p.is_floating_point()]
    return floating[0] if floating else torch.float32


def save_pruned(
    model: Any,
    structure: Structure,
    directory: str | os.PathLike[str],
    tokenizer: Any = None,
    dtype: str | None = None,
) -> Path:
    """Write a pruned model folder atomically; returns its path.

    Args:
        model: an HF model whose surgery state is `structure` (checked); never moved or cast.
        structure: the structure the model carries (`apply_structure` records it).
        directory: destination; an existing ziplm folder there is replaced, anything else refused.
        tokenizer: optional HF tokenizer saved alongside, so the folder is self-contained.
        dtype: weights' dtype on disk (``float32`` | ``bfloat16`` | ``float16``; default: the model's own),
            recorded in ``ziplm.json`` and used by `load_pruned`. A model on a GPU or in another dtype is
            written from a CPU copy.
    """
    if dtype is not None and dtype not in SAVE_DTYPES:
        raise ValueError(f"unknown save dtype {dtype!r}; choose one of {sorted(SAVE_DTYPES)}")
    own = _model_dtype(model)
    wanted = SAVE_DTYPES[dtype] if dtype is not None else own
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    if not on_cpu or own != wanted:
        model = copy.deepcopy(model).to(device="cpu", dtype=wanted)
    adapter = adapter_for(model)
    carried = current_structure(model, adapter.dims(model))
    if carried != structure:
        raise ValueError(
            "the structure passed to save_pruned is not the one this model carries; "
            "apply it first with adapter.apply_structure(model, structure)"
        )
    target = Path(directory)
    if target.exists() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise FileExistsError(f"{target} exists and is not a ziplm model folder; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        safetensors.torch.save_model(model, str(tmp / WEIGHTS))
        model.config.save_pretrained(tmp)  # HF config: dense dims + ziplm_structure
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        manifest = _manifest(model, structure, adapter.family, _sha256(tmp / WEIGHTS))
        manifest["dtype"] = str(wanted).removeprefix("torch.")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        counts = adapter_parameter_counts(adapter, model, structure)
        unit = getattr(adapter, "attention_unit", "heads")
        (tmp / STRUCTURE_TABLE).write_text(_structure_table(structure, counts, unit))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _read_manifest(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory; expected a folder written by ziplm.models.save_pruned")
    if not (folder / MANIFEST).is_file():
        raise ValueError(
            f"{folder} is not a ziplm model folder (no {MANIFEST}); save one with ziplm.models.save_pruned"
        )
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} is a partial ziplm model folder: missing {missing}; save it again")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / MANIFEST} is corrupt ({err}); save the model again") from err
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{folder} has format {manifest.get('format')!r} v{manifest.get('format_version')}, "
            f"this ziplm reads {FORMAT!r} v{FORMAT_VERSION}"
        )
    return manifest


def _untied_missing(model: nn.Module, missing: list[str]) -> list[str]:
    """Drop keys that safetensors de-duplicated because they share storage with a loaded tied weight."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    pairs = tied.items() if isinstance(tied, dict) else []
    partner = {a: b for a, b in pairs} | {b: a for a, b in pairs}
    return [k for k in missing if k not in partner or partner[k] in missing]


def load_pruned(directory: str | os.PathLike[str], device: str = "cpu", dtype: str | None = None) -> nn.Module:
    """Rebuild the exact pruned model saved by `save_pruned`, offline, in eval mode.

    `dtype` defaults to the dtype recorded in ``ziplm.json`` (float32 for folders from before it was recorded),
    so a folder reloads bit for bit.
    """
    folder = Path(directory)
    manifest = _read_manifest(folder)
    if _sha256(folder / WEIGHTS) != manifest["weights_sha256"]:
        raise ValueError(f"{folder / WEIGHTS} is corrupt: its checksum does not match {MANIFEST}; save it again")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"{folder / 'config.json'} is corrupt or unreadable: {err}") from err
    record = getattr(config, STRUCTURE_CONFIG_KEY, None)
    if not record:
        raise ValueError(f"{folder / 'config.json'} has no {STRUCTURE_CONFIG_KEY!r}; it was not saved by ziplm")
    structure = Structure.from_dict(record)
    model_cls = getattr(transformers, manifest["architecture"], None)
    if model_cls is None:
        raise ValueError(f"unknown architecture {manifest['architecture']!r} in {folder / MANIFEST}")
    setattr(config, STRUCTURE_CONFIG_KEY, None)  # build dense first, then cut to the saved shape
    with no_init_weights():
        model = model_cls(config).to(SAVE_DTYPES[str(manifest.get("dtype", "float32"))])
    model.tie_weights()  # construction outside from_pretrained leaves tied embeddings separate
    adapter_for_family(manifest["family"]).apply_structure(model, structure)
    missing, unexpected = safetensors.torch.load_model(model, folder / WEIGHTS, strict=False, device=device)
    missing = _untied_missing(model, missing)
    if missing or unexpected:
        raise ValueError(
            f"{folder / WEIGHTS} does not match the saved structure: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    saved = SAVE_DTYPES[str(manifest.get("dtype", "float32"))]
    if dtype is not None and dtype not in SAVE_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(SAVE_DTYPES)}")
    return model.to(device=device, dtype=SAVE_DTYPES[dtype] if dtype is not None else saved).eval()
