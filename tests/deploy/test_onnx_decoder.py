"""Cached ONNX decoders of pruned members: ORT greedy decode = torch ``generate``, sidecar = graph, no-ziplm loop."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.models.decoder_checks import tiny_model, tiny_spec
from ziplm.config.paths import REPO_ROOT
from ziplm.core.structure import Structure
from ziplm.deploy.onnx_decoder import (
    OnnxDecodeError,
    export_decoder,
    ort_greedy,
    sidecar_path,
    verify_decoder,
)
from ziplm.deploy.onnx_export import onnx_session
from ziplm.models import adapter_for, build_model, save_pruned

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

EXAMPLE = REPO_ROOT / "examples" / "onnx_generate.py"
# Layer 0: attention removed; layer 1: one KV group (one head for OPT / GPT-2) left, FFN removed; layer 2: both
# partial. Uneven FFN widths throughout.
HEADS = {"llama": [[], [1], [0, 1]], "qwen2": [[], [0], [0, 1]], "opt": [[], [2], [0, 3]], "gpt2": [[], [2], [0, 3]]}
NEURONS = [[3, 7, 20], [], list(range(0, 48, 2))]


def pruned_member(family: str) -> tuple[nn.Module, Structure]:
    torch.manual_seed(0)
    dims = {"num_key_value_heads": 2} if family in ("llama", "qwen2") else {}
    model = tiny_model(tiny_spec(family, **dims))
    structure = Structure.from_kept(adapter_for(model).dims(model), HEADS[family], NEURONS)
    adapter_for(model).apply_structure(model, structure)
    return model, structure


@pytest.fixture(scope="module")
def llama_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model, _ = pruned_member("llama")
    return model, export_decoder(model, tmp_path_factory.mktemp("llama") / "model.onnx")


def check_graph_matches_sidecar(model: nn.Module, path: Path, kv_heads: list[int | None]) -> dict[str, Any]:
    meta = json.loads(sidecar_path(path).read_text())
    session = onnx_session(path)
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    assert list(inputs) == meta["inputs"] and list(outputs) == meta["outputs"]
    assert [la.get("num_key_value_heads") for la in meta["layers"]] == kv_heads
    for layer in meta["layers"]:
        i = layer["layer"]
        if layer["attention"] == "removed":  # no cache tensors at all for a removed attention
            assert not [n for n in [*inputs, *outputs] if f".{i}." in n]
            continue
        for name in (layer["past_key"], layer["past_value"], layer["present_key"], layer["present_value"]):
            shape = inputs.get(name) or outputs[name]
            assert shape[1] == layer["num_key_value_heads"] and shape[3] == layer["head_dim"]
            assert isinstance(shape[0], str) and isinstance(shape[2], str)  # batch, past axes stay dynamic
    assert inputs["input_ids"] == ["batch", "sequence"] and outputs["logits"][2] == meta["vocab_size"]
    assert meta["dtype"] == "float32" and meta["num_layers"] == len(adapter_for(model).layers(model))
    return meta


def test_graph_and_sidecar_describe_the_pruned_cache(llama_export: tuple[nn.Module, Path]) -> None:
    model, path = llama_export
    meta = check_graph_matches_sidecar(model, path, [None, 1, 2])
    assert meta["inputs"][:3] == ["input_ids", "attention_mask", "position_ids"]
    assert meta["outputs"] == ["logits", *[f"present.{i}.{kv}" for i in (1, 2) for kv in ("key", "value")]]
    assert not [p for p in path.parent.iterdir() if "partial" in p.name]


def test_ort_greedy_decode_equals_torch_generate(llama_export: tuple[nn.Module, Path]) -> None:
    model, path = llama_export
    assert verify_decoder(model, path, new_tokens=12, prompt_length=9) <= 1e-4
    # Batch of 3, ragged left padding, a prompt longer than the traced example: tokens and every step's logits.
    meta = json.loads(sidecar_path(path).read_text())
    ids = torch.randint(0, 120, (3, 11), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    mask[1, :4], mask[2, :9] = 0, 0
    tokens, scores = ort_greedy(onnx_session(path), meta, ids.numpy(), mask.numpy(), 10)
    with torch.no_grad():
        out = model.generate(  # type: ignore[operator]
            ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
            output_logits=True, return_dict_in_generate=True,
        )  # fmt: skip
    np.testing.assert_array_equal(tokens, out.sequences.numpy())
    for got, want in zip(scores, out.logits, strict=True):
        np.testing.assert_allclose(got, want.numpy(), atol=1e-4, rtol=0)


def test_verify_catches_a_wrong_file(llama_export: tuple[nn.Module, Path]) -> None:
    model, path = llama_export
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.lm_head.weight.mul_(1.01)  # type: ignore[operator]
    with pytest.raises(OnnxDecodeError, match="differ from PyTorch"):
        verify_decoder(changed, path)
    with pytest.raises(FileNotFoundError, match="export_decoder"):
        verify_decoder(model, path.parent / "missing.onnx")


def test_export_refuses_what_it_cannot_represent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a causal LM"):
        export_decoder(build_model(tiny_spec("gpt2"), "classification", num_labels=2), tmp_path / "m.onnx")
    model, _ = pruned_member("llama")
    with pytest.raises(ValueError, match="CPU float32"):
        export_decoder(copy.deepcopy(model).double(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def run_example(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The example script with torch and ziplm made unimportable: it must need neither."""
    code = (
        "import runpy, sys; sys.modules['torch'] = sys.modules['ziplm'] = sys.modules['transformers'] = None; "
        f"sys.argv = {[str(EXAMPLE), str(folder), *args]!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=folder.parent, env=env, capture_output=True, text=True, timeout=300
    )


