"""``ziplm export checkpoint=<member> [export.formats=[onnx,hf,transformers,sentence-transformers]]``: member formats.

Writes ``model.onnx`` (checked against PyTorch in onnxruntime unless ``export.verify=false``; for a causal
LM the graph carries the KV cache, with ``model.onnx.json`` describing it and the member's tokenizer files
beside it, see ``ziplm.deploy.onnx_decoder``),
``hf/`` (a self-contained copy in ``save_pruned`` format, with the member's tokenizer) and/or
``transformers/`` (a stock Hugging Face folder that loads without ziplm; layer-drop members only) and/or
``sentence-transformers/`` (an embedding member as a folder ``SentenceTransformer(path, trust_remote_code=True)``
loads without ziplm, see ``ziplm.deploy.sentence_transformers_export``) under
``export.output`` (default ``<checkpoint>/export``), plus ``export.json`` recording what was written.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from torch import nn

from ziplm.deploy.onnx_decoder import export_decoder, is_causal_lm, sidecar_path, verify_decoder
from ziplm.deploy.onnx_export import export_onnx, max_positions, verify_onnx
from ziplm.deploy.sentence_transformers_export import check_member, export_sentence_transformers
from ziplm.models import adapter_for, current_structure, load_pruned, save_pruned
from ziplm.models.adapter import STRUCTURE_CONFIG_KEY
from ziplm.models.plain_export import max_abs_diff, plain_model, reload_plain, save_plain
from ziplm.pipelines.common import member_folder

FORMATS = ("onnx", "hf", "transformers", "sentence-transformers")
ONNX_FILE = "model.onnx"
HF_FOLDER = "hf"
TRANSFORMERS_FOLDER = "transformers"
ST_FOLDER = "sentence-transformers"
RECORD = "export.json"
VERIFY_SEQ_LENGTH = 32  # parity batch length (short: the check runs both models on CPU)
VERIFY_NEW_TOKENS = 8  # greedy tokens the cached decoder must reproduce in onnxruntime
# Tokenizer files copied beside a decoder's model.onnx, so the folder alone turns text into ids.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt")


def export_formats(value: Any) -> list[str]:
    """`export.formats` as a validated, de-duplicated list."""
    formats = [str(f) for f in (value or [])]
    if not formats:
        raise ValueError(f"export.formats is empty; choose from {list(FORMATS)}, e.g. export.formats=[onnx,hf]")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}, e.g. export.formats=[onnx]")
    return list(dict.fromkeys(formats))


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _export_hf(model: nn.Module, folder: Path, target: Path) -> Path:
    """Re-save through `save_pruned` (re-checks the structure and checksums), with the member's tokenizer."""
    tokenizer = None
    if (folder / "tokenizer_config.json").is_file():
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    structure = current_structure(model, adapter_for(model).dims(model))
    save_pruned(model, structure, target, tokenizer=tokenizer)
    load_pruned(target)  # a copy that does not load is worse than none
    return target


def whole_layers(model: nn.Module) -> list[int]:
    """Kept layers of a member whose every layer is whole or fully removed; ValueError (one line) otherwise."""
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    structure = current_structure(model, dims)
    partial = [
        i
        for i, la in enumerate(structure.layers)
        if (la.heads or la.neurons) and (len(la.heads) != dims.num_heads or len(la.neurons) != dims.intermediate_size)
    ]
    if partial:
        raise ValueError(
            f"export.formats=[transformers] needs every layer whole or fully removed, but layers {partial} have "
            "partial widths (stock transformers has one width for all layers); "
            "use export.formats=[hf] for a ziplm folder or export.formats=[onnx]"
        )
    kept = [i for i, la in enumerate(structure.layers) if la.heads]
    if not kept:
        raise ValueError("export.formats=[transformers] needs at least one kept layer; this member has none")
    return kept


def _export_transformers(model: nn.Module, kept: list[int], folder: Path, target: Path, seq: int, atol: float) -> float:
    """A stock HF folder of the kept layers, checked against the member before the save and after a reload.

    Written next to `target` and renamed into place, so a failed check leaves no half-made folder behind.
    """
    if target.exists() and any(target.iterdir()) and not (target / "config.json").is_file():
        raise FileExistsError(f"{target} exists and is not a Hugging Face model folder; refusing to overwrite it")
    plain = plain_model(model, adapter_for(model).layers(model), kept, STRUCTURE_CONFIG_KEY)
    built = max_abs_diff(model, plain, seq)
    if built > atol:
        raise ValueError(f"the plain transformers model differs from the member by {built:.3g} > export.atol={atol:g}")
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_plain(plain, tmp, folder if (folder / "tokenizer_config.json").is_file() else None)
        diff = max_abs_diff(model, reload_plain(model, tmp), seq)
        if diff > atol:
            raise ValueError(f"the folder reloaded with transformers differs from the member by {diff:.3g} > {atol:g}")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return diff


