"""Retrieval sets for embedding tasks: the bbc-headlines builtin, local MTEB folders, caps, refusals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ziplm.data.builtin import bbc_news
from ziplm.data.embedding import embed_bbc
from ziplm.data.retrieval import RetrievalSet, bbc_headlines, cap, load_retrieval
from ziplm.data.retrieval_spec import check_retrieval, retrieval_kind
from ziplm.data.spec import TaskSpec


def write_mteb(folder: Path, docs: int = 6) -> Path:
    """A small MTEB-layout folder: doc i is relevant to query i // 2 (score 1, doc 0 graded 2)."""
    (folder / "qrels").mkdir(parents=True)
    topics = ("football match", "stock market", "rain storm")
    with (folder / "corpus.jsonl").open("w") as handle:
        for i in range(docs):
            row = {"_id": f"d{i}", "title": "", "text": f"A long report about the {topics[i // 2]} number {i}."}
            handle.write(json.dumps(row) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for i, topic in enumerate(topics):
            handle.write(json.dumps({"_id": f"q{i}", "text": f"news on the {topic}"}) + "\n")
    rows = ["query-id\tcorpus-id\tscore"] + [f"q{i // 2}\td{i}\t{2 if i == 0 else 1}" for i in range(docs)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return folder


def _task(retrieval: str | None, **changes: object) -> TaskSpec:
    return TaskSpec(name="mine", kind="embedding", metric="embedding_fidelity", text_keys=("text",),
                    retrieval=retrieval, **changes)  # type: ignore[arg-type]  # fmt: skip


@pytest.mark.slow  # reads and cuts the whole BBC corpus (~10 s)
def test_bbc_headlines_queries_find_their_own_held_out_paragraphs() -> None:
    found = bbc_headlines()
    news = bbc_news()
    held_out, train_articles = set(embed_bbc()["validation"]["text"]), set(news["train"]["id"])
    text_of = dict(zip(news["validation"]["id"], news["validation"]["text"], strict=True))
    corpus = dict(zip(found.doc_ids, found.corpus, strict=True))
    assert len(found.query_ids) > 300 and set(found.corpus) <= held_out  # nothing trained on is retrieved
    assert not set(found.query_ids) & train_articles
    for query, headline in zip(found.query_ids, found.queries, strict=True):
        article = text_of[query]
        assert article.splitlines()[0].strip() == headline and found.qrels[query]
        assert all(corpus[doc] in " ".join(article.split()) for doc in found.qrels[query])
    assert set(corpus) == {d for rel in found.qrels.values() for d in rel}


def test_a_local_mteb_folder_loads_with_titles_and_graded_qrels(tmp_path: Path) -> None:
    found = load_retrieval(_task(str(write_mteb(tmp_path))))
    assert found is not None and found.query_ids == ["q0", "q1", "q2"] and len(found.corpus) == 6
    assert found.qrels["q0"] == {"d0": 2.0, "d1": 1.0}
    assert load_retrieval(_task(None)) is None


def test_cap_keeps_relevant_documents_and_samples_distractors() -> None:
    ids = [f"d{i}" for i in range(20)]
    qrels = {"a": {"d1": 1.0, "d2": 1.0}, "b": {"d5": 1.0}, "c": {"d7": 0.0}, "e": {"gone": 1.0}}
    full = RetrievalSet("x", ["a", "b", "c", "e"], ["qa", "qb", "qc", "qe"], ids, ids, qrels)
    capped = cap(full, max_queries=None, max_docs=6)
    assert capped.query_ids == ["a", "b"]  # c has no relevant document, e's is not in the corpus
    assert len(capped.doc_ids) == 6 and {"d1", "d2", "d5"} <= set(capped.doc_ids)
    one = cap(full, max_queries=1, max_docs=1)
    assert len(one.query_ids) == 1 and set(one.doc_ids) == set(one.qrels[one.query_ids[0]])
    assert cap(full, 1, 1) == one  # seeded


def test_kinds_and_one_line_refusals(tmp_path: Path) -> None:
    assert [retrieval_kind(v) for v in ("bbc-headlines", "mteb/scifact", "scifact")] == ["builtin", "hub", "unknown"]
    with pytest.raises(ValueError, match=re.escape("task.retrieval=scifact is no builtin retrieval set")):
        check_retrieval("scifact")
    with pytest.raises(ValueError, match=re.escape("missing corpus.jsonl, queries.jsonl, qrels/test.tsv")):
        check_retrieval(str(tmp_path / "nowhere" / "x"))
    folder = write_mteb(tmp_path / "bad")
    (folder / "queries.jsonl").write_text(json.dumps({"id": "q0", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match=re.escape("queries.jsonl rows lack _id")):
        check_retrieval(str(folder))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "x"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("q0\td0\t1\n")
    with pytest.raises(
        ValueError, match=re.escape("must start with the tab-separated header query-id corpus-id score")
    ):
        check_retrieval(str(folder))
    with pytest.raises(
        ValueError, match=re.escape("task.retrieval=bbc-headlines scores sentence embeddings, but kind is")
    ):
        TaskSpec(name="t", kind="lm", metric="perplexity", text_keys=("text",), retrieval="bbc-headlines")
    with pytest.raises(ValueError, match=re.escape("retrieval_max_queries must be >= 1")):
        _task("bbc-headlines", retrieval_max_queries=0)
