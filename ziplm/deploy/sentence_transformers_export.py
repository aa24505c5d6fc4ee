"""``export.formats=[sentence-transformers]``: a pruned embedding member as a sentence-transformers folder.

Users of an embedder load it with ``SentenceTransformer(path)``, not with ziplm, so the folder must carry
everything: weights + ``config.json``, tokenizer, ``modules.json`` (Transformer → Pooling → optional
Normalize), ``sentence_bert_config.json`` and ``config_sentence_transformers.json``. A member whose layers
are each whole or removed becomes a stock ``BertModel`` (`plain_model`); any other member gets the small
``modeling_ziplm_bert.py`` copied beside its weights and an ``auto_map`` (load with
``trust_remote_code=True``), because stock BERT configs cannot say "3 heads here, 1 there".
The written folder is reloaded and its embeddings compared with the member's before it is kept.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import transformers
from torch import nn

from ziplm.core.embedding import Pooling, pool
from ziplm.models import adapter_for, current_structure
from ziplm.models.adapter import STRUCTURE_CONFIG_KEY
from ziplm.models.build import resolve_source
from ziplm.models.plain_export import plain_model
from ziplm.models.pooling import MODULES, POOLING_DIR, read_pooling, read_reference, source_file

MODELING_FILE = Path(__file__).with_name("modeling_ziplm_bert.py")
VERIFY_TEXTS = ("pruned model", "a sentence embedding of a pruned model", "model")
ST_CONFIG = "sentence_bert_config.json"


def check_member(model: nn.Module, folder: Path) -> None:
    """Refuse, in one line, a member that is not a BERT embedding member with a tokenizer."""
    if not (folder / MODULES).is_file() or not (folder / POOLING_DIR / "config.json").is_file():
        raise ValueError(
            f"export.formats=[sentence-transformers] needs an embedding member ({folder} has no {MODULES} / "
            f"{POOLING_DIR}/config.json); prune with a task of kind embedding"
        )
    if getattr(adapter_for(model), "family", None) != "bert" or not isinstance(_encoder(model), transformers.BertModel):
        raise ValueError(
            f"export.formats=[sentence-transformers] supports BERT-family encoders only, not {type(model).__name__} "
            f"({folder}); export this member with export.formats=[onnx] or [hf] instead"
        )
    if not (folder / "tokenizer_config.json").is_file():
        raise ValueError(
            f"export.formats=[sentence-transformers] needs the member's tokenizer; {folder} has none: save the dense "
            f"model's tokenizer there (tokenizer.save_pretrained('{folder}')) and export again"
        )


def reference_max_seq_length(member: Path) -> int | None:
    """The ``max_seq_length`` of the member's dense reference (its teacher folder, else its model source) when
    that is a sentence-transformers model: the exported embedder should truncate where the dense one did,
    not at the tokenizer's limit. None: no reference, or one without the file (or offline and not cached).

    Raises:
        ValueError: the reference's ``sentence_bert_config.json`` is corrupt or has no positive max_seq_length.
    """
    reference = read_reference(member) or {}
    for source in (reference.get("teacher"), reference.get("source")):
        if not source or source == "scratch":
            continue
        try:
            path = source_file(resolve_source(str(source)), ST_CONFIG)
        except (OSError, ValueError, ImportError):  # offline and uncached, a packaged model not installed
            continue
        if path is None:
            continue
        try:
            value = json.loads(path.read_text()).get("max_seq_length")
        except (json.JSONDecodeError, AttributeError) as err:
            raise ValueError(f"{path} is corrupt ({err}); fix or delete it, then export again") from err
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"{path}: max_seq_length must be a positive integer, not {value!r}; fix it and export again"
            )
        return value
    return None


def _encoder(model: nn.Module) -> nn.Module:
    base = getattr(model, "bert", model)
    return base if isinstance(base, nn.Module) else model


def _widths(model: nn.Module) -> tuple[list[int], list[int], bool]:
    """Heads and FFN neurons kept per layer, and whether every layer is whole or fully removed."""
    dims = adapter_for(model).dims(model)
    structure = current_structure(model, dims)
    heads = [len(la.heads) for la in structure.layers]
    ffn = [len(la.neurons) for la in structure.layers]
    whole = all((h, f) in ((0, 0), (dims.num_heads, dims.intermediate_size)) for h, f in zip(heads, ffn, strict=True))
    return heads, ffn, whole and any(heads)


def _load_modeling() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ziplm_modeling_ziplm_bert", MODELING_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _remote_model(encoder: nn.Module, heads: list[int], ffn: list[int]) -> nn.Module:
    """The member as a `ZiplmBertModel` (from the very file shipped in the folder), weights loaded strictly."""
    modeling = _load_modeling()
    config_in: Any = encoder.config
    values: dict[str, Any] = dict(config_in.to_dict())
    for key in (STRUCTURE_CONFIG_KEY, "model_type", "architectures", "auto_map", "transformers_version"):
        values.pop(key, None)
    config = modeling.ZiplmBertConfig(layer_heads=heads, layer_ffn=ffn, **values)
    config.architectures = ["ZiplmBertModel"]
    config.auto_map = {
        "AutoConfig": "modeling_ziplm_bert.ZiplmBertConfig",
        "AutoModel": "modeling_ziplm_bert.ZiplmBertModel",
    }
    add_pooler = getattr(encoder, "pooler", None) is not None
    remote: nn.Module = modeling.ZiplmBertModel(config, add_pooling_layer=add_pooler)
    dtype = next(encoder.parameters()).dtype
    remote.to(dtype).load_state_dict(encoder.state_dict(), strict=True)
    return remote.eval()


def _versions() -> dict[str, str]:
    found = {"transformers": transformers.__version__, "pytorch": torch.__version__}
    try:
        found["sentence_transformers"] = metadata.version("sentence-transformers")
    except metadata.PackageNotFoundError:
        found["sentence_transformers"] = "3.0.0"
    return found


def _write_folder(model: nn.Module, member: Path, target: Path) -> dict[str, Any]:
    """Write the folder; returns what kind of model it holds."""
    encoder = _encoder(model)
    heads, ffn, whole = _widths(model)
    if whole:
        kept = [i for i, h in enumerate(heads) if h]
        out = plain_model(encoder, adapter_for(model).layers(model), kept, STRUCTURE_CONFIG_KEY)
        info: dict[str, Any] = {"kind": "stock-bert", "layers": kept}
    else:
        out = _remote_model(encoder, heads, ffn)
        info = {"kind": "remote-code", "layer_heads": heads, "layer_ffn": ffn}
    out.save_pretrained(target)  # type: ignore[operator]
    if not whole:
        shutil.copyfile(MODELING_FILE, target / MODELING_FILE.name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(member)
    tokenizer.save_pretrained(target)
    shutil.copyfile(member / MODULES, target / MODULES)
    shutil.copytree(member / POOLING_DIR, target / POOLING_DIR)
    for entry in json.loads((member / MODULES).read_text()):
        if entry.get("path"):
            (target / str(entry["path"])).mkdir(exist_ok=True)
    limit = int(getattr(encoder.config, "max_position_embeddings", 512))
    dense_len = reference_max_seq_length(member)
    max_len = min(limit, dense_len or int(getattr(tokenizer, "model_max_length", limit) or limit))
    info["max_seq_length"] = max_len
    lower = bool(getattr(tokenizer, "do_lower_case", False))
    (target / ST_CONFIG).write_text(json.dumps({"max_seq_length": max_len, "do_lower_case": lower}, indent=2) + "\n")
    st_config = {"__version__": _versions(), "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"}
    (target / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n")
    return info


@torch.no_grad()
def member_embeddings(model: nn.Module, member: Path, texts: list[str], pooling: Pooling) -> torch.Tensor:
    """The member's pooled embeddings of `texts` (its own tokenizer, padded batch)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(member)
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    encoder = _encoder(model).eval()
    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    return pool(hidden, batch["attention_mask"], pooling)


