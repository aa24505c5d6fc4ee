"""Retrieval scores of an embedding model in a run and in ``ziplm eval`` (``task.retrieval``): the same
pooling, precision and batch size as the fidelity metrics, the dense model's embeddings computed once."""

from __future__ import annotations

from typing import Any

import datasets
import torch
from torch import nn

from ziplm.core.embedding import Pooling
from ziplm.data.embedding import embedding_features
from ziplm.data.retrieval import RetrievalSet, load_retrieval
from ziplm.data.spec import TaskSpec
from ziplm.eval.retrieval import retrieval_metrics
from ziplm.pipelines.embedding import encode

PREFIX = "retrieval"


def _features(texts: list[str], tokenizer: Any, max_seq_length: int) -> datasets.Dataset:
    return embedding_features(datasets.Dataset.from_dict({"text": texts}), tokenizer, ["text"], max_seq_length)


class RetrievalReference:
    """A task's retrieval set, tokenized once, and the scores of any model on it as ``retrieval/<metric>``."""

    def __init__(self, found: RetrievalSet, tokenizer: Any, task: TaskSpec, pooling: Pooling, batch_size: int,
                 precision: str, dense: nn.Module | None = None) -> None:  # fmt: skip
        self.found, self.pooling, self.batch_size, self.precision = found, pooling, batch_size, precision
        self.queries = _features(found.queries, tokenizer, task.max_seq_length)
        self.corpus = _features(found.corpus, tokenizer, task.max_seq_length)
        self.dense = dense
        self._dense_scores: dict[str, float] | None = None

    @classmethod
    def of(cls, task: TaskSpec, tokenizer: Any, pooling: Pooling, batch_size: int, precision: str,
           dense: nn.Module | None = None) -> RetrievalReference | None:  # fmt: skip
        """The task's retrieval set ready to score, or None when ``task.retrieval`` is unset."""
        found = load_retrieval(task)
        return None if found is None else cls(found, tokenizer, task, pooling, batch_size, precision, dense)

    def scores(self, model: nn.Module) -> dict[str, float]:
        """nDCG@10, Recall@10 and MRR@10 of `model`; the dense model's are computed once and kept."""
        if model is self.dense and self._dense_scores is not None:
            return dict(self._dense_scores)
        found = self.found
        queries, corpus = self._encode(model, self.queries), self._encode(model, self.corpus)
        metrics = retrieval_metrics(queries, corpus, found.query_ids, found.doc_ids, found.qrels)
        result = {f"{PREFIX}/{name}": value for name, value in metrics.items()}
        if model is self.dense:
            self._dense_scores = dict(result)
        return result

    def _encode(self, model: nn.Module, features: datasets.Dataset) -> torch.Tensor:
        return encode(model, features, self.pooling, self.batch_size, self.precision)


def retrieval_scores(source: str, model: nn.Module, task: TaskSpec, tokenizer: Any, batch_size: int,
                     precision: str) -> dict[str, float]:  # fmt: skip
    """``ziplm eval`` of a sentence embedder on ``task.retrieval``, pooled as its folder says (as its fidelity)."""
    from pathlib import Path

    from ziplm.models.pooling import read_pooling

    model = getattr(model, "base_model", model)  # a member or checkpoint with a task head: its encoder
    folder = Path(source).expanduser()
    pooling, _ = read_pooling(folder if folder.is_dir() else None)  # its note is printed by the fidelity scores
    reference = RetrievalReference.of(task, tokenizer, pooling, batch_size, precision)
    return {} if reference is None else reference.scores(model)
