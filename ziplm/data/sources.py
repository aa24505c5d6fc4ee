"""Load a task's raw splits from the Hub, from local files, or from an offline builtin.

Source precedence: ``data_files`` (local, bring your own data) → ``dataset`` (Hub, for users online)
→ the builtin named like the task. Cheap checks (unknown builtin, missing file, missing split of a
local or builtin source) run before anything is read; column, emptiness and label checks run on the
loaded rows, before any tokenization.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import datasets
import numpy as np

from ziplm.data.builtin import BUILTINS, SPLIT_SEED
from ziplm.data.embedding import EMBEDDING_BUILTIN_SPLITS, EMBEDDING_BUILTINS, check_text_file, clean_texts, holdout
from ziplm.data.spec import TaskSpec
from ziplm.data.splits import parse_split, select_split

# Split names each builtin provides (checked before generating/reading anything).
BUILTIN_SPLITS: dict[str, tuple[str, ...]] = {
    "bbc-news": ("train", "validation"),
    "wiki-excerpt": ("train", "validation", "test"),
    "tiny-cls": ("train", "validation"),
    "tiny-lm": ("train", "validation", "test"),
    **EMBEDDING_BUILTIN_SPLITS,
}
_BUILTINS = {**BUILTINS, **EMBEDDING_BUILTINS}
# File extension → (``datasets`` packaged builder, extra keyword arguments).
_LOCAL_BUILDERS: dict[str, tuple[str, dict[str, str]]] = {
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".txt": ("text", {}),
    ".parquet": ("parquet", {}),
}


def load_splits(task: TaskSpec, seed: int = 0) -> dict[str, datasets.Dataset]:
    """Load every split `task` reads, checked and optionally subsampled.

    Args:
        task: The task.
        seed: Seed of the ``max_train_samples`` subset. Eval subsets use a fixed seed, so runs with
            different seeds are scored on the same rows.

    Returns:
        ``{split string: Dataset}`` for ``task.splits`` (train first, then eval splits), keyed by the
        split strings as written in the task (``splits[task.train_split]``). Classification labels
        are class ids in ``[0, num_labels)`` (string labels are encoded, names sorted).

    Raises:
        ValueError: unknown builtin, missing split (lists the available ones), missing columns
            (expected vs found), empty split, labels out of range, or a missing optional package.
        FileNotFoundError: a local data file does not exist.
    """
    source, loaded = _load_source(task)
    result = {}
    for spec in task.splits:
        dataset = select_split(loaded, spec, source)
        where = f"split {spec!r} of {source}"
        check_columns(dataset, required_columns(task), where)
        if len(dataset) == 0:
            raise ValueError(f"{where} is empty")
        limit = task.max_train_samples if spec == task.train_split else task.max_eval_samples
        result[spec] = subsample(dataset, limit, seed if spec == task.train_split else SPLIT_SEED)
    if task.kind == "classification":
        result = _encode_class_labels(result, task, source)
    return result


def _load_source(task: TaskSpec) -> tuple[str, Mapping[str, datasets.Dataset]]:
    """(description of the source, its splits by name); only the splits the task reads when cheap."""
    if task.data_files is not None:
        if task.kind == "embedding":
            return f"data_files {dict(task.data_files)}", _load_local_texts(task)
        return f"data_files {dict(task.data_files)}", _load_local(task.data_files, task.splits)
    if task.dataset is not None:
        source = f"Hub dataset {task.dataset!r}" + (f" ({task.subset})" if task.subset else "")
        return source, _load_hub(task, source)
    if task.name not in _BUILTINS:
        raise ValueError(
            f"task {task.name!r} sets neither `dataset` (Hub) nor `data_files` (local) and is not an "
            f"offline builtin; builtins: {sorted(_BUILTINS)}"
        )
    source = f"builtin task {task.name!r}"
    _check_split_names(task.splits, BUILTIN_SPLITS[task.name], source)
    return source, _BUILTINS[task.name]()


def _load_local_texts(task: TaskSpec) -> dict[str, datasets.Dataset]:
    """An embedding task's own text files: blank lines dropped, each text once, and the evaluation split
    held out of the training file (seeded, no overlap) when no file is given for it.

    Raises:
        ValueError: a ``.txt`` file without text, missing columns, or fewer than 2 distinct texts.
    """
    files = dict(task.data_files or {})
    for name, path in files.items():
        check_text_file(path, f"task.data_files.{name}")
    train = parse_split(task.train_split).split
    carved = [s for s in dict.fromkeys(parse_split(s).split for s in task.splits) if s not in files and s != train]
    given = tuple(s for s in task.splits if parse_split(s).split not in carved)
    loaded = _load_local(files, given)
    source = f"data_files {files}"
    for name, dataset in loaded.items():
        check_columns(dataset, required_columns(task), f"split {name!r} of {source}")
    cleaned = {name: clean_texts(dataset, task.text_keys) for name, dataset in loaded.items()}
    if carved:
        cleaned[train], held_out = holdout(cleaned[train])
        cleaned.update(dict.fromkeys(carved, held_out))
    return cleaned


def _load_hub(task: TaskSpec, source: str) -> datasets.DatasetDict:
    """``datasets.load_dataset`` of the task's Hub dataset; unreachable or unknown data as one clear line.

    Raises:
        FileNotFoundError: the dataset is neither in the local Hugging Face cache nor reachable (offline:
            ``HF_HUB_OFFLINE=1``, no network), or not on the Hub; the message says how to give local files.
    """
    try:
        return datasets.load_dataset(task.dataset, task.subset)
    except OSError as err:  # ConnectionError (offline, no network), DatasetNotFoundError, hub HTTP errors
        reason, problem = hub_failure(err, "cannot be loaded from the Hugging Face Hub")
        files = ", ".join(f"{name}: <file>" for name in dict.fromkeys(parse_split(s).split for s in task.splits))
        columns = ", ".join(required_columns(task))
        if task.kind == "qa":
            columns += f" as in SQuAD: {task.label_key}={{text: [...], answer_start: [...]}}"
        raise FileNotFoundError(
            f"task {task.name!r}: {source} {problem} ({reason}); give local files instead: "
            f"task.data_files='{{{files}}}' ({'/'.join(sorted(_LOCAL_BUILDERS))} with column(s) {columns})"
        ) from err


def hub_failure(err: OSError, otherwise: str) -> tuple[str, str]:
    """(the error's first sentence, what went wrong in words) for a dataset the Hub could not give: the same
    one-line explanation for a ziplm task's data and an lm-eval task's."""
    reason = " ".join(str(err).split()).split(". ")[0][:300]
    unreachable = isinstance(err, ConnectionError) or "couldn't reach" in reason.lower()
    if unreachable:
        return reason, "cannot be reached offline: not in the local Hugging Face cache and the Hub is unreachable"
    return reason, otherwise


def _check_split_names(specs: tuple[str, ...], available: tuple[str, ...] | list[str], source: str) -> None:
    for spec in specs:
        name = parse_split(spec).split
        if name not in available:
            raise ValueError(f"split {name!r} not in {source}; available: {sorted(available)}")


def _load_local(data_files: Mapping[str, str], specs: tuple[str, ...]) -> dict[str, datasets.Dataset]:
    source = f"data_files {dict(data_files)}"
    _check_split_names(specs, list(data_files), source)
    names = list(dict.fromkeys(parse_split(s).split for s in specs))
    paths = {name: Path(data_files[name]).expanduser() for name in names}
    for name, path in paths.items():
        if path.suffix.lower() not in _LOCAL_BUILDERS:
            raise ValueError(
                f"data file {str(path)!r} (split {name!r}) has unsupported extension {path.suffix!r}; "
                f"supported: {sorted(_LOCAL_BUILDERS)}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"data file for split {name!r} not found: {str(path)!r}")
    loaded = {}
    for name, path in paths.items():
        builder, kwargs = _LOCAL_BUILDERS[path.suffix.lower()]
        loaded[name] = datasets.load_dataset(builder, data_files={name: str(path)}, split=name, **kwargs)
    return loaded


def required_columns(task: TaskSpec) -> list[str]:
    """Columns a split of `task` must have: text keys, the label key, and ``id`` for QA."""
    columns = list(task.text_keys)
    if task.label_key is not None and task.kind != "lm":
        columns.append(task.label_key)
    if task.kind == "qa":
        columns.append("id")  # post-processing maps predictions back to examples by id
    return columns


def check_columns(dataset: datasets.Dataset, expected: list[str], where: str) -> None:
    """Raise a ValueError naming the expected and the found columns if any expected one is missing."""
    missing = [c for c in expected if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{where} lacks column(s) {missing}: expected {expected}, found {dataset.column_names} "
            "(set the task's text_keys/label_key to the file's column names)"
        )


def subsample(dataset: datasets.Dataset, limit: int | None, seed: int) -> datasets.Dataset:
    """A seeded random subset of `limit` rows, in their original order (all rows if `limit` is None
    or not smaller than the split)."""
    if limit is None or limit >= len(dataset):
        return dataset
    rng = np.random.default_rng(seed)
    return dataset.select(np.sort(rng.choice(len(dataset), size=limit, replace=False)).tolist())


def _encode_class_labels(
    splits: dict[str, datasets.Dataset], task: TaskSpec, source: str
) -> dict[str, datasets.Dataset]:
    """Encode string labels as class ids (names sorted over all splits) and range-check ids."""
    key, num_labels = str(task.label_key), int(task.num_labels or 0)
    first = next(iter(splits.values()))
    feature = first.features[key]
    if isinstance(feature, datasets.ClassLabel) and feature.num_classes != num_labels:
        raise ValueError(
            f"{source}: column {key!r} has {feature.num_classes} classes {feature.names}, "
            f"but the task sets num_labels={num_labels}"
        )
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        names = sorted({str(v) for ds in splits.values() for v in ds[key]})
        if len(names) > num_labels:
            raise ValueError(f"{source}: column {key!r} holds {len(names)} classes {names} > num_labels={num_labels}")
        label_feature = datasets.ClassLabel(names=names)
        splits = {s: ds.cast_column(key, label_feature) for s, ds in splits.items()}
    for spec, dataset in splits.items():
        labels = np.asarray(list(dataset[key]))
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_labels:
            raise ValueError(
                f"split {spec!r} of {source}: labels in {key!r} must be class ids in [0, {num_labels}) or "
                f"class names, found values {sorted(set(labels.tolist()))[:10]} (an unlabelled test split?)"
            )
    return splits
