"""Small byte-level BPE tokenizers trained offline on a builtin corpus (``bpe:<corpus>:<vocab size>``).

Why: no decoder-LM weights exist offline, so the offline GPT-2 track trains its teacher from scratch,
and GPT-2's real 50257-token vocabulary makes every step ~10x slower on CPU (the output layer
dominates). A few thousand byte-level BPE tokens learnt on the corpus itself keep the model small.

The tokenizer learns only from the corpus' *training* split, never from its validation/test
splits, so held-out perplexity stays honest. Training is deterministic (same text, same vocab and
merges), so it is cached under ``<cache dir>/tokenizers/<name>/`` as a ``save_pretrained`` folder and
rebuilt (with a warning) if that folder is incomplete, corrupt, or was made for another spec.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

log = logging.getLogger(__name__)

BPE_PREFIX = "bpe:"
# GPT-2's convention: one special token serves as bos, eos, unk and pad (padding is always masked).
SPECIAL_TOKEN = "<|endoftext|>"
# Corpora a BPE may be trained on: builtin tasks (``ziplm.data.builtin``) whose train split has `text`. This
# module never reads them: the caller passes a `CorpusReader` (``ziplm.data.builtin.train_texts``).
CORPORA = ("wiki-excerpt", "tiny-lm")
CORPUS_SPLIT = "train"
MIN_VOCAB_SIZE = 256 + 1 + 1  # the 256 byte symbols, the special token, and at least one merge
FORMAT_VERSION = 1  # bump when the training recipe changes: older caches are then rebuilt
METADATA_FILE = "ziplm_bpe.json"
CACHE_ENV = "ZIPLM_CACHE"
DEFAULT_CACHE_DIR = "outputs/cache"  # = conf/config.yaml's cache_dir with the default output_root
# corpus name -> the texts of its training split (never validation/test): `ziplm.data.builtin.train_texts`.
CorpusReader = Callable[[str], Iterable[str]]


@dataclass(frozen=True)
class BpeSpec:
    """A parsed ``bpe:<corpus>:<vocab size>`` tokenizer spec."""

    corpus: str
    vocab_size: int

    @property
    def spec(self) -> str:
        return f"{BPE_PREFIX}{self.corpus}:{self.vocab_size}"

    @property
    def name(self) -> str:
        """Folder name of the cached tokenizer."""
        return f"bpe-{self.corpus}-{self.vocab_size}"


def parse_bpe_spec(spec: str) -> BpeSpec:
    """Parse ``bpe:<corpus>:<vocab size>``; raise a ValueError saying what is wrong otherwise."""
    usage = f"write it as 'bpe:<corpus>:<vocab size>', e.g. 'bpe:wiki-excerpt:4096' (corpora: {list(CORPORA)})"
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] + ":" != BPE_PREFIX:
        raise ValueError(f"bad BPE tokenizer spec {spec!r}: {usage}")
    corpus, size = parts[1], parts[2]
    if corpus not in CORPORA:
        raise ValueError(f"BPE tokenizer spec {spec!r}: unknown corpus {corpus!r}; {usage}")
    if not size.isdigit():
        raise ValueError(f"BPE tokenizer spec {spec!r}: vocab size {size!r} is not a whole number; {usage}")
    if int(size) < MIN_VOCAB_SIZE:
        raise ValueError(
            f"BPE tokenizer spec {spec!r}: vocab size must be at least {MIN_VOCAB_SIZE} "
            "(256 byte symbols + the special token + one merge)"
        )
    return BpeSpec(corpus, int(size))


def default_cache_dir() -> Path:
    """``$ZIPLM_CACHE`` if set, else ``outputs/cache`` (relative to the working directory, like the CLI)."""
    return Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR))


def train_bpe(texts: Iterable[str], vocab_size: int) -> Any:
    """Train a GPT-2-style byte-level BPE of exactly `vocab_size` tokens on `texts`.

    Byte-level: every byte is a base symbol, so any text round-trips exactly (no unknown tokens).
    No normalizer and no added special tokens per sequence, as in GPT-2.

    Args:
        texts: The training text (any iterable; read once).
        vocab_size: Total tokens, including the 256 bytes and ``SPECIAL_TOKEN`` (id 0).

    Returns:
        A ``PreTrainedTokenizerFast`` with bos/eos/unk/pad = ``SPECIAL_TOKEN``.

    Raises:
        ValueError: `vocab_size` below ``MIN_VOCAB_SIZE``, or a corpus too small to learn that many
            tokens (the message says how many it supports).
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"BPE vocab size must be at least {MIN_VOCAB_SIZE}, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # a merge seen once is noise, not a reusable token
        special_tokens=[SPECIAL_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_non_empty(texts), trainer=trainer)
    learnt = tokenizer.get_vocab_size()
    if learnt != vocab_size:
        raise ValueError(
            f"the corpus only supports a BPE of {learnt} tokens (pairs seen at least twice), not {vocab_size}: "
            f"use a vocab size <= {learnt} or more text"
        )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
    )


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"BPE training text must be strings, got {type(text).__name__}")
        if text.strip():
            yield text


