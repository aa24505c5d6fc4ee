"""Any checkpoint as a scored model: a ziplm member folder, or a plain Hugging Face checkpoint (Hub id or
folder) of any ``AutoModelFor<task>`` architecture — DistilBERT, TinyBERT, MobileBERT, DistilGPT2, a CoFi
export — so that published baselines are evaluated in the same harness as the family.

A plain checkpoint must carry the head the task needs, fine-tuned: its head is checked against the task
(kind and number of labels) before any data is loaded, and every mismatch is one clear line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ziplm.models.build import from_source
from ziplm.models.io import MANIFEST, load_pruned

# Task kind -> (the Auto class that loads it, the architecture-name suffix a fitting head has).
_AUTO = {
    "classification": ("AutoModelForSequenceClassification", "ForSequenceClassification"),
    "regression": ("AutoModelForSequenceClassification", "ForSequenceClassification"),
    "qa": ("AutoModelForQuestionAnswering", "ForQuestionAnswering"),
    "lm": ("AutoModelForCausalLM", ("LMHeadModel", "ForCausalLM")),
    "embedding": ("AutoModel", "Model"),  # the bare encoder: any head a checkpoint has is left out
}
_HEADS = ("ForSequenceClassification", "ForQuestionAnswering", "LMHeadModel", "ForCausalLM", "ForMaskedLM")
# Architecture-name suffix -> the Auto class that loads it for timing (any head; a bare model: AutoModel).
_TIMING_AUTO = (
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForQuestionAnswering", "AutoModelForQuestionAnswering"),
    ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
)


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, float32, on the device) and what it is."""

    model: nn.Module
    source: str
    is_member: bool  # a ziplm family member (its structure is recorded) or a plain HF checkpoint
    has_tokenizer: bool


def is_member(source: str) -> bool:
    return (Path(source).expanduser() / MANIFEST).is_file()


def _refuse_foreign_folder(source: str, setting: str) -> None:
    """A folder that is neither a member nor an HF model: say what is expected before transformers guesses."""
    folder = Path(source).expanduser()
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ValueError(
            f"{setting}={source} is neither a ziplm family member (no {MANIFEST}) nor a Hugging Face model "
            "folder (no config.json); pass a member folder (family/<S>x), an HF folder or a Hub id"
        )


def check_checkpoint(source: str, kind: str, num_labels: int | None, setting: str = "checkpoint") -> Any:
    """Check that `source` can be scored on a task of `kind` without reading any weights (seconds, before any
    data or training). Returns the transformers Auto class that loads a plain checkpoint (None: a member).

    Raises:
        FileNotFoundError: a folder that does not exist, or a Hub id that cannot be reached offline.
        ValueError: no fitting task head (wrong kind, wrong number of labels, a bare base model), or an
            architecture transformers cannot load for this task. Messages name `setting`.
    """
    if kind not in _AUTO:
        raise ValueError(f"task kind {kind!r} cannot be scored; known kinds: {sorted(_AUTO)}")
    if is_member(source):
        _check_member_head(source, kind, setting)
        return None
    _refuse_foreign_folder(source, setting)
    import transformers

    config = from_source(transformers.AutoConfig.from_pretrained, source, "model config", setting)
    if kind != "embedding":  # a sentence embedder is a headless encoder: nothing to check
        _check_head(f"{setting}={source}", config, kind, num_labels)
    auto_name, _ = _AUTO[kind]
    auto = getattr(transformers, auto_name)
    if type(config) not in auto._model_mapping:  # asked before any weights are read
        raise ValueError(
            f"{setting}={source}: architecture {config.model_type!r} has no {auto_name} in transformers "
            f"{transformers.__version__}; it cannot be scored on a {kind} task"
        )
    return auto