@torch.no_grad()
def folder_embeddings(target: Path, texts: list[str], pooling: Pooling) -> torch.Tensor:
    """Embeddings of `texts` from the written folder alone: sentence-transformers when installed, else
    `AutoModel` (remote code allowed) + the pooling maths."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        tokenizer = transformers.AutoTokenizer.from_pretrained(target)
        loaded = transformers.AutoModel.from_pretrained(target, trust_remote_code=True).eval()
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        hidden = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        return pool(hidden, batch["attention_mask"], pooling)
    st = SentenceTransformer(str(target), device="cpu", trust_remote_code=True, local_files_only=True)
    return st.encode(list(texts), convert_to_tensor=True, batch_size=len(texts)).float().cpu()


def export_sentence_transformers(model: nn.Module, member: Path, target: Path, atol: float) -> dict[str, Any]:
    """Write `target` (atomically, via a sibling temp folder) and check its embeddings against the member's.

    Returns the record entries (kind, max abs diff). Raises ValueError when the diff exceeds `atol`.
    """
    check_member(model, member)
    if target.exists() and any(target.iterdir()) and not (target / MODULES).is_file():
        raise FileExistsError(f"{target} exists and is not a sentence-transformers folder; refusing to overwrite it")
    pooling, _ = read_pooling(member)
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        info = _write_folder(model, member, tmp)
        texts = list(VERIFY_TEXTS)
        diff = float(
            (folder_embeddings(tmp, texts, pooling) - member_embeddings(model, member, texts, pooling)).abs().max()
        )
        if diff > atol:
            raise ValueError(
                f"the sentence-transformers folder embeds {diff:.3g} away from the member > export.atol={atol:g}, "
                "so nothing was written; pass a larger export.atol to accept the difference"
            )
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"sentence_transformers_kind": info["kind"], "sentence_transformers_max_abs_diff": diff} | {
        f"sentence_transformers_{k}": v for k, v in info.items() if k != "kind"
    }
