"""The latency table and the levels database take their level grids from one function, so they agree: every
database level has a table time of its own (no interpolation) for any grid settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import token_batch
from ziplm.config.paths import compose
from ziplm.config.settings import RunSettings
from ziplm.core.levels import ffn_levels, head_levels, level_grids
from ziplm.models import adapter_for, build_model
from ziplm.pipelines.common import model_spec
from ziplm.pipelines.latency import level_grids as table_grids
from ziplm.pruning.database_builder import build_database
from ziplm.pruning.levels_database import fingerprint

GRIDS = [
    [],
    ["pruner.ffn_group_size=2"],
    ["pruner.ffn_round_to=8", "pruner.ffn_grid_ratio=0.7"],
    ["pruner.ffn_group_size=4", "pruner.ffn_round_to=8", "pruner.ffn_grid_ratio=0.5"],
]


@pytest.mark.parametrize("overrides", GRIDS, ids=lambda o: ",".join(o) or "defaults")
def test_table_and_database_levels_are_identical(tmp_path: Path, overrides: list[str]) -> None:
    cfg = compose(["experiment=smoke", f"output_root={tmp_path}", *overrides])
    model = build_model(model_spec(cfg), "base").eval()
    dims = adapter_for(model).dims(model)
    table_heads, table_ffn = table_grids(cfg, dims.num_heads, dims.intermediate_size)
    settings = RunSettings.from_config(cfg).database  # what a run builds its database with
    ids, mask = token_batch(batch=2, seq=8, pad_from=None)
    batches = [{"input_ids": ids, "attention_mask": mask}]
    fp = fingerprint(model, batches, settings)
    assert (list(fp.head_levels), list(fp.ffn_levels)) == (table_heads, table_ffn)
    torch.manual_seed(0)
    db = build_database(model, batches, tmp_path / "db", settings, show_progress=False)
    for layer in range(dims.num_layers):
        assert sorted(db.errors(layer, "attention"), reverse=True) == table_heads
        assert sorted(db.errors(layer, "ffn"), reverse=True) == table_ffn


def test_level_grids_is_head_levels_and_ffn_levels() -> None:
    assert level_grids(12, 3072) == (head_levels(12), ffn_levels(3072))
    assert level_grids(4, 64, 0.5, 8, 4) == (head_levels(4), ffn_levels(64, ratio=0.5, round_to=8, group_size=4))
