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
_NO_CONFIG = ": no sentence-transformers pooling config, using mean pooling"
_UNSUPPORTED = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def _modules(path: Path) -> tuple[str | None, bool]:
    """The pooling folder a ``modules.json`` names (None: no Pooling module), and whether it normalises."""
    try:
        modules = json.loads(path.read_text())
        types = [str(m.get("type", "")) for m in modules]
        pool_dir = next((str(m.get("path") or POOLING_DIR) for m in modules if m.get("type") == _POOLING_TYPE), None)
    except (json.JSONDecodeError, AttributeError, TypeError) as err:
        raise ValueError(f"{path} is not a sentence-transformers module list: {err}") from err
    return pool_dir, _NORMALIZE in types


def _mode(path: Path) -> str:
    """The one pooling mode a pooling ``config.json`` selects."""
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
    return modes[0]


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
        return Pooling("mean", False), f"{where}{_NO_CONFIG}"
    pool_dir, normalize = _modules(root / MODULES)
    if pool_dir is None or not (root / pool_dir / "config.json").is_file():
        return Pooling("mean", normalize), f"{root} lists no pooling config: using mean pooling"
    return Pooling(_mode(root / pool_dir / "config.json"), normalize), None


def is_local(source: str) -> bool:
    """Whether a (resolved) model source names a local folder rather than a Hub id."""
    return Path(source).expanduser().is_dir() or source.startswith(("/", "./", "../", "~", "\\"))


def source_file(source: str, filename: str) -> Path | None:
    """`filename` of a resolved model source: a local folder's, or a Hub id's (from the Hugging Face cache, or
    fetched unless ``HF_HUB_OFFLINE``); None when the model has no such file.

    A Hub file known to be absent (a 404 online, or the cache's ``.no_exist`` marker that 404 left) is None;
    a Hub id that cannot be reached and is not cached raises, so callers can tell "none" from "unknown".

    Raises:
        OSError: the Hub is unreachable or offline and the file is not cached, or the repo is not on the Hub.
        ValueError: `source` is not a valid Hub id.
    """
    if is_local(source):
        path = Path(source).expanduser() / filename
        return path if path.is_file() else None
    from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import RemoteEntryNotFoundError

    if try_to_load_from_cache(source, filename) is _CACHED_NO_EXIST:
        return None
    try:
        return Path(hf_hub_download(source, filename))
    except RemoteEntryNotFoundError:
        return None


def read_hub_pooling(repo_id: str) -> tuple[Pooling, str | None]:
    """`read_pooling` of a Hub model: its ``modules.json`` and pooling config, fetched (or from the cache).

    A repo without ``modules.json`` gets `read_pooling`'s mean-pooling note; one that cannot be fetched
    (offline and not cached) gets mean pooling too, with a note that says how to give its real pooling.

    Raises:
        ValueError: as `read_pooling`, for a pooling config that was fetched but is unusable.
    """
    from huggingface_hub.errors import HFValidationError

    try:
        modules = source_file(repo_id, MODULES)
        pool_dir, normalize = _modules(modules) if modules is not None else (None, False)
        config = source_file(repo_id, f"{pool_dir}/config.json") if pool_dir is not None else None
    except (OSError, HFValidationError) as err:
        reason = " ".join(str(err).split()).split(". ")[0][:200]  # the first sentence
        return Pooling("mean", False), (
            f"the pooling of Hub model {repo_id} could not be fetched ({reason}): using mean pooling; for its own "
            "pooling run once online (to fill the cache) or give a local sentence-transformers folder as model.source"
        )
    if modules is None:
        return Pooling("mean", False), f"Hub model {repo_id} has no {MODULES}{_NO_CONFIG}"
    if config is None:
        return Pooling("mean", normalize), f"Hub model {repo_id} lists no pooling config: using mean pooling"
    return Pooling(_mode(config), normalize), None


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
