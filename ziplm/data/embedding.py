"""Raw text for label-free sentence-embedding tasks (task kind ``embedding``): offline corpora cut into
embedding-sized pieces, a user's own text file, held-out splits carved from it, and tokenized features.

Sentence-embedding models are used on sentences and short paragraphs (all-MiniLM-L6-v2 was trained on
pieces up to 128 word pieces), so whole articles are cut into paragraphs, and paragraphs longer than
``max_words`` into runs of whole sentences. Held-out text always comes from different articles (the
builtins keep their article-level splits) or, for a single user file, from a seeded sample of distinct
lines: no text is both trained on and scored.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import datasets

from ziplm.data.builtin import SPLIT_SEED, bbc_news, wiki_excerpt
from ziplm.data.spec import check_text_file as check_text_file  # re-exported for the loaders

HELDOUT_FRACTION = 0.1  # of a single user file's distinct texts, when no eval file is given
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def text_chunks(text: str, max_words: int = 64, min_words: int = 6) -> list[str]:
    """Paragraphs of `text` (blank-line separated), each cut into runs of whole sentences of at most
    `max_words` words (a single longer sentence stays whole); pieces under `min_words` words (headlines,
    bylines, list debris) are dropped."""
    pieces = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        if len(words) < min_words:
            continue
        current: list[str] = []
        for sentence in _SENTENCE_END.split(" ".join(words)):
            length = len(sentence.split())
            if current and len(" ".join(current).split()) + length > max_words:
                pieces.append(" ".join(current))
                current = []
            current.append(sentence)
        if current:
            pieces.append(" ".join(current))
    return [p for p in pieces if len(p.split()) >= min_words]


def _chunked(splits: dict[str, datasets.Dataset], max_words: int) -> dict[str, datasets.Dataset]:
    """Every split's articles as pieces, each piece once, and no held-out piece that also occurs in train
    (BBC News repeats some stories word for word across articles)."""
    seen: set[str] = set()
    result = {}
    for name in ("train", *sorted(set(splits) - {"train"})):
        pieces = [p for text in splits[name]["text"] for p in text_chunks(str(text), max_words)]
        unique = [p for p in dict.fromkeys(pieces) if p not in seen]
        seen |= set(unique) if name == "train" else set()
        result[name] = datasets.Dataset.from_dict({"text": unique})
    return result


def embed_bbc() -> dict[str, datasets.Dataset]:
    """BBC News paragraphs without labels (column ``text``), from the stratified article-level split of
    ``bbc-news``: ~16k train pieces, ~4k validation pieces, none of them in both."""
    return _chunked(bbc_news(), 64)


def embed_wiki() -> dict[str, datasets.Dataset]:
    """Wikipedia-excerpt pieces of at most 64 words (column ``text``), keeping ``wiki-excerpt``'s article-level
    train / validation / test split."""
    return _chunked(wiki_excerpt(), 64)


EMBEDDING_BUILTINS = {"embed-bbc": embed_bbc, "embed-wiki": embed_wiki}
EMBEDDING_BUILTIN_SPLITS = {"embed-bbc": ("train", "validation"), "embed-wiki": ("train", "validation", "test")}


def clean_texts(dataset: datasets.Dataset, text_keys: Sequence[str]) -> datasets.Dataset:
    """Rows whose every text column holds non-blank text; for a single text column, each text once (a
    duplicate line would otherwise land in both the training and the held-out part)."""
    keys = list(text_keys)
    seen: set[str] = set()
    keep = []
    for index, row in enumerate(dataset.select_columns(keys)):
        values = [str(row[k] or "").strip() for k in keys]
        if not all(values) or (len(keys) == 1 and values[0] in seen):
            continue
        seen.add(values[0])
        keep.append(index)
    return dataset if len(keep) == len(dataset) else dataset.select(keep)


def holdout(dataset: datasets.Dataset, fraction: float = HELDOUT_FRACTION) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, held-out): a fixed-seed sample of round(`fraction` · n) rows (at least 1) held out, both parts in
    file order. Raises ValueError for fewer than 2 rows (nothing would be left to train or to score)."""
    if len(dataset) < 2:
        raise ValueError(f"{len(dataset)} distinct text(s): an embedding task needs at least 2 (train and held out)")
    count = min(len(dataset) - 1, max(1, round(fraction * len(dataset))))
    held = set(random.Random(SPLIT_SEED).sample(range(len(dataset)), count))
    train = [i for i in range(len(dataset)) if i not in held]
    return dataset.select(train), dataset.select(sorted(held))


def embedding_texts(dataset: datasets.Dataset, text_keys: Sequence[str]) -> list[str]:
    """Every text of the split: the one text column, or (sentence pairs) the first column then the second."""
    return [str(text) for key in text_keys for text in dataset[key]]


def embedding_features(
    dataset: datasets.Dataset, tokenizer: Any, text_keys: Sequence[str], max_seq_length: int
) -> datasets.Dataset:
    """One tokenized row per text (pairs: n first texts, then their n partners), padded to `max_seq_length`,
    model inputs only: the targets are the dense model's own embeddings, computed by the run."""
    texts = embedding_texts(dataset, text_keys)
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_seq_length)
    features = datasets.Dataset.from_dict(dict(encoded))
    columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in features.column_names]
    return features.with_format("torch", columns=columns)