def _fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(str(text).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _load_cached(folder: Path, bpe: BpeSpec, corpus_sha256: str | None) -> tuple[Any | None, str]:
    """(the cached tokenizer, "") if `folder` holds a valid one for `bpe`, else (None, why not).

    `corpus_sha256` (when the caller passed its own text) must match the text the cache was trained on.
    """
    meta_path = folder / METADATA_FILE
    if not meta_path.is_file():
        return None, f"{METADATA_FILE} is missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        return None, f"{METADATA_FILE} is unreadable ({err})"
    expected = {"format": FORMAT_VERSION, "spec": bpe.spec, "vocab_size": bpe.vocab_size}
    if corpus_sha256 is not None:
        expected["corpus_sha256"] = corpus_sha256
    found = {k: meta.get(k) for k in expected} if isinstance(meta, dict) else meta
    if found != expected:
        return None, f"it was made for {found}, not {expected}"
    try:
        tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(folder))
    except Exception as err:  # any failure to load means a corrupt cache
        return None, f"it does not load ({type(err).__name__}: {err})"
    if len(tok) != bpe.vocab_size or tok.eos_token != SPECIAL_TOKEN or tok.pad_token != SPECIAL_TOKEN:
        return None, f"it holds {len(tok)} tokens (eos {tok.eos_token!r}, pad {tok.pad_token!r})"
    return tok, ""


def load_or_train_bpe(
    spec: str,
    cache_dir: str | Path | None = None,
    texts: Iterable[str] | None = None,
    corpus: CorpusReader | None = None,
) -> Any:
    """The tokenizer for ``bpe:<corpus>:<vocab size>``: from the cache, else trained and cached.

    Args:
        spec: The tokenizer spec, e.g. ``bpe:wiki-excerpt:4096``.
        cache_dir: Root of the cache (``<cache_dir>/tokenizers/<name>/``); default `default_cache_dir`.
        texts: Training text to use instead of the corpus' train split (tests pass a tiny corpus);
            a cache trained on other text is then rebuilt.
        corpus: Reads the spec's corpus' train split when the cache misses and `texts` is not given
            (``ziplm.data.builtin.train_texts``); without it such a miss is a ValueError.

    Returns:
        A ``PreTrainedTokenizerFast`` of exactly the spec's vocab size.
    """
    bpe = parse_bpe_spec(spec)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / "tokenizers" / bpe.name
    given = list(texts) if texts is not None else None
    if folder.exists():
        tok, why = _load_cached(folder, bpe, _fingerprint(given) if given is not None else None)
        if tok is not None:
            return tok
        log.warning("rebuilding BPE tokenizer cache %s: %s", folder, why)
    if given is not None:
        training = given
    elif corpus is not None:
        training = [str(text) for text in corpus(bpe.corpus)]
    else:
        raise ValueError(
            f"no cached BPE tokenizer {bpe.spec!r} under {folder} and no corpus reader to train one: pass "
            "corpus=ziplm.data.builtin.train_texts (or the training texts)"
        )
    tok = train_bpe(training, bpe.vocab_size)
    _save(tok, folder, bpe, training)
    return tok


def _save(tok: Any, folder: Path, bpe: BpeSpec, corpus: list[str]) -> None:
    """Write into a private temporary folder, then swap it in (readers never see a half-written one)."""
    tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    meta = {
        "format": FORMAT_VERSION,
        "spec": bpe.spec,
        "vocab_size": bpe.vocab_size,
        "corpus": bpe.corpus,
        "split": CORPUS_SPLIT,
        "corpus_sha256": _fingerprint(corpus),
        "tokenizers_version": _tokenizers_version(),
    }
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    if folder.exists() and not folder.is_dir():
        folder.unlink()
    try:
        tmp.rename(folder)
    except OSError:  # another process cached it meanwhile: same deterministic content, keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def _tokenizers_version() -> str:
    import tokenizers

    return str(tokenizers.__version__)
