"""ONNX export: parity with PyTorch on pruned members (uneven layers, removed sublayers), ``ziplm export``, refusals."""

from __future__ import annotations

import copy
import inspect
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2
from ziplm.config.paths import compose
from ziplm.core.structure import Structure
from ziplm.deploy.onnx_export import OnnxParityError, export_onnx, onnx_session, verify_onnx
from ziplm.models import ModelSpec, adapter_for, build_model, load_pruned, save_pruned
from ziplm.models.surgery import RemovedCachedAttention, SkippedAttention, SkippedOutput, ZeroBranch
from ziplm.pipelines.export import run_export

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# Per layer: 2, 0 (attention removed), 3 heads; 10, 40, 0 (FFN removed) neurons, from dense 4 heads / 64 neurons.
HEADS = [[0, 3], [], [0, 1, 2]]
NEURONS = [list(range(0, 64, 6))[:10], list(range(40)), []]


def pruned(spec: ModelSpec, head: str, **overrides: Any) -> tuple[nn.Module, Structure]:
    model = build_model(spec, head, **overrides).eval()  # type: ignore[arg-type]
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(dims, HEADS, NEURONS)
    adapter_for(model).apply_structure(model, structure)
    kinds = {type(m) for m in model.modules()}
    assert kinds & {SkippedAttention, RemovedCachedAttention} and kinds & {SkippedOutput, ZeroBranch}  # removed
    return model, structure


def torch_outputs(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, names: list[str]) -> list[np.ndarray]:
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, return_dict=True, **extra)
    return [out[n].numpy() for n in names]


def padded(batch: int, seq: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 120, (batch, seq), generator=generator)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq // 3 :] = 0
    return ids, mask


@pytest.fixture(scope="module")
def qa_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model, _ = pruned(TINY_BERT, "qa")
    return model, export_onnx(model, tmp_path_factory.mktemp("qa") / "model.onnx", seq_length=16)


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model, _ = pruned(TINY_GPT2, "lm")
    return model, export_onnx(model, tmp_path_factory.mktemp("lm") / "model.onnx", seq_length=16)


@pytest.mark.parametrize(
    ("fixture", "names"), [("qa_export", ["start_logits", "end_logits"]), ("lm_export", ["logits"])]
)
def test_parity_on_other_shapes_than_traced(fixture: str, names: list[str], request: pytest.FixtureRequest) -> None:
    model, path = request.getfixturevalue(fixture)
    session = onnx_session(path)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in session.get_outputs()] == names
    assert all(isinstance(d, str) for i in session.get_inputs() for d in i.shape)  # batch and sequence stay dynamic
    for batch, seq in [(1, 5), (3, 40)]:  # traced at 2 x 16
        ids, mask = padded(batch, seq, seed=seq)
        got = session.run(names, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        for g, w in zip(got, torch_outputs(model, ids, mask, names), strict=True):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)
    assert verify_onnx(model, path, batch_size=3, seq_length=24) <= 1e-4
    assert not [p for p in path.parent.iterdir() if "partial" in p.name]


def test_verify_catches_a_wrong_file(qa_export: tuple[nn.Module, Path], lm_export: tuple[nn.Module, Path]) -> None:
    model, path = qa_export
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.qa_outputs.bias += 0.01  # type: ignore[operator]
    with pytest.raises(OnnxParityError, match="differs from PyTorch"):
        verify_onnx(changed, path, atol=1e-4)
    with pytest.raises(OnnxParityError, match="another model"):
        verify_onnx(model, lm_export[1])
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        verify_onnx(model, path.parent / "missing.onnx")


