"""MTEB-style retrieval scores (nDCG@10, Recall@10, MRR@10) against hand computations and a brute force."""

from __future__ import annotations

import math
import random

import pytest
import torch

from ziplm.eval.retrieval import retrieval_metrics


def _one_hot_ranking(scores: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A query [1, 0] and documents whose cosine with it is exactly `scores` (unit vectors)."""
    docs = torch.tensor([[s, math.sqrt(1 - s * s)] for s in scores], dtype=torch.float64)
    return torch.tensor([[1.0, 0.0]], dtype=torch.float64), docs


def test_graded_relevance_by_hand() -> None:
    query, docs = _one_hot_ranking([0.9, 0.8, 0.7, 0.6])  # ranked d0, d1, d2, d3
    qrels = {"q": {"d1": 2, "d3": 1, "d0": 0}}  # d0 scored 0: not relevant
    found = retrieval_metrics(query, docs, ["q"], ["d0", "d1", "d2", "d3"], qrels)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3)
    assert found == pytest.approx({"ndcg@10": dcg / ideal, "recall@10": 1.0, "mrr@10": 0.5})


def test_only_the_top_ten_count() -> None:
    scores = [1 - i / 20 for i in range(12)]  # d0 ... d11 in rank order
    query, docs = _one_hot_ranking(scores)
    ids = [f"d{i:02d}" for i in range(12)]
    found = retrieval_metrics(query, docs, ["q"], ids, {"q": {"d10": 1, "d03": 1}})
    assert found["recall@10"] == pytest.approx(0.5)
    assert found["mrr@10"] == pytest.approx(1 / 4)
    assert found["ndcg@10"] == pytest.approx((1 / math.log2(5)) / (1 + 1 / math.log2(3)))


def test_ties_are_ranked_by_decreasing_document_id_as_trec_eval() -> None:
    query, docs = _one_hot_ranking([0.5, 0.5, 0.5])
    found = retrieval_metrics(query, docs, ["q"], ["a", "c", "b"], {"q": {"a": 1}})  # ranked c, b, a
    assert found["mrr@10"] == pytest.approx(1 / 3)


def test_queries_without_relevant_documents_are_left_out() -> None:
    query, docs = _one_hot_ranking([0.9, 0.1])
    queries = torch.cat([query, query])
    qrels = {"q1": {"d0": 1}, "q2": {"d1": 0}}  # q2 has none (a 0 score), q3 is not in qrels
    found = retrieval_metrics(torch.cat([queries, query]), docs, ["q1", "q2", "q3"], ["d0", "d1"], qrels)
    assert found == pytest.approx({"ndcg@10": 1.0, "recall@10": 1.0, "mrr@10": 1.0})
    with pytest.raises(ValueError, match="at least one query with a relevant document"):
        retrieval_metrics(query, docs, ["q"], ["d0", "d1"], {"q": {"d0": 0}})


def _brute_force(queries: torch.Tensor, corpus: torch.Tensor, qids: list[str], dids: list[str],
                 qrels: dict[str, dict[str, float]]) -> dict[str, float]:  # fmt: skip
    values: dict[str, list[float]] = {"ndcg@10": [], "recall@10": [], "mrr@10": []}
    for qi, query in enumerate(qids):
        rel = {d: s for d, s in qrels.get(query, {}).items() if s > 0}
        if not rel:
            continue
        sims = [float(torch.nn.functional.cosine_similarity(queries[qi], corpus[j], dim=0)) for j in range(len(dids))]
        by_id = sorted(range(len(dids)), key=lambda j: dids[j], reverse=True)
        top = sorted(by_id, key=lambda j: -sims[j])[:10]  # stable: ties keep decreasing ids
        ranked = [dids[j] for j in top]
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked))
        idcg = sum(s / math.log2(i + 2) for i, s in enumerate(sorted(rel.values(), reverse=True)[:10]))
        values["ndcg@10"].append(dcg / idcg)
        values["recall@10"].append(len(set(ranked) & set(rel)) / len(rel))
        values["mrr@10"].append(next((1 / (i + 1) for i, d in enumerate(ranked) if d in rel), 0.0))
    return {k: sum(v) / len(v) for k, v in values.items()}


def test_random_sets_match_a_brute_force() -> None:
    rng = random.Random(0)
    torch.manual_seed(0)
    queries, corpus = torch.randn(7, 5), torch.randn(30, 5)
    qids, dids = [f"q{i}" for i in range(7)], [f"doc{i}" for i in range(30)]
    qrels = {q: {rng.choice(dids): rng.choice([0, 1, 2, 3]) for _ in range(rng.randint(0, 5))} for q in qids}
    expected = _brute_force(queries, corpus, qids, dids, qrels)
    assert retrieval_metrics(queries, corpus, qids, dids, qrels) == pytest.approx(expected)
