"""``ziplm export export.formats=[transformers]``: a layer-drop member as a stock HF folder, through the real CLI.

The folder must load with plain ``transformers.AutoModelFor...`` (no ziplm manifest, no ziplm config key) and
give the member's logits; a member with partial widths is refused in one line before anything is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from torch import nn

from ziplm.config.paths import REPO_ROOT
from ziplm.core.structure import Structure
from ziplm.models import ModelSpec, adapter_for, build_tokenizer, load_pruned, save_pruned
from ziplm.models.adapter import STRUCTURE_CONFIG_KEY
from ziplm.models.io import MANIFEST
from ziplm.pipelines.export import TRANSFORMERS_FOLDER

LAYERS, HEADS, HIDDEN, FFN = 3, 4, 32, 64
KEPT = [0, 2]  # layer 1 is dropped whole: not a prefix, so the layers really move


def _bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=30522,  # the packaged MiniLM tokenizer's vocabulary
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=FFN,
        max_position_embeddings=64,
        num_labels=3,
    )
    return transformers.BertForSequenceClassification(config).eval()


def _gpt2() -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=120,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=FFN,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def _member(model: nn.Module, folder: Path, kept: list[int], *, partial: bool = False, tokenizer: bool = False) -> Path:
    """Drop every layer not in `kept` whole with ziplm's surgery (or halve layer 0's heads) and save it."""
    heads = [list(range(HEADS)) if i in kept else [] for i in range(LAYERS)]
    neurons = [list(range(FFN)) if i in kept else [] for i in range(LAYERS)]
    if partial:
        heads[0] = [0, 1]
    adapter = adapter_for(model)
    structure = Structure.from_kept(adapter.dims(model), heads, neurons)
    adapter.apply_structure(model, structure)
    spec = ModelSpec(name="t", family="bert", source="scratch", tokenizer="packaged:minilm")
    return save_pruned(model, structure, folder, tokenizer=build_tokenizer(spec) if tokenizer else None)


def _export(member: Path, output: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "", "HF_HUB_OFFLINE": "1"}
    args = ["export", f"checkpoint={member}", "export.formats=[transformers]", f"export.output={output}"]
    return subprocess.run(
        [sys.executable, "-m", "ziplm", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("build", "auto", "tokenizer"),
    [
        (_bert, transformers.AutoModelForSequenceClassification, True),
        (_gpt2, transformers.AutoModelForCausalLM, False),
    ],
    ids=["bert", "gpt2"],
)
def test_layer_drop_member_exports_a_stock_transformers_folder(tmp_path: Path, build, auto, tokenizer: bool) -> None:
    member = _member(build(), tmp_path / "member", KEPT, tokenizer=tokenizer)
    result = _export(member, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]

    folder = tmp_path / "out" / TRANSFORMERS_FOLDER
    assert not (folder / MANIFEST).exists()
    config = json.loads((folder / "config.json").read_text())
    assert STRUCTURE_CONFIG_KEY not in config
    plain = auto.from_pretrained(folder, local_files_only=True).eval()
    assert plain.config.num_hidden_layers == len(KEPT)
    assert (folder / "tokenizer_config.json").is_file() == tokenizer
    if tokenizer:
        assert transformers.AutoTokenizer.from_pretrained(folder)("a student").input_ids

    reference = load_pruned(member)
    ids = torch.randint(0, reference.config.vocab_size, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        got = plain(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    record = json.loads((tmp_path / "out" / "export.json").read_text())
    assert record["transformers_max_abs_diff"] <= 1e-4
    assert record["transformers_layers"] == KEPT
    assert f"{TRANSFORMERS_FOLDER}/config.json" in record["files"]


def test_partial_widths_are_refused_in_one_line_before_anything_is_written(tmp_path: Path) -> None:
    member = _member(_gpt2(), tmp_path / "member", KEPT, partial=True)
    result = _export(member, tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ValueError: ") and "layers [0]" in lines[0], lines[0]
    assert "export.formats=[hf]" in lines[0] and "[onnx]" in lines[0]
    assert not (tmp_path / "out").exists()
