"""``conf/model`` entries of the Llama-family and OPT decoders: compose, validate, build; the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ziplm.config.paths import REPO_ROOT, compose
from ziplm.config.validate import validate_config

HUB = ["llama-2-7b", "llama-3-8b", "mistral-7b", "qwen2.5-7b", "opt-1.3b"]
TINY = {"tiny-llama": ("llama", 2, 16), "tiny-qwen": ("qwen3", 2, 32), "tiny-opt": ("opt", 4, 8)}


@pytest.mark.parametrize("model", HUB + list(TINY))
def test_model_options_compose_and_validate(model: str) -> None:
    cfg = compose([f"model={model}"])
    validate_config(cfg)
    assert cfg.model.name == model and cfg.model.prune_query_heads is False


@pytest.mark.parametrize(("model", "want"), TINY.items())
def test_tiny_decoders_build_from_their_config(model: str, want: tuple[str, int, int]) -> None:
    from ziplm.models import adapter_for, build_model
    from ziplm.pipelines.common import model_spec

    built = build_model(model_spec(compose([f"model={model}"])), "lm")
    dims = adapter_for(built).dims(built)
    assert (built.config.model_type, dims.num_heads, dims.head_dim) == want


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model=llama-3-8b"], "not supported yet: ziplm prunes whole KV groups"),
        (["model=llama-2-7b"], "no grouped-query attention .*nothing to prune inside a group"),
        (["model=tiny-opt"], "no grouped-query attention"),
        (["model=tiny-qwen", "model.num_key_value_heads=3"], r"model\.num_key_value_heads must be a divisor"),
        (["model=tiny-opt", "model.head_dim=16"], r"model\.head_dim must be null for family opt"),
    ],
)
def test_bad_attention_settings_are_refused_before_anything_runs(overrides: list[str], message: str) -> None:
    cfg = compose(overrides + (["model.prune_query_heads=true"] if len(overrides) == 1 else []))
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)


# With GPT-2's 50257-token vocabulary a 32-wide decoder's output layer costs ~80x its blocks (at most ~1.04x is
# reachable), so the runs use the 4096-token BPE and a width where the blocks dominate (~45 s each, idle).
OPT_MINI = ["model.tokenizer=bpe:wiki-excerpt:4096", "model.vocab_size=4096", "model.hidden_size=256",
            "model.num_heads=8", "model.intermediate_size=1024", "model.num_layers=4"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("model", "family", "extra"), [("llama-mini", "llama", []), ("tiny-opt", "opt", OPT_MINI)])
def test_cli_smoke_preset_makes_a_family(tmp_path: Path, model: str, family: str, extra: list[str]) -> None:
    """``ziplm run experiment=smoke model=<decoder> task=tiny-lm``: the whole pipeline in a subprocess."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    args = ["run", "experiment=smoke", f"model={model}", "task=tiny-lm", f"output_root={tmp_path}", *extra]
    result = subprocess.run(
        [sys.executable, "-m", "ziplm", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    manifests = sorted(tmp_path.glob("run/smoke/*/family/*/ziplm.json"))
    assert len(manifests) == 2
    assert {json.loads(m.read_text())["family"] for m in manifests} == {family}