def test_example_script_reproduces_torch_tokens(llama_export: tuple[nn.Module, Path]) -> None:
    model, path = llama_export
    prompt = [5, 17, 99, 3, 42]
    done = run_example(path.parent, "--ids", *map(str, prompt), "--max-new-tokens", "10", "--ignore-eos", "--json")
    assert done.returncode == 0, done.stderr
    with torch.no_grad():
        want = model.generate(  # type: ignore[operator]
            torch.tensor([prompt]), max_new_tokens=10, do_sample=False, pad_token_id=0, eos_token_id=None
        )
    assert json.loads(done.stdout)["new_ids"] == want[0, len(prompt) :].tolist()
    missing = run_example(path.parent / "nowhere", "--ids", "1")
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error:") and "Traceback" not in missing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2", "opt", "gpt2"])
def test_other_families(tmp_path: Path, family: str) -> None:
    model, _ = pruned_member(family)
    path = export_decoder(model, tmp_path / "model.onnx")
    check_graph_matches_sidecar(model, path, [None, 1, 2])  # removed, one group / head, two
    assert verify_decoder(model, path, new_tokens=10) <= 1e-4


@pytest.mark.slow
def test_every_attention_removed_has_no_cache_inputs(tmp_path: Path) -> None:
    model, _ = pruned_member("llama")
    dims = adapter_for(model).dims(model)
    adapter_for(model).apply_structure(model, Structure.from_kept(dims, [[], [], []], NEURONS))
    path = export_decoder(model, tmp_path / "model.onnx")
    meta = check_graph_matches_sidecar(model, path, [None, None, None])
    assert meta["inputs"] == ["input_ids", "attention_mask", "position_ids"] and meta["outputs"] == ["logits"]
    assert verify_decoder(model, path) <= 1e-4


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": ""}
    return subprocess.run(
        [sys.executable, "-m", "ziplm", "export", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_cli_exports_and_verifies_a_pruned_llama(tmp_path: Path) -> None:
    model, structure = pruned_member("llama")
    folder = save_pruned(model, structure, tmp_path / "member")
    done = cli(f"checkpoint={folder}")
    assert done.returncode == 0, done.stderr
    record = json.loads((folder / "export" / "export.json").read_text())
    assert record["onnx_kind"] == "decoder-kv-cache" and 0 <= record["onnx_max_abs_diff"] <= 1e-4
    assert {"model.onnx", "model.onnx.json"} <= set(record["files"])
    example = run_example(folder / "export", "--ids", "1", "2", "3", "--max-new-tokens", "4", "--ignore-eos")
    assert example.returncode == 0, example.stderr
    refused = cli(f"checkpoint={folder}", "export.formats=[transformers]")  # partial widths: stock HF cannot
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert [line for line in refused.stderr.splitlines() if line.strip()] == [refused.stderr.strip()]
    assert "partial widths" in refused.stderr and "export.formats=[onnx]" in refused.stderr
