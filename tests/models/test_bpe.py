"""The offline byte-level BPE (``bpe:<corpus>:<vocab>``): exact round trips, determinism, caching."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import transformers

from ziplm.data.builtin import tiny_lm, train_texts, wiki_excerpt
from ziplm.models import bpe
from ziplm.models.bpe import (
    METADATA_FILE,
    SPECIAL_TOKEN,
    BpeSpec,
    load_or_train_bpe,
    parse_bpe_spec,
    train_bpe,
)
from ziplm.models.build import ModelSpec, build_tokenizer

SPEC = "bpe:tiny-lm:300"
VOCAB = 300
# Text the tiny corpus never saw: accents, CJK, emoji, tabs, runs of spaces, a trailing newline.
UNSEEN = "Naïve café — 東京 🙂\tthe   cat\n\nsat on the mat.\n"


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return list(tiny_lm()["train"]["text"])


@pytest.fixture(scope="module")
def trained(corpus: list[str]) -> transformers.PreTrainedTokenizerFast:
    return train_bpe(corpus, VOCAB)


def _same(a: transformers.PreTrainedTokenizerFast, b: transformers.PreTrainedTokenizerFast) -> bool:
    return bool(a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str())


def test_trained_bpe_has_the_exact_vocab_and_gpt2_special_tokens(trained: transformers.PreTrainedTokenizerFast) -> None:
    assert len(trained) == VOCAB
    assert trained.bos_token == trained.eos_token == trained.pad_token == trained.unk_token == SPECIAL_TOKEN
    assert trained.convert_tokens_to_ids(SPECIAL_TOKEN) == 0 == trained.pad_token_id == trained.eos_token_id
    assert trained("the cat")["input_ids"][0] != 0, "no special token is added per sequence (GPT-2 style)"


def test_round_trips_any_text_exactly(trained: transformers.PreTrainedTokenizerFast, corpus: list[str]) -> None:
    for text in [UNSEEN, corpus[0], " leading space", ""]:
        ids = trained(text, add_special_tokens=False)["input_ids"]
        assert trained.decode(ids) == text
    assert SPECIAL_TOKEN not in trained.convert_ids_to_tokens(trained(UNSEEN)["input_ids"]), "bytes, never unk"


def test_merges_learn_the_corpus(trained: transformers.PreTrainedTokenizerFast, corpus: list[str]) -> None:
    text = corpus[0]
    assert len(trained(text)["input_ids"]) < 0.6 * len(text.encode("utf-8")), "43 merges already compress"
    assert trained.tokenize(" the") == ["Ġthe"]


def test_training_is_deterministic(trained: transformers.PreTrainedTokenizerFast, corpus: list[str]) -> None:
    again = train_bpe(iter(corpus), VOCAB)  # any iterator of strings works
    assert _same(trained, again)


def test_too_small_corpus_or_vocab_is_a_clear_error(corpus: list[str]) -> None:
    with pytest.raises(ValueError, match=r"only supports a BPE of \d+ tokens.*use a vocab size <="):
        train_bpe(corpus[:3], 5000)
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe(corpus, 257)
    with pytest.raises(ValueError, match="must be strings"):
        train_bpe([b"bytes"], VOCAB)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bpe:nope:4096", "unknown corpus 'nope'"),
        ("bpe:wiki-excerpt", "bpe:<corpus>:<vocab size>"),
        ("bpe:wiki-excerpt:4096:x", "bpe:<corpus>:<vocab size>"),
        ("bpe:wiki-excerpt:4k", "'4k' is not a whole number"),
        ("bpe:wiki-excerpt:100", "at least 258"),
    ],
)
def test_bad_specs_are_clear_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bpe_spec(spec)


def test_build_tokenizer_rejects_an_unknown_bpe_spec_before_any_work(tmp_path: Path) -> None:
    spec = ModelSpec(name="m", family="gpt2", source="scratch", tokenizer="bpe:wikipedia:4096")
    with pytest.raises(ValueError, match=r"unknown corpus 'wikipedia'.*corpora: \['wiki-excerpt', 'tiny-lm'\]"):
        build_tokenizer(spec, cache_dir=tmp_path)
    assert not (tmp_path / "tokenizers").exists()


def test_parse_names_the_cache_folder() -> None:
    assert parse_bpe_spec("bpe:wiki-excerpt:4096") == BpeSpec("wiki-excerpt", 4096)
    assert BpeSpec("wiki-excerpt", 4096).name == "bpe-wiki-excerpt-4096"


def test_trains_on_the_train_split_only() -> None:
    splits = tiny_lm()
    texts = train_texts("tiny-lm")
    assert texts == list(splits["train"]["text"])
    assert not set(texts) & (set(splits["validation"]["text"]) | set(splits["test"]["text"]))


def test_cached_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: transformers.PreTrainedTokenizerFast
) -> None:
    spec = ModelSpec(name="m", family="gpt2", source="scratch", tokenizer=SPEC)
    tok = build_tokenizer(spec, cache_dir=tmp_path, corpus=train_texts)
    folder = tmp_path / "tokenizers" / "bpe-tiny-lm-300"
    assert _same(tok, trained), "the builtin corpus' train split is what the fixture trained on"
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert (meta["spec"], meta["vocab_size"], meta["split"]) == (SPEC, VOCAB, "train")
    assert [p.name for p in tmp_path.joinpath("tokenizers").iterdir()] == [folder.name], "no partial folder left"
    # A plain save_pretrained folder: transformers loads it without ziplm.
    assert _same(transformers.AutoTokenizer.from_pretrained(folder), trained)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(bpe, "train_bpe", fail)
    again = load_or_train_bpe(SPEC, tmp_path, corpus=fail)
    assert _same(again, trained) and again.pad_token == SPECIAL_TOKEN


def test_cache_dir_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corpus: list[str]
) -> None:
    monkeypatch.setenv("ZIPLM_CACHE", str(tmp_path))
    load_or_train_bpe(SPEC, texts=corpus)
    assert (tmp_path / "tokenizers" / "bpe-tiny-lm-300" / "tokenizer.json").is_file()


def _corrupt_tokenizer_json(folder: Path) -> None:
    (folder / "tokenizer.json").write_text("{not json")


def _wrong_spec(folder: Path) -> None:
    meta = json.loads((folder / METADATA_FILE).read_text())
    (folder / METADATA_FILE).write_text(json.dumps({**meta, "vocab_size": 999}))


def _garbage_metadata(folder: Path) -> None:
    (folder / METADATA_FILE).write_text("[1, 2")


def _no_metadata(folder: Path) -> None:
    (folder / METADATA_FILE).unlink()


def _emptied(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


@pytest.mark.parametrize("damage", [_corrupt_tokenizer_json, _wrong_spec, _garbage_metadata, _no_metadata, _emptied])
def test_a_damaged_cache_is_rebuilt_with_a_warning(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    corpus: list[str],
    trained: transformers.PreTrainedTokenizerFast,
    damage: object,
) -> None:
    load_or_train_bpe(SPEC, tmp_path, texts=corpus)
    folder = tmp_path / "tokenizers" / "bpe-tiny-lm-300"
    assert callable(damage)
    damage(folder)
    with caplog.at_level(logging.WARNING, logger="ziplm.models.bpe"):
        tok = load_or_train_bpe(SPEC, tmp_path, texts=corpus)
    assert "rebuilding BPE tokenizer cache" in caplog.text
    assert _same(tok, trained)
    assert _same(load_or_train_bpe(SPEC, tmp_path, texts=corpus), trained), "the rebuilt cache is valid"


def test_a_cache_trained_on_other_text_is_rebuilt(
    tmp_path: Path, corpus: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    load_or_train_bpe(SPEC, tmp_path, texts=corpus[:150])
    with caplog.at_level(logging.WARNING, logger="ziplm.models.bpe"):
        tok = load_or_train_bpe(SPEC, tmp_path, texts=corpus)
    assert "corpus_sha256" in caplog.text
    assert _same(tok, train_bpe(corpus, VOCAB))


@pytest.mark.slow  # parses the Wikipedia dump (~5 s alone, far more on a busy machine)
def test_wiki_excerpt_bpe_learns_from_train_articles_only() -> None:
    splits = wiki_excerpt()
    texts = train_texts("wiki-excerpt")
    assert texts == list(splits["train"]["text"])
    held_out = set(splits["validation"]["title"]) | set(splits["test"]["title"])
    assert held_out and not held_out & set(splits["train"]["title"])


def test_a_cache_miss_without_a_corpus_reader_says_how_to_pass_one(tmp_path: Path) -> None:
    """The models layer never reads datasets: the caller hands it the corpus (ziplm.data.builtin.train_texts)."""
    with pytest.raises(ValueError, match="no corpus reader"):
        load_or_train_bpe(SPEC, tmp_path)
