"""A sentence-embedding model's pooling, read from and written to its folder (sentence-transformers layout).

sentence-transformers folders list their modules in ``modules.json`` (Transformer → Pooling → optional
Normalize) and keep the pooling mode in ``1_Pooling/config.json`` (``pooling_mode_*_tokens`` keys). The
pruned encoder is only half of the embedder: without its pooling, evaluation and export would embed
differently from the dense model. So the run reads the pooling from the dense model's folder, and every
member folder gets the same two files (plus ``embedding.json``: the pooling and the dense reference it
was pruned from, which ``ziplm eval`` scores fidelity against).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ziplm.core.embedding import Pooling

MODULES = "modules.json"
POOLING_DIR = "1_Pooling"
EMBEDDING_RECORD = "embedding.json"
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_TYPE = "sentence_transformers.models.Pooling"
# sentence-transformers' config keys -> our modes (mean_sqrt_len and weighted-mean are not supported).
_MODE_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
_UNSUPPORTED = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def read_pooling(folder: str | Path | None) -> tuple[Pooling, str | None]:
    """The pooling of the model in `folder`, and a note when it was not configured there.

    A folder without ``modules.json`` (a plain BERT, a random test model: `folder` None) falls back to mean
    pooling without normalisation, and the note says so (one console line, not an error: mean pooling is
    the usual choice for an encoder never trained as an embedder).

    Raises:
        ValueError: a pooling config that is unreadable, selects no mode, several modes, or one we do not
            support (mean_sqrt_len, weighted mean, last token).
    """
    root = Path(folder).expanduser() if folder is not None else None
    if root is None or not (root / MODULES).is_file():
        where = f"{root} has no {MODULES}" if root is not None else "a model without a folder (random weights)"
        return Pooling("mean", False), f"{where}: no sentence-transformers pooling config, using mean pooling"
    try:
        modules = json.loads((root / MODULES).read_text())
        types = [str(m.get("type", "")) for m in modules]
        pool_dir = next((str(m.get("path") or POOLING_DIR) for m in modules if m.get("type") == _POOLING_TYPE), None)
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        raise ValueError(f"{root / MODULES} is not a sentence-transformers module list: {err}") from err
    normalize = _NORMALIZE in types
    if pool_dir is None or not (root / pool_dir / "config.json").is_file():
        return Pooling("mean", normalize), f"{root} lists no pooling config: using mean pooling"
    path = root / pool_dir / "config.json"
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is corrupt ({err})") from err
    odd = [k for k in _UNSUPPORTED if config.get(k)]
    if odd:
        raise ValueError(f"{path} selects {odd}: ziplm pools with mean, cls or max only")
    modes = [mode for key, mode in _MODE_KEYS.items() if config.get(key)]
    if len(modes) != 1:
        raise ValueError(f"{path} must select exactly one of {sorted(_MODE_KEYS)}, selects {modes or 'none'}")
    return Pooling(modes[0], normalize), None


def write_pooling(folder: str | Path, pooling: Pooling, hidden_size: int, reference: dict[str, Any]) -> None:
    """Write `pooling` into a member `folder` in the sentence-transformers layout, and ``embedding.json``:
    the pooling plus `reference` (where the dense model it must stay faithful to lives)."""
    root = Path(folder)
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": _POOLING_TYPE},
    ]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": _NORMALIZE})
    (root / POOLING_DIR).mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"word_embedding_dimension": hidden_size}
    config |= {key: mode == pooling.mode for key, mode in _MODE_KEYS.items()}
    config["pooling_mode_mean_sqrt_len_tokens"] = False
    (root / POOLING_DIR / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (root / MODULES).write_text(json.dumps(modules, indent=2) + "\n")
    record = {"pooling": pooling.mode, "normalize": pooling.normalize, "reference": reference}
    (root / EMBEDDING_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def read_reference(folder: str | Path) -> dict[str, Any] | None:
    """The dense reference a member recorded in ``embedding.json`` (None: not an embedding member)."""
    path = Path(folder).expanduser() / EMBEDDING_RECORD
    if not path.is_file():
        return None
    reference = json.loads(path.read_text()).get("reference")
    return dict(reference) if isinstance(reference, dict) else None