def load_checkpoint(
    source: str, kind: str, num_labels: int | None, device: torch.device | str, setting: str = "checkpoint"
) -> Checkpoint:
    """The checkpoint at `source` (member folder, HF folder or Hub id) as a model for a task of `kind`, in
    eval mode, float32, on `device`. Raises as `check_checkpoint`."""
    auto = check_checkpoint(source, kind, num_labels, setting)
    folder = Path(source).expanduser()
    if auto is None:
        model = load_pruned(folder, device=str(device), dtype="float32")
        return Checkpoint(model.eval(), source, True, (folder / "tokenizer_config.json").is_file())
    model = from_source(auto.from_pretrained, source, f"{kind} model", setting, dtype=torch.float32)
    tokenizer = folder.is_dir() and any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt"))
    return Checkpoint(model.to(device).eval(), source, False, tokenizer or not folder.is_dir())


def load_for_timing(source: str, device: torch.device | str, setting: str = "checkpoint") -> Checkpoint:
    """Any checkpoint (member folder, HF folder or Hub id, any head) as a float32 model to time or serve.

    Unlike `load_checkpoint` the head is not checked against a task: time does not depend on what the
    head was fine-tuned for, so a DistilBERT fine-tuned on SST-2 can be timed next to a member of any task.
    Raises FileNotFoundError / ValueError as `check_checkpoint` (missing folder, offline Hub id, not a model).
    """
    folder = Path(source).expanduser()
    if is_member(source):
        model = load_pruned(folder, device=str(device), dtype="float32")
        return Checkpoint(model.eval(), source, True, (folder / "tokenizer_config.json").is_file())
    _refuse_foreign_folder(source, setting)
    import transformers

    config = from_source(transformers.AutoConfig.from_pretrained, source, "model config", setting)
    architectures = list(getattr(config, "architectures", None) or [])
    names = [auto for suffix, auto in _TIMING_AUTO if any(a.endswith(suffix) for a in architectures)]
    auto = getattr(transformers, names[0] if names else "AutoModel")
    if type(config) not in auto._model_mapping:
        raise ValueError(
            f"{setting}={source}: architecture {config.model_type!r} cannot be loaded by transformers "
            f"{transformers.__version__} ({auto.__name__})"
        )
    model = from_source(auto.from_pretrained, source, "model", setting, dtype=torch.float32)
    return Checkpoint(model.to(device).eval(), source, False, False)


def _check_member_head(source: str, kind: str, setting: str) -> None:
    """A member scored on an LM task must be a causal LM (its manifest names the architecture it was saved as):
    a BERT classifier member would otherwise fail deep inside the evaluation."""
    architecture = str(json.loads((Path(source).expanduser() / MANIFEST).read_text()).get("architecture", ""))
    causal = architecture.endswith(("LMHeadModel", "ForCausalLM"))
    if architecture and causal != (kind == "lm"):
        need = "a causal LM (*ForCausalLM, *LMHeadModel)" if kind == "lm" else f"a *{_AUTO[kind][1]} model"
        raise ValueError(f"{setting}={source} is a ziplm member of a {architecture}, but a {kind} task needs {need}")


def _check_head(where: str, config: Any, kind: str, num_labels: int | None) -> None:
    architectures = list(getattr(config, "architectures", None) or [])
    _, suffixes = _AUTO[kind]
    wanted = (suffixes,) if isinstance(suffixes, str) else suffixes
    heads = [a for a in architectures if a.endswith(_HEADS)]
    if not heads:
        raise ValueError(
            f"{where} is a {architectures or config.model_type} model without a task head: "
            f"a {kind} task needs a fine-tuned *{wanted[0]} checkpoint"
        )
    if not any(a.endswith(wanted) for a in heads):
        raise ValueError(f"{where} has a {heads} head, but a {kind} task needs *{wanted[0]}")
    labels = int(getattr(config, "num_labels", 0) or 0)
    if kind == "classification" and num_labels and labels != num_labels:
        raise ValueError(
            f"{where} classifies into {labels} labels but the task has {num_labels}: its head does not fit this task"
        )
    if kind == "regression" and labels != 1:
        raise ValueError(f"{where} has {labels} outputs; a regression task needs a 1-output head")
