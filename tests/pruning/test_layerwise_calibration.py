"""Layer-wise calibration gives the whole-model pass's statistics and database, with padding and on resume."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from ziplm.core.database import LevelDatabase
from ziplm.models import adapter_for, build_model
from ziplm.models.build import ModelSpec
from ziplm.pruning import database_builder
from ziplm.pruning.capture import capture
from ziplm.pruning.database_builder import DatabaseSettings, build_database
from ziplm.pruning.layerwise import calibrate_layerwise
from ziplm.pruning.methods import METHODS, method
from ziplm.pruning.settings import WHOLE_MODEL_METHODS, PrunerSettings, check_calibration

# Decoder adapters land separately; their equality tests skip until they are there.
HAS_ADAPTER = {name: importlib.util.find_spec(f"ziplm.models.{name}") is not None for name in ("llama", "opt")}


def _tiny_llama() -> nn.Module:
    """LlamaForCausalLM with grouped-query attention (4 query heads on 2 KV heads) and RoPE."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=120, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, attn_implementation="eager",
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _tiny_opt() -> nn.Module:
    """OPTForCausalLM (pre-LN, learned positions offset by the padding mask)."""
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=120, hidden_size=32, ffn_dim=64, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32, do_layer_norm_before=True,
    )  # fmt: skip
    return OPTForCausalLM(config).eval()


def _model(name: str) -> nn.Module:
    if name in HAS_ADAPTER:
        if not HAS_ADAPTER[name]:
            pytest.skip(f"no {name} adapter (ziplm/models/{name}.py) yet")
        return _tiny_llama() if name == "llama" else _tiny_opt()
    spec: ModelSpec = {"bert": TINY_BERT, "gpt2": TINY_GPT2}[name]
    return build_model(spec, "lm" if spec.family == "gpt2" else "base").eval()


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    """Batches of 4 × 16 tokens, the last row of each padded from position 9 (right padding)."""
    out = []
    for _ in range(n):
        ids, mask = token_batch(batch=4, seq=16, pad_from=9)
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


FAMILIES = ["bert", "gpt2", "llama", "opt"]


@pytest.mark.parametrize("name", FAMILIES)
def test_layerwise_hessians_and_energies_equal_the_whole_model_pass(name: str) -> None:
    model, batches = _model(name), _batches()
    layers = range(adapter_for(model).dims(model).num_layers)
    whole = capture(model, batches, layers, show_progress=False).stats
    seen: dict = {}
    calibrate_layerwise(model, batches, list(layers), lambda _, stats: seen.update(stats), show_progress=False)
    assert seen.keys() == whole.keys() and len(seen) == 2 * len(layers)
    for key, stats in whole.items():
        assert seen[key].hessian.n_tokens == stats.hessian.n_tokens == 3 * (3 * 16 + 9)  # padding excluded
        torch.testing.assert_close(seen[key].hessian.hessian(), stats.hessian.hessian(), rtol=1e-10, atol=1e-12)
        assert seen[key].output_energy == pytest.approx(stats.output_energy, rel=1e-10)