def _export_decoder(
    model: nn.Module, folder: Path, output: Path, settings: Any, record: dict[str, Any], console: Console
) -> list[Path]:
    """A causal LM's ``onnx`` format: the cached decoder (a graph without the cache cannot generate, and this
    one also scores whole sequences with an empty past), its sidecar and the tokenizer, checked by decoding."""
    onnx_path = export_decoder(model, output / ONNX_FILE)
    written = [onnx_path, sidecar_path(onnx_path)]
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            shutil.copyfile(folder / name, output / name)
            written.append(output / name)
    console.print(f"wrote {onnx_path} (decoder with KV cache; {sidecar_path(onnx_path).name} describes it)")
    record["onnx_kind"] = "decoder-kv-cache"
    if bool(settings.verify):
        atol = float(settings.atol)
        diff = verify_decoder(model, onnx_path, new_tokens=VERIFY_NEW_TOKENS, atol=atol)
        record |= {"onnx_max_abs_diff": diff, "onnx_atol": atol, "onnx_verified_tokens": VERIFY_NEW_TOKENS}
        console.print(
            f"onnxruntime cached greedy decode = PyTorch generate ({VERIFY_NEW_TOKENS} tokens); "
            f"step logits max abs diff {diff:.3g} (atol {atol:g})"
        )
    return written


def _files(output: Path, written: list[Path]) -> dict[str, int]:
    """Files this export wrote (relative path -> bytes); other files in `output` are not ours to list."""
    found: list[Path] = []
    for path in written:
        found += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        sidecar = path.with_name(path.name + ".data")  # ONNX external weights, when there are any
        if sidecar.is_file():
            found.append(sidecar)
    return {str(p.relative_to(output)): p.stat().st_size for p in found}


def _write_record(output: Path, record: dict[str, Any]) -> Path:
    path = output / RECORD
    tmp = output / f".{RECORD}.partial-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Export `cfg.checkpoint` to every format in `cfg.export.formats`; returns the ``export.json`` record."""
    settings = cfg.export
    formats = export_formats(settings.formats)
    folder = member_folder(cfg.get("checkpoint"), "export")
    output = Path(str(settings.output)) if settings.get("output") else folder / "export"
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"export.output {output} is a file; pass a folder")
    model = load_pruned(folder)
    kept = whole_layers(model) if "transformers" in formats else []  # refuse before anything is written
    if "sentence-transformers" in formats:
        check_member(model, folder)
    console = Console()
    output.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"checkpoint": str(folder), "formats": formats, "onnx_max_abs_diff": None}
    written: list[Path] = []
    if "onnx" in formats and is_causal_lm(model):
        written += _export_decoder(model, folder, output, settings, record, console)
    elif "onnx" in formats:
        limit = max_positions(model)
        seq = min(int(settings.seq_length), limit) if limit is not None else int(settings.seq_length)
        if seq != int(settings.seq_length):
            console.print(f"export.seq_length {settings.seq_length} > the model's {limit} positions; traced at {seq}")
        onnx_path = export_onnx(model, output / ONNX_FILE, seq_length=seq)
        written.append(onnx_path)
        record["onnx_kind"] = "full-sequence"
        console.print(f"wrote {onnx_path}")
        record["onnx_seq_length"] = seq
        if bool(settings.verify):
            diff = verify_onnx(model, onnx_path, seq_length=min(seq, VERIFY_SEQ_LENGTH), atol=float(settings.atol))
            record["onnx_max_abs_diff"] = diff
            record["onnx_atol"] = float(settings.atol)
            console.print(f"onnxruntime vs PyTorch: max abs diff {diff:.3g} (atol {float(settings.atol):g})")
    if "hf" in formats:
        written.append(_export_hf(model, folder, output / HF_FOLDER))
        console.print(f"wrote {written[-1]}")
    if "transformers" in formats:
        limit = max_positions(model)
        seq = min(VERIFY_SEQ_LENGTH, limit) if limit is not None else VERIFY_SEQ_LENGTH
        atol = float(settings.atol)
        target = output / TRANSFORMERS_FOLDER
        record["transformers_max_abs_diff"] = _export_transformers(model, kept, folder, target, seq, atol)
        record["transformers_layers"] = kept
        written.append(target)
        console.print(f"wrote {target} (layers {kept}; max abs diff {record['transformers_max_abs_diff']:.3g})")
    if "sentence-transformers" in formats:
        target = output / ST_FOLDER
        record |= export_sentence_transformers(model, folder, target, float(settings.atol))
        written.append(target)
        console.print(
            f"wrote {target} ({record['sentence_transformers_kind']}; embeddings max abs diff "
            f"{record['sentence_transformers_max_abs_diff']:.3g})"
        )
    record["files"] = _files(output, written)
    record["total_bytes"] = sum(record["files"].values())
    record["versions"] = _versions()
    console.print(f"wrote {_write_record(output, record)}")
    return record
