"""``ziplm compress``: a saved tiny member is compressed, evaluated, timed and saved; bad input is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ziplm.compress import load_int8
from ziplm.config.paths import compose
from ziplm.core.structure import Structure
from ziplm.models import ModelSpec, adapter_for, build_model, build_tokenizer, load_pruned, save_pruned
from ziplm.pipelines import compress as compress_module

FAST = ["experiment=smoke", "search.speedup_rounds=2", "hardware.batch_size=4", "hardware.seq_length=16",
        "hardware.warmup=1", "hardware.max_seconds_per_entry=0.5"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: waking a second intra-op thread per op costs more than the op on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _member(tmp_path: Path, family: str) -> Path:
    bert = family == "bert"
    spec = ModelSpec(
        name="t",
        family=family,
        source="scratch",
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        vocab_size=30522 if bert else 50257,
        max_position_embeddings=128,
        tokenizer="packaged:minilm" if bert else "packaged:gpt2",
    )
    model = build_model(spec, "classification" if bert else "lm", **({"num_labels": 2} if bert else {}))
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(dims, [[0, 1, 3], []], [range(40), range(64)])
    adapter_for(model).apply_structure(model, structure)
    return save_pruned(model, structure, tmp_path / "member", tokenizer=build_tokenizer(spec))


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> dict:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    monkeypatch.setattr(compress_module, "run_dir", lambda cfg: out)
    compress_module.run_compress(compose([*FAST, *overrides], command="compress"))
    return dict(json.loads((out / "compression.json").read_text()))


def test_obs_int8_on_a_bert_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _member(tmp_path, "bert")
    record = _run(tmp_path, monkeypatch, [f"checkpoint={folder}", "compression=obs50-int8"])
    assert record["settings"] == {"unstructured": "obs", "sparsity": 0.5, "int8": True, "damp": 0.01, "block_size": 128}
    assert record["calibration_samples"] == 64  # the smoke task has 64 training rows
    assert 0.0 <= record["compressed"]["accuracy"] <= 100.0 and record["speedup"] > 0
    # 4 attention + 2 FFN matrices in layer 0, FFN only in layer 1 (its attention was removed): 6 + 2.
    assert len(record["sparsity"]["matrices"]) == 8 and record["sparsity"]["overall"] >= 0.5
    member = load_pruned(folder)
    reloaded = load_int8(member, record["compressed"]["weights"])
    ids = torch.randint(0, 30522, (2, 16))
    assert reloaded(input_ids=ids).logits.shape == (2, 2)


def test_obs_only_on_a_gpt2_member_saves_a_loadable_member(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _member(tmp_path, "gpt2")
    overrides = [f"checkpoint={folder}", "compression=obs50", "model=tiny-gpt2", "task=tiny-lm"]
    record = _run(tmp_path, monkeypatch, overrides)
    assert record["metric"] == "perplexity" and record["compressed"]["perplexity"] > 1
    saved = load_pruned(Path(record["compressed"]["weights"]).parent)
    for module in (saved.transformer.h[0].attn.c_attn, saved.transformer.h[1].mlp.c_proj):
        weight = module.weight.t()  # Conv1D stores (d_in, d_out)
        assert ((weight == 0).sum(dim=1) == weight.shape[1] // 2).all()


def test_bad_input_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs checkpoint="):
        compress_module.run_compress(compose(FAST, command="compress"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compress_module.run_compress(compose([*FAST, f"checkpoint={tmp_path / 'nope'}"], command="compress"))
    with pytest.raises(ValueError, match="not a ziplm model folder"):
        compress_module.run_compress(compose([*FAST, f"checkpoint={tmp_path}"], command="compress"))
    folder = _member(tmp_path, "bert")
    bad = [
        (["compression=obs50", "compression.sparsity=1.5"], r"sparsity must be a number in \[0, 1\)"),
        (["compression=int8", "compression.sparsity=0.3"], "needs an unstructured method"),
        (["compression=obs50", "compression.unstructured=random"], "unknown unstructured method"),
        (["compression=obs50", "compression.calibration_samples=0"], "calibration_samples >= 1"),
        (["compression=int8", "hardware.dtype=bfloat16"], "INT8 dynamic quantization runs"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            compress_module.run_compress(compose([*FAST, f"checkpoint={folder}", *overrides], command="compress"))
