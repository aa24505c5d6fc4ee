"""Which retrieval set ``task.retrieval`` names, and cheap checks of a local one (no data library: the
config layer runs them before anything loads, so a typo costs milliseconds, not a model load).

Three kinds: the offline builtin ``bbc-headlines``; a folder in MTEB's layout (``corpus.jsonl`` with
``_id``/``title``/``text``, ``queries.jsonl`` with ``_id``/``text``, ``qrels/test.tsv`` with a
``query-id``/``corpus-id``/``score`` header); or a Hub MTEB dataset id such as ``mteb/scifact``.
"""

from __future__ import annotations

import json
from pathlib import Path

RETRIEVAL_BUILTINS = ("bbc-headlines",)
LOCAL_FILES = {"corpus.jsonl": ("_id", "text"), "queries.jsonl": ("_id", "text")}
QRELS_FILE = Path("qrels") / "test.tsv"
QRELS_COLUMNS = ("query-id", "corpus-id", "score")
_EXAMPLE = (
    "e.g. task.retrieval=bbc-headlines, a folder with corpus.jsonl, queries.jsonl and qrels/test.tsv, or mteb/scifact"
)


def retrieval_kind(value: str) -> str:
    """``builtin``, ``local`` (an existing path, or one written like a path) or ``hub`` (``owner/name``)."""
    if value in RETRIEVAL_BUILTINS:
        return "builtin"
    if Path(value).expanduser().exists() or value.startswith((".", "/", "~")) or value.count("/") > 1:
        return "local"
    return "hub" if value.count("/") == 1 else "unknown"


def check_retrieval(value: str, where: str = "task.retrieval") -> None:
    """Refuse an unknown builtin name, or a local folder lacking MTEB's files or columns, in one line.

    Raises:
        ValueError: naming `where`, what is missing, and a value that works.
    """
    kind = retrieval_kind(value)
    if kind == "unknown":
        raise ValueError(f"{where}={value} is no builtin retrieval set ({', '.join(RETRIEVAL_BUILTINS)}); {_EXAMPLE}")
    if kind != "local":
        return
    folder = Path(value).expanduser()
    needed = [*LOCAL_FILES, str(QRELS_FILE)]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{where}={value}: missing {', '.join(missing)} (MTEB's layout needs {', '.join(needed)})")
    for name, columns in LOCAL_FILES.items():
        with (folder / name).open() as handle:
            first = next((line for line in handle if line.strip()), "")
        try:
            row = json.loads(first) if first else {}
        except json.JSONDecodeError:
            raise ValueError(f"{where}={value}: {name} must hold one JSON object per line") from None
        absent = [c for c in columns if c not in row] if isinstance(row, dict) else list(columns)
        if absent:
            raise ValueError(f"{where}={value}: {name} rows lack {', '.join(absent)} (MTEB needs {', '.join(columns)})")
    with (folder / QRELS_FILE).open() as handle:
        header = handle.readline().rstrip("\n").split("\t")
    if tuple(c.strip() for c in header[:3]) != QRELS_COLUMNS:
        raise ValueError(
            f"{where}={value}: {QRELS_FILE} must start with the tab-separated header {' '.join(QRELS_COLUMNS)}, "
            f"got {header[:3]}"
        )
