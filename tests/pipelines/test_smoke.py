"""``ziplm smoke``: surgery + save + exact reload on a tiny model, for both families."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ziplm.config.paths import compose
from ziplm.pipelines import smoke


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-gpt2"])
def test_smoke_prunes_saves_and_reloads_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    monkeypatch.setattr(smoke, "run_dir", lambda cfg: tmp_path)
    smoke.run_smoke(compose([f"model={model}", "logger=none"], command="smoke"))
    rows = json.loads((tmp_path / "smoke.json").read_text())
    assert [r["reload_exact"] for r in rows] == [True, True, True]
    fractions = [r["fraction_of_dense"] for r in rows]
    assert fractions[0] == 1.0 and fractions[0] > fractions[1] > fractions[2]
    assert (tmp_path / "family" / "keep0.25" / "structure.md").is_file()
