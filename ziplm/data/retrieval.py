"""Retrieval sets for embedding tasks (``task.retrieval``): queries, a corpus and graded qrels, as MTEB
lays them out, from the offline ``bbc-headlines`` builtin, a local MTEB folder or a Hub MTEB dataset.

``bbc-headlines`` asks whether a member still finds an article's paragraphs from its headline: queries are
the first lines of the held-out BBC News articles, the corpus their paragraphs as ``embed-bbc`` cuts them
(so nothing trained on is retrieved), and each query's relevant documents are its own article's paragraphs.
Sizes are capped by a seeded sample so scoring stays cheap on a CPU (`cap`).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ziplm.data.builtin import SPLIT_SEED, bbc_news
from ziplm.data.embedding import _chunked, text_chunks
from ziplm.data.retrieval_spec import QRELS_FILE, check_retrieval, retrieval_kind
from ziplm.data.spec import TaskSpec

HUB_SPLIT = "test"


@dataclass(frozen=True)
class RetrievalSet:
    """Queries and corpus as parallel id / text lists, and qrels: query id -> {doc id: graded relevance}."""

    name: str
    query_ids: list[str]
    queries: list[str]
    doc_ids: list[str]
    corpus: list[str]
    qrels: dict[str, dict[str, float]]


def bbc_headlines() -> RetrievalSet:
    """Headlines of the held-out BBC News articles against their paragraphs (the held-out pieces of
    ``embed-bbc``: a paragraph also in a training article is left out, one repeated across held-out
    articles is one document relevant to each)."""
    splits = bbc_news()
    held_out = set(_chunked(splits, 64)["validation"]["text"])
    doc_of: dict[str, str] = {}
    queries, query_ids, qrels = [], [], {}
    for article_id, text in zip(splits["validation"]["id"], splits["validation"]["text"], strict=True):
        headline = str(text).strip().splitlines()[0].strip()
        pieces = [p for p in dict.fromkeys(text_chunks(str(text), 64)) if p in held_out]
        if not headline or not pieces:
            continue
        query_ids.append(article_id)
        queries.append(headline)
        qrels[article_id] = {doc_of.setdefault(p, f"p{len(doc_of)}"): 1.0 for p in pieces}
    return RetrievalSet("bbc-headlines", query_ids, queries, list(doc_of.values()), list(doc_of), qrels)


def _read_jsonl(path: Path) -> list[dict]:
    with path.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _document(row: dict) -> str:
    """MTEB's document text: title and text joined by a space (the title alone may be empty)."""
    return " ".join(str(row.get(key) or "").strip() for key in ("title", "text")).strip()


def local_set(folder: str) -> RetrievalSet:
    """An MTEB-layout folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (checked by `check_retrieval`)."""
    root = Path(folder).expanduser()
    corpus = _read_jsonl(root / "corpus.jsonl")
    queries = _read_jsonl(root / "queries.jsonl")
    qrels: dict[str, dict[str, float]] = {}
    with (root / QRELS_FILE).open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = float(row["score"])
    return RetrievalSet(
        folder, [str(q["_id"]) for q in queries], [str(q["text"]) for q in queries],
        [str(d["_id"]) for d in corpus], [_document(d) for d in corpus], qrels,
    )  # fmt: skip


def hub_set(dataset: str) -> RetrievalSet:
    """A Hub MTEB retrieval dataset: configs ``corpus`` and ``queries``, qrels from the default config's
    ``test`` split; unreachable (offline, not cached) as one line naming the local alternative."""
    import datasets

    from ziplm.data.sources import hub_failure

    try:
        corpus = datasets.load_dataset(dataset, "corpus")
        queries = datasets.load_dataset(dataset, "queries")
        qrels_rows = datasets.load_dataset(dataset, split=HUB_SPLIT)
    except OSError as err:
        reason, problem = hub_failure(err, "cannot be loaded from the Hugging Face Hub")
        raise FileNotFoundError(
            f"task.retrieval={dataset} {problem} ({reason}); give a local MTEB folder instead: "
            "task.retrieval=<folder with corpus.jsonl, queries.jsonl, qrels/test.tsv>"
        ) from err
    corpus_rows, query_rows = next(iter(corpus.values())), next(iter(queries.values()))
    qrels: dict[str, dict[str, float]] = {}
    for row in qrels_rows:
        qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = float(row["score"])
    return RetrievalSet(
        dataset, [str(i) for i in query_rows["_id"]], [str(t) for t in query_rows["text"]],
        [str(i) for i in corpus_rows["_id"]], [_document(r) for r in corpus_rows], qrels,
    )  # fmt: skip


def cap(found: RetrievalSet, max_queries: int | None, max_docs: int | None, seed: int = SPLIT_SEED) -> RetrievalSet:
    """Queries with a relevant document in the corpus, a fixed sample of `max_queries` of them, and the corpus
    cut to their relevant documents plus a fixed sample of distractors up to `max_docs` documents in all."""
    docs = set(found.doc_ids)
    relevant = {q: {d: s for d, s in found.qrels.get(q, {}).items() if s > 0 and d in docs} for q in found.query_ids}
    rows = [i for i, q in enumerate(found.query_ids) if relevant[q]]
    if max_queries is not None and len(rows) > max_queries:
        rows = sorted(random.Random(seed).sample(rows, max_queries))
    query_ids = [found.query_ids[i] for i in rows]
    needed = {d for q in query_ids for d in relevant[q]}
    others = [i for i, d in enumerate(found.doc_ids) if d not in needed]
    room = len(others) if max_docs is None else max(0, max_docs - len(needed))
    keep = set(random.Random(seed).sample(others, min(room, len(others)))) | {
        i for i, d in enumerate(found.doc_ids) if d in needed
    }
    kept = sorted(keep)
    return RetrievalSet(
        found.name, query_ids, [found.queries[i] for i in rows], [found.doc_ids[i] for i in kept],
        [found.corpus[i] for i in kept], {q: relevant[q] for q in query_ids},
    )  # fmt: skip


def load_retrieval(task: TaskSpec) -> RetrievalSet | None:
    """The task's retrieval set, capped (`cap`: ``retrieval_max_queries``, ``max_eval_samples`` documents),
    or None when ``task.retrieval`` is unset.

    Raises:
        ValueError / FileNotFoundError: no query has a relevant document; see also `check_retrieval`, `hub_set`.
    """
    if task.retrieval is None:
        return None
    check_retrieval(task.retrieval)
    kind = retrieval_kind(task.retrieval)
    found = (
        bbc_headlines()
        if kind == "builtin"
        else local_set(task.retrieval)
        if kind == "local"
        else hub_set(task.retrieval)
    )
    capped = cap(found, task.retrieval_max_queries, task.max_eval_samples)
    if not capped.query_ids:
        raise ValueError(
            f"task.retrieval={task.retrieval}: no query has a relevant document (qrel score > 0) in the corpus"
        )
    return capped
