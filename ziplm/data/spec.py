"""``TaskSpec``: the typed, immutable view of one ``conf/task/*.yaml`` file.

Pipelines flatten the Hydra ``task`` group into this object (``TaskSpec.from_mapping(
OmegaConf.to_container(cfg.task, resolve=True))``); nothing under ``ziplm.data`` sees omegaconf.
Validation here is cheap and runs before any download or tokenization, so a config mistake (a QA task
with one text key, a sliding-window stride longer than the window) fails in milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("classification", "regression", "qa", "lm", "embedding")
# Sentence embeddings (kind ``embedding``) are scored by fidelity to the dense model, or on scored pairs (STS).
EMBEDDING_METRICS = ("embedding_fidelity", "sts_spearman")
METRICS = ("accuracy", "f1", "accuracy_f1", "matthews", "pearson_spearman", "squad", "perplexity", *EMBEDDING_METRICS)
# How many entries of ``text_keys`` each kind takes (classification may be a single text or a pair).
_TEXT_KEY_COUNTS: dict[str, tuple[int, ...]] = {
    "classification": (1, 2),
    "regression": (1, 2),
    "qa": (2,),  # question, context — in that order
    "lm": (1,),
    "embedding": (1, 2),  # raw texts, or sentence pairs with a gold similarity (STS)
}


@dataclass(frozen=True)
class TaskSpec:
    """A task as data: where its text lives, which columns hold it, how it is tokenized and scored.

    Also the ``task`` group's Hydra schema (``ziplm.config.schema.layer_schema`` derives it from these
    fields: lists for the sequences, ``data_files`` typed Any). Sequences (lists from Hydra) are stored
    as tuples and ``data_files`` as a plain dict so the spec can be shared freely.

    Attributes:
        name: Task name; also selects the offline builtin (``bbc-news``, ``wiki-excerpt``, ``tiny-cls``,
            ``tiny-lm``) when neither ``dataset`` nor ``data_files`` is set.
        kind: ``classification`` | ``regression`` | ``qa`` | ``lm`` | ``embedding`` (label-free sentence
            embeddings: raw text, scored by fidelity to the dense model; see ``ziplm.data.embedding``).
        dataset: Hub dataset path for ``datasets.load_dataset`` (users online), or None.
        subset: Hub configuration name (e.g. ``mnli``), or None.
        data_files: Local files per split, ``{split: path}`` (``.json``/``.jsonl``/``.csv``/``.tsv``/``.txt``
            /``.parquet``), or None. Entries set to None are dropped; when any file is given, ``dataset`` and
            ``subset`` are cleared (local files replace the Hub dataset of a task like ``sst2``).
        text_keys: Text columns: one text or a pair (classification/regression), ``(question, context)``
            (QA), one text column (LM).
        label_key: Label column (class id or name, float score, SQuAD ``answers``); None for LM.
        num_labels: Number of classes (1 for regression); None for QA/LM.
        metric: Metric name understood by ``ziplm.eval.metrics.compute_metric``.
        train_split: Split used for training and calibration; ``datasets`` slicing syntax allowed
            (``train[:99.5%]``, fractional percents included).
        eval_split: Split whose headline metric is reported.
        extra_eval_splits: Further splits evaluated and logged (MNLI ``validation_mismatched``).
        max_seq_length: Tokens per sequence (padding/truncation length, LM block and window size).
        doc_stride: QA: overlap in tokens between consecutive windows of one long context.
        stride: LM perplexity: new tokens scored per sliding window (≤ ``max_seq_length``).
        max_train_samples: Keep a seeded random subset of this many training rows, or all.
        max_eval_samples: Keep a fixed random subset of this many rows of each eval split, or all.
        retrieval: Embedding tasks: a retrieval set scored next to fidelity (nDCG@10, Recall@10, MRR@10):
            ``bbc-headlines``, an MTEB-layout folder or a Hub MTEB id (``ziplm.data.retrieval_spec``); None: none.
        retrieval_max_queries: Score a fixed sample of this many retrieval queries, or all; the corpus keeps
            their relevant documents plus distractors up to ``max_eval_samples`` documents.
    """

    name: str
    kind: str
    metric: str
    dataset: str | None = None
    subset: str | None = None
    data_files: Mapping[str, str] | None = None
    text_keys: Sequence[str] = ()
    label_key: str | None = None
    num_labels: int | None = None
    train_split: str = "train"
    eval_split: str = "validation"
    extra_eval_splits: Sequence[str] = ()
    max_seq_length: int = 128
    doc_stride: int = 128
    stride: int = 512
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    retrieval: str | None = None
    retrieval_max_queries: int | None = None

    def __post_init__(self) -> None:
        # Hydra hands over lists; freeze them so the spec is immutable all the way down.
        object.__setattr__(self, "text_keys", tuple(self.text_keys))
        object.__setattr__(self, "extra_eval_splits", tuple(self.extra_eval_splits))
        object.__setattr__(self, "data_files", _local_files(self.name, self.data_files))
        if self.data_files is not None:  # local files replace the Hub dataset (`task=sst2 task.data_files=...`)
            object.__setattr__(self, "dataset", None)
            object.__setattr__(self, "subset", None)
        _validate(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TaskSpec:
        """Build a spec from a plain mapping (e.g. ``OmegaConf.to_container(cfg.task)``).

        Raises:
            ValueError: on keys that are not ``TaskSpec`` fields (a Hydra ``defaults`` entry is ignored).
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - {"defaults"})
        if unknown:
            raise ValueError(f"task config has unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The headline eval split followed by the extra ones, without duplicates."""
        return tuple(dict.fromkeys((self.eval_split, *self.extra_eval_splits)))

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split the task reads: train first, then the eval splits."""
        return tuple(dict.fromkeys((self.train_split, *self.eval_splits)))


def _local_files(name: str, data_files: Any) -> dict[str, str] | None:
    """``{split: path}`` with unset (None) entries dropped; None when no split has a file."""
    if data_files is None:
        return None
    if not isinstance(data_files, Mapping):
        raise ValueError(
            f"task {name!r}: data_files must map split names to files, e.g. "
            f"task.data_files='{{train: my.csv, validation: dev.csv}}', got {data_files!r}"
        )
    files = {str(k): v for k, v in data_files.items() if v is not None}
    bad = {k: v for k, v in files.items() if not isinstance(v, str) or not v.strip()}
    if bad:
        raise ValueError(f"task {name!r}: data_files entries must be file paths, got {bad}")
    return files or None


def _validate(spec: TaskSpec) -> None:
    where = f"task {spec.name!r}"
    if spec.kind not in KINDS:
        raise ValueError(f"{where}: unknown kind {spec.kind!r}; known: {list(KINDS)}")
    if spec.metric not in METRICS:
        raise ValueError(f"{where}: unknown metric {spec.metric!r}; known: {list(METRICS)}")
    counts = _TEXT_KEY_COUNTS[spec.kind]
    if len(spec.text_keys) not in counts:
        raise ValueError(
            f"{where}: kind {spec.kind!r} takes {' or '.join(map(str, counts))} text_keys, got {list(spec.text_keys)}"
        )
    if spec.kind == "embedding":
        _validate_embedding(spec, where)
    elif spec.retrieval is not None:
        raise ValueError(
            f"{where}: task.retrieval={spec.retrieval} scores sentence embeddings, but kind is {spec.kind!r}; "
            "set task.retrieval=null or use an embedding task (e.g. task=embed-bbc)"
        )
    elif spec.metric in EMBEDDING_METRICS:
        raise ValueError(f"{where}: metric {spec.metric!r} scores sentence embeddings: set task.kind=embedding")
    if spec.kind not in ("lm", "embedding") and not spec.label_key:
        raise ValueError(f"{where}: kind {spec.kind!r} needs a label_key")
    if spec.kind == "classification" and (spec.num_labels is None or spec.num_labels < 2):
        raise ValueError(f"{where}: classification needs num_labels >= 2, got {spec.num_labels}")
    _validate_lengths(spec, where)


def _validate_embedding(spec: TaskSpec, where: str) -> None:
    """Embedding tasks have no labels to learn: label settings of a classification task make no sense here,
    except the gold similarity of scored sentence pairs (STS: two text_keys, metric sts_spearman)."""
    if spec.metric not in EMBEDDING_METRICS:
        raise ValueError(
            f"{where}: kind 'embedding' is scored by {' or '.join(EMBEDDING_METRICS)}, got metric {spec.metric!r}; "
            "e.g. task.metric=embedding_fidelity"
        )
    pairs = spec.metric == "sts_spearman"
    if pairs and (len(spec.text_keys) != 2 or not spec.label_key):
        raise ValueError(f"{where}: metric 'sts_spearman' needs two text_keys (a pair) and a label_key (its score)")
    if not pairs and len(spec.text_keys) != 1:
        raise ValueError(f"{where}: kind 'embedding' embeds one text column, got text_keys {list(spec.text_keys)}")
    if not pairs and spec.label_key:
        raise ValueError(
            f"{where}: kind 'embedding' is label-free (members are scored by fidelity to the dense model), "
            f"but task.label_key={spec.label_key!r} is set; set task.label_key=null"
        )
    if spec.num_labels is not None:
        raise ValueError(
            f"{where}: kind 'embedding' has no classes or output head, but task.num_labels={spec.num_labels} is "
            "set; set task.num_labels=null"
        )


def _validate_lengths(spec: TaskSpec, where: str) -> None:
    if spec.max_seq_length < 2:
        raise ValueError(f"{where}: max_seq_length must be >= 2, got {spec.max_seq_length}")
    if spec.kind == "lm" and not 0 < spec.stride <= spec.max_seq_length:
        raise ValueError(f"{where}: LM stride must be in [1, max_seq_length={spec.max_seq_length}], got {spec.stride}")
    if spec.kind == "qa" and not 0 < spec.doc_stride < spec.max_seq_length:
        raise ValueError(
            f"{where}: doc_stride must be in [1, max_seq_length={spec.max_seq_length}), got {spec.doc_stride}"
        )
    for field_name in ("max_train_samples", "max_eval_samples", "retrieval_max_queries"):
        value = getattr(spec, field_name)
        if value is not None and value < 1:
            raise ValueError(f"{where}: {field_name} must be >= 1 or null, got {value}")


def check_text_file(path: str | Path, where: str) -> None:
    """Refuse a ``.txt`` file of a user's own text that holds nothing but whitespace, before any data library
    loads (``datasets`` fails on an empty text file with a long traceback instead of one line); other formats
    and missing files are left to the loader, which names them.

    Raises:
        ValueError: naming `where` (the config key) and the file.
    """
    file = Path(path).expanduser()
    if file.suffix.lower() == ".txt" and file.is_file():
        with file.open("rb") as handle:
            if not any(line.strip() for line in handle):
                raise ValueError(f"{where}={path} has no text: an embedding task needs one text per line")
