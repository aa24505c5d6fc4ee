"""MTEB-style retrieval scores of sentence embeddings: nDCG@k, Recall@k and MRR@k by cosine similarity.

Fidelity says how close a member stays to the dense model; retrieval says whether it still finds the right
documents, the number users of an embedder compare (MTEB). Conventions follow MTEB (pytrec_eval / trec_eval)
so the numbers are comparable: linear graded gains (a qrel score of 2 counts twice a 1), relevant means a
score > 0, queries with no relevant document are left out of the means, and equal similarities are ranked
by document id in decreasing order (trec_eval's tie rule). All scores are on 0-1, as MTEB's results files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

CUTOFF = 10


def retrieval_metrics(
    queries: torch.Tensor,
    corpus: torch.Tensor,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, float]],
    k: int = CUTOFF,
) -> dict[str, float]:
    """Mean ``ndcg@k``, ``recall@k`` and ``mrr@k`` over the queries (n_q, d) that have a relevant document,
    ranking the corpus (n_d, d) by cosine similarity; `qrels` maps query id -> {doc id: graded relevance}.

    Raises:
        ValueError: mismatched ids and embeddings, or no query with a relevant document in the corpus.
    """
    if queries.shape[0] != len(query_ids) or corpus.shape[0] != len(doc_ids):
        raise ValueError(f"{queries.shape[0]}/{corpus.shape[0]} embeddings but {len(query_ids)}/{len(doc_ids)} ids")
    # Stable sort over a corpus pre-ordered by id (descending): ties keep the decreasing-id order.
    by_id = sorted(range(len(doc_ids)), key=lambda i: doc_ids[i], reverse=True)
    ordered_ids = [doc_ids[i] for i in by_id]
    unit_q = F.normalize(queries.double(), dim=-1)
    unit_d = F.normalize(corpus[by_id].double(), dim=-1)
    ranking = (unit_q @ unit_d.T).sort(dim=-1, descending=True, stable=True).indices[:, :k]
    totals = {"ndcg": 0.0, "recall": 0.0, "mrr": 0.0}
    counted = 0
    for row, query in enumerate(query_ids):
        gains = {doc: float(score) for doc, score in (qrels.get(query) or {}).items() if float(score) > 0}
        if not gains:
            continue  # MTEB: a query without relevant documents is not scored
        counted += 1
        top = [ordered_ids[i] for i in ranking[row].tolist()]
        dcg = sum(gains.get(doc, 0.0) / math.log2(rank + 2) for rank, doc in enumerate(top))
        ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(sorted(gains.values(), reverse=True)[:k]))
        totals["ndcg"] += dcg / ideal
        totals["recall"] += sum(doc in gains for doc in top) / len(gains)
        first = next((rank for rank, doc in enumerate(top) if doc in gains), None)
        totals["mrr"] += 0.0 if first is None else 1 / (first + 1)
    if not counted:
        raise ValueError("retrieval scores need at least one query with a relevant document (qrel score > 0)")
    return {f"{name}@{k}": value / counted for name, value in totals.items()}
