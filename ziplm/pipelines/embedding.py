"""Label-free sentence embeddings in a run (task kind ``embedding``): the dense model's outputs as the
reference, computed once, that SPDY scores candidates against and members are evaluated against.

A sentence-embedding model has no labels to be scored on: a member is as good as its embeddings are
faithful to the dense model's. So the run keeps the dense model's pooled embeddings of the held-out texts
(for `EmbeddingReference.scores`) and its last hidden states on the SPDY batches (for
`EmbeddingReference.distortion`), each computed once, and compares every candidate and member with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from rich.console import Console
from torch import nn

from ziplm.core.embedding import Pooling, embedding_distortion, pool
from ziplm.core.padding import trim_padding
from ziplm.data.features import model_input_columns
from ziplm.data.spec import TaskSpec
from ziplm.eval.evaluate import precision_context
from ziplm.eval.metrics import compute_metric
from ziplm.models.build import ModelSpec, build_model, resolve_source
from ziplm.models.pooling import is_local, read_hub_pooling, read_pooling, read_reference

console = Console()
Batches = Sequence[Mapping[str, torch.Tensor]]


def dense_pooling(spec: ModelSpec) -> Pooling:
    """The pooling of the configured dense model (its sentence-transformers folder, or its Hub repo's), or
    mean pooling with a one-line note when it has no pooling config (a random test model, a plain BERT) or
    the Hub repo's cannot be fetched (offline and not cached)."""
    if spec.source == "scratch":
        pooling, note = read_pooling(None)
    else:
        source = resolve_source(spec.source)
        pooling, note = read_pooling(source) if is_local(source) else read_hub_pooling(source)
    if note:
        console.print(f"note: model {spec.name!r}: {note}")
    return pooling


def _inputs(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The encoder's inputs of `batch` on `device`, cut to the columns some row uses (`trim_padding`): the
    states of every later step (pooling, distortion) come with the same, trimmed, length."""
    names = ("input_ids", "attention_mask", "token_type_ids")
    return {k: v.to(device) for k, v in trim_padding({k: v for k, v in batch.items() if k in names}).items()}


def _mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """`batch`'s attention mask trimmed as `_inputs` trims the batch (None: no mask)."""
    mask = batch.get("attention_mask")
    return None if mask is None else trim_padding({"attention_mask": mask})["attention_mask"]


def last_states(model: nn.Module, batches: Batches, precision: str) -> list[torch.Tensor]:
    """The model's last hidden states (batch, seq, hidden) per batch, in eval mode, without gradients."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    states = []
    with torch.inference_mode(), precision_context(precision, device):
        for batch in batches:
            states.append(model(**_inputs(batch, device)).last_hidden_state.float())
    model.train(was_training)
    return states


def encode(
    model: nn.Module, features: datasets.Dataset, pooling: Pooling, batch_size: int, precision: str
) -> torch.Tensor:
    """Pooled embeddings (n, hidden) of every row of tokenized `features`, on the CPU, in row order."""
    table = features.with_format("torch", columns=model_input_columns(features))
    batches = [table[i : i + batch_size] for i in range(0, len(table), batch_size)]
    out = []
    for batch, states in zip(batches, last_states(model, batches, precision), strict=True):
        mask = _mask(batch)
        out.append(pool(states, None if mask is None else mask.to(states.device), pooling).cpu())
    return torch.cat(out)


def split_scores(
    task: TaskSpec, examples: datasets.Dataset, student: torch.Tensor, dense: torch.Tensor
) -> dict[str, float]:
    """Fidelity of `student` to `dense` embeddings of one split's texts; for scored pairs (STS) also the
    Spearman of each pair's cosine with its gold score (texts are the n first sentences, then their partners)."""
    metrics = compute_metric("embedding_fidelity", student, dense)
    if task.metric == "sts_spearman":
        n = len(examples)
        gold = torch.tensor([float(v) for v in examples[str(task.label_key)]])
        metrics |= compute_metric("sts_spearman", (student[:n], student[n:]), gold)
    return metrics


class EmbeddingReference:
    """The dense model's embeddings of every evaluation split and its states on the SPDY batches, computed
    once (the dense model never changes), and the scores of any model against them. A multi-process run
    uses it on rank 0 only (`Family.scores` and the search hand their results to the other ranks)."""

    def __init__(self, dense: nn.Module, pooling: Pooling, task: TaskSpec, splits: Mapping[str, tuple[Any, Any]],
                 batch_size: int, precision: str) -> None:  # fmt: skip
        self.dense, self.pooling, self.task = dense, pooling, task
        self.splits, self.batch_size, self.precision = dict(splits), batch_size, precision
        self._embeddings: dict[str, torch.Tensor] = {}
        self._states: dict[int, tuple[Batches, list[torch.Tensor]]] = {}

    def _dense_embeddings(self, split: str) -> torch.Tensor:
        if split not in self._embeddings:
            features = self.splits[split][1]
            self._embeddings[split] = encode(self.dense, features, self.pooling, self.batch_size, self.precision)
        return self._embeddings[split]

    def scores(self, model: nn.Module) -> dict[str, float]:
        """Fidelity metrics on the headline split, further splits as ``<split>/<metric>``."""
        metrics: dict[str, float] = {}
        for index, (split, (examples, features)) in enumerate(self.splits.items()):
            student = encode(model, features, self.pooling, self.batch_size, self.precision)
            found = split_scores(self.task, examples, student, self._dense_embeddings(split))
            metrics |= found if index == 0 else {f"{split}/{k}": v for k, v in found.items()}
        return metrics

    def distortion(self, batches: Batches) -> Callable[[nn.Module], float]:
        """SPDY's score of a candidate on `batches`: `embedding_distortion` against the dense model's states,
        which are computed on the first call for these batches and kept."""
        key = id(batches)
        if key not in self._states:
            self._states[key] = (batches, last_states(self.dense, batches, self.precision))
        dense_states = self._states[key][1]
        masks = [_mask(b) for b in batches]

        def score(candidate: nn.Module) -> float:
            states = last_states(candidate, batches, self.precision)
            return embedding_distortion(states, dense_states, masks, self.pooling)

        return score


def reference_model(checkpoint: str, fallback: ModelSpec) -> tuple[nn.Module, str]:
    """The dense model a checkpoint's embeddings are compared with, and where it came from: the teacher
    folder a member recorded, else the model source it recorded, else the configured ``model`` group.

    Raises:
        ValueError: none of them can give the dense weights (a random ``scratch`` model without its teacher folder).
    """
    import transformers

    recorded = read_reference(checkpoint) or {}
    teacher = recorded.get("teacher")
    if teacher and (Path(teacher) / "config.json").is_file():
        model = transformers.AutoModel.from_pretrained(teacher, dtype=torch.float32)
        return model.eval(), f"the member's dense teacher {teacher}"
    source = recorded.get("source")
    spec = fallback if not source else ModelSpec(name=str(recorded.get("model", "dense")), family="bert", source=source)
    if spec.source == "scratch":
        raise ValueError(
            f"checkpoint={checkpoint}: no dense reference for the fidelity metrics: its teacher folder "
            f"{teacher or '(none recorded)'} is gone and model {spec.name!r} is a random scratch model; "
            "give the dense model with model.source=<folder>"
        )
    return build_model(spec, "base").eval(), f"model source {spec.source}"


def checkpoint_scores(source: str, model: nn.Module, task: TaskSpec, splits: Mapping[str, datasets.Dataset],
                      tokenizer: Any, fallback: ModelSpec, batch_size: int,
                      precision: str) -> dict[str, dict[str, float]]:  # fmt: skip
    """``ziplm eval`` of a sentence embedder: fidelity of `model` (its folder's pooling) to its dense
    reference (`reference_model`) on every evaluation split, plus STS Spearman on scored pairs."""
    from ziplm.data.features import build_features

    model = getattr(model, "base_model", model)  # a member or checkpoint with a task head: its encoder
    folder = Path(source).expanduser()
    pooling, note = read_pooling(folder if folder.is_dir() else None)
    if note:
        console.print(f"note: checkpoint {source}: {note}")
    dense, where = reference_model(source, fallback)
    dense.to(next(model.parameters()).device)
    console.print(f"fidelity reference: {where}")
    results = {}
    for split in task.eval_splits:
        examples = splits[split]
        features = build_features(examples, tokenizer, task, train=False)
        student = encode(model, features, pooling, batch_size, precision)
        results[split] = split_scores(task, examples, student, encode(dense, features, pooling, batch_size, precision))
    return results