def _assert_same_database(a: LevelDatabase, b: LevelDatabase, num_layers: int, tolerance: float = 1e-6) -> None:
    assert a.completed_layers() == b.completed_layers() == set(range(num_layers))
    for layer in range(num_layers):
        for sublayer in ("attention", "ffn"):
            errors = a.errors(layer, sublayer)
            assert errors.keys() == b.errors(layer, sublayer).keys()
            for keep, error in errors.items():
                assert b.errors(layer, sublayer)[keep] == pytest.approx(error, rel=tolerance, abs=1e-9)
                x, y = a.entry(layer, sublayer, keep), b.entry(layer, sublayer, keep)
                assert torch.equal(x.ids, y.ids), (layer, sublayer, keep)
                torch.testing.assert_close(x.weight, y.weight, rtol=10 * tolerance, atol=tolerance)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_layerwise_database_equals_a_whole_model_one(tmp_path: Path, name: str) -> None:
    model, batches = _model(name), _batches()
    whole = build_database(model, batches, tmp_path / "whole", show_progress=False)
    settings = DatabaseSettings(calibration="layerwise")
    layerwise = build_database(model, batches, tmp_path / "layerwise", settings, show_progress=False)
    _assert_same_database(whole, layerwise, adapter_for(model).dims(model).num_layers)
    assert set(layerwise.build_seconds) == {"calibration", "obs"}
    assert model.training is False and all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_an_already_pruned_model_gives_the_same_database(tmp_path: Path, name: str) -> None:
    """Gradual stages calibrate pruned models: removed sublayers (skipped blocks) and narrower ones."""
    from ziplm.core.structure import LayerStructure, Structure

    model, batches = _model(name), _batches()
    adapter = adapter_for(model)
    dims = adapter.dims(model)
    dense = Structure.dense(dims)
    layers = list(dense.layers)
    layers[0] = LayerStructure(heads=(), neurons=tuple(range(0, 64, 2)))  # attention removed, half the FFN
    layers[1] = LayerStructure(heads=(1, 3), neurons=())  # FFN removed
    adapter.apply_structure(model, Structure(dims, tuple(layers)))
    whole = build_database(model, batches, tmp_path / "whole", show_progress=False)
    settings = DatabaseSettings(calibration="layerwise")
    layerwise = build_database(model, batches, tmp_path / "layerwise", settings, show_progress=False)
    _assert_same_database(whole, layerwise, dims.num_layers)


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_resuming_a_half_built_layerwise_database(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, batches = _model(name), _batches()
    settings = DatabaseSettings(calibration="layerwise")
    reference = build_database(model, batches, tmp_path / "reference", settings, show_progress=False)
    add_layer = LevelDatabase.add_layer

    def interrupted(self: LevelDatabase, layer: int, entries: dict) -> None:
        if layer == 2:
            raise KeyboardInterrupt  # the run dies after writing layers 0 and 1
        add_layer(self, layer, entries)

    monkeypatch.setattr(LevelDatabase, "add_layer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_database(model, batches, tmp_path / "db", settings, show_progress=False)
    monkeypatch.setattr(LevelDatabase, "add_layer", add_layer)
    solved: list[int] = []
    solve_one = database_builder._layer_sublayer

    def spy(model: nn.Module, layer: int, *args: object) -> object:
        solved.append(layer)
        return solve_one(model, layer, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(database_builder, "_layer_sublayer", spy)
    resumed = build_database(model, batches, tmp_path / "db", settings, show_progress=False)
    assert solved == [2, 2]  # layers 0 and 1 were only propagated through, not solved again
    _assert_same_database(reference, resumed, 3)
    # A database built whole-model is reused by a layer-wise run (and back): same fingerprint, nothing rebuilt.
    solved.clear()
    build_database(model, batches, tmp_path / "db", DatabaseSettings(), show_progress=False)
    assert solved == []


def test_layerwise_keeps_the_model_where_it_is_and_restores_training_mode(tmp_path: Path) -> None:
    model, batches = _model("gpt2").train(), _batches(1)
    settings = DatabaseSettings(calibration="layerwise")
    build_database(model, batches, tmp_path / "db", settings, show_progress=False, device="cpu")
    assert model.training


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_blocks_run_on_the_gpu_while_the_model_stays_on_the_cpu(tmp_path: Path) -> None:
    model, batches = _model("gpt2"), _batches()
    whole = build_database(model, batches, tmp_path / "whole", show_progress=False)
    settings = DatabaseSettings(calibration="layerwise")
    layerwise = build_database(model, batches, tmp_path / "gpu", settings, show_progress=False, device="cuda")
    assert all(p.device.type == "cpu" for p in model.parameters())
    _assert_same_database(whole, layerwise, 3, tolerance=1e-3)  # CUDA vs CPU float32 forward passes


def test_bad_calibration_values_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown calibration mode 'blockwise'; choose one of whole, layerwise"):
        DatabaseSettings(calibration="blockwise")
    with pytest.raises(ValueError, match="unknown calibration mode"):
        DatabaseSettings.from_pruner(PrunerSettings(calibration="Layerwise"))
    assert DatabaseSettings.from_pruner(PrunerSettings(calibration="layerwise")).calibration == "layerwise"
    for fisher in WHOLE_MODEL_METHODS:
        settings = DatabaseSettings(method=fisher, calibration="layerwise")
        with pytest.raises(ValueError, match=f"not supported by the '{fisher}' method"):
            build_database(_model("bert"), _batches(1), "unused", settings)
    # The mirror the config layer reads equals the methods whose statistics need whole-model passes.
    assert set(WHOLE_MODEL_METHODS) == {m for m in METHODS if method(m).selection == "fisher"}


CPU = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1}
REFUSED = [
    ({"calibration": "sequential"}, CPU, "pruner.calibration must be one of whole, layerwise, got 'sequential'"),
    ({"calibration": "layerwise", "method": "fisher"}, CPU, "with pruner.method=fisher"),
    ({"calibration": "layerwise"}, {**CPU, "strategy": "ddp", "devices": 2}, "starts 2 processes"),
    ({"calibration": "layerwise"}, {**CPU, "num_nodes": 2}, "starts 2 processes"),
    ({"calibration": "layerwise"}, {"accelerator": "gpu", "strategy": "ddp", "devices": "auto"}, "may start several"),
]


@pytest.mark.parametrize(("pruner", "trainer", "message"), REFUSED)
def test_config_check_refuses_what_layerwise_cannot_do(pruner: dict, trainer: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_calibration({"method": "obs", **pruner}, trainer)
    text = str(info.value)
    assert message in text and "\n" not in text, text
    assert "; e.g. pruner.calibration=whole" in text, text
    check_calibration({"method": "obs", **pruner, "calibration": "whole"}, trainer)  # the advice works


def test_layerwise_passes_with_one_process_and_in_a_composed_config() -> None:
    check_calibration({"method": "obs", "calibration": "layerwise"}, CPU)
    check_calibration({"method": "obs", "calibration": "layerwise"}, {**CPU, "strategy": "ddp", "devices": 1})
    from ziplm.config.paths import compose
    from ziplm.config.validate import validate_config

    cfg = compose(["experiment=smoke", "pruner.calibration=layerwise"])
    validate_config(cfg)
    bad = compose(["experiment=smoke", "pruner.calibration=layerwise", "trainer=ddp-cpu"])
    with pytest.raises(ValueError, match=r"^pruner.calibration must be whole with a multi-process trainer"):
        validate_config(bad)