def test_export_refuses_bad_inputs(tmp_path: Path) -> None:
    model = build_model(TINY_BERT, "base").eval()
    with pytest.raises(ValueError, match="exceeds the model's 64 positions"):
        export_onnx(model, tmp_path / "m.onnx", seq_length=128)
    with pytest.raises(ValueError, match="seq_length must be >= 2"):
        export_onnx(model, tmp_path / "m.onnx", seq_length=1)
    with pytest.raises(ValueError, match="CPU float32"):
        export_onnx(copy.deepcopy(model).double(), tmp_path / "m.onnx", seq_length=8)
    with pytest.raises(ValueError, match="is a directory"):
        export_onnx(model, tmp_path, seq_length=8)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class HalfWritten:
        def save(self, destination: Path, **_: Any) -> None:
            Path(destination).write_bytes(b"half")
            raise OSError("disk full")

    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: HalfWritten())
    with pytest.raises(OSError, match="disk full"):
        export_onnx(build_model(TINY_BERT, "base").eval(), tmp_path / "out" / "m.onnx", seq_length=8)
    assert list((tmp_path / "out").iterdir()) == []


def tiny_tokenizer() -> Any:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "pruned", "model"]
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)})


@pytest.fixture()
def member(tmp_path: Path) -> tuple[nn.Module, Path]:
    model, structure = pruned(TINY_BERT, "classification", num_labels=3)
    return model, save_pruned(model, structure, tmp_path / "2x", tokenizer=tiny_tokenizer())


def test_export_command_writes_verified_onnx_and_hf(member: tuple[nn.Module, Path]) -> None:
    model, folder = member
    cfg = compose([f"checkpoint={folder}", "export.formats=[onnx,hf]"], command="export")
    record = run_export(cfg)  # export.seq_length 128 > 64 positions: traced at 64
    out = folder / "export"
    saved = json.loads((out / "export.json").read_text())
    assert saved == record and saved["formats"] == ["onnx", "hf"] and saved["onnx_seq_length"] == 64
    assert 0 <= saved["onnx_max_abs_diff"] <= 1e-4
    assert saved["files"]["model.onnx"] == (out / "model.onnx").stat().st_size
    assert {"hf/model.safetensors", "hf/ziplm.json", "hf/tokenizer_config.json"} <= set(saved["files"])
    assert saved["total_bytes"] == sum(saved["files"].values())
    assert all(saved["versions"][p] for p in ("torch", "onnx", "onnxruntime"))
    ids, mask = padded(4, 30, seed=7)
    got = onnx_session(out / "model.onnx").run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    np.testing.assert_allclose(got[0], torch_outputs(model, ids, mask, ["logits"])[0], atol=1e-4, rtol=0)
    copied = load_pruned(out / "hf")  # the HF copy is the member, bit for bit
    np.testing.assert_array_equal(
        torch_outputs(copied, ids, mask, ["logits"])[0], torch_outputs(model, ids, mask, ["logits"])[0]
    )
    assert transformers.AutoTokenizer.from_pretrained(out / "hf")("pruned model")["input_ids"] == [2, 5, 6, 3]


def test_export_command_hf_only_to_a_chosen_folder(member: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, folder = member
    out = tmp_path / "exported"
    record = run_export(compose([f"checkpoint={folder}", "export.formats=[hf]", f"export.output={out}"], "export"))
    assert record["onnx_max_abs_diff"] is None and not (out / "model.onnx").exists()
    assert all(name.startswith("hf/") for name in record["files"]) and (out / "export.json").is_file()


def test_export_command_refuses_bad_inputs(member: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, folder = member
    not_member = tmp_path / "plain"
    not_member.mkdir()
    (not_member / "config.json").write_text("{}")
    cases: list[tuple[list[str], type[Exception], str]] = [
        ([], ValueError, "needs checkpoint="),
        ([f"checkpoint={tmp_path / 'nowhere'}"], FileNotFoundError, "does not exist"),
        ([f"checkpoint={not_member}"], ValueError, "not a ziplm model folder"),
        ([f"checkpoint={folder}", "export.formats=[onnx,tflite]"], ValueError, r"unknown export format.*tflite"),
        ([f"checkpoint={folder}", "export.formats=[]"], ValueError, "export.formats is empty"),
    ]
    for overrides, error, message in cases:
        with pytest.raises(error, match=message):
            run_export(compose(overrides, command="export"))
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        run_export(compose([f"checkpoint={folder}"], command="export"))
    assert not (folder / "export").exists()
    assert not any("partial" in name for name in os.listdir(folder))
