"""The levels database on tiny BERT and GPT-2: exact stitching, honest errors, resume, fingerprints."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2, token_batch
from ziplm.core.database import LevelDatabase
from ziplm.core.structure import Structure
from ziplm.models import adapter_for, build_model
from ziplm.models.build import ModelSpec
from ziplm.pruning import capture as capture_module
from ziplm.pruning.database_builder import DatabaseSettings, build_database
from ziplm.pruning.stitch import stitch


def _model(spec: ModelSpec) -> nn.Module:
    return build_model(spec, "lm" if spec.family == "gpt2" else "base").eval()


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    out = []
    for _ in range(n):
        ids, mask = token_batch(batch=4, seq=16, pad_from=9)
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def _hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states[-1]


def _full_choice(model: nn.Module) -> list[tuple[int, int]]:
    dims = adapter_for(model).dims(model)
    return [(dims.num_heads, dims.intermediate_size)] * dims.num_layers


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_nothing_removed_level_equals_dense(tmp_path: Path, spec: ModelSpec) -> None:
    model, batches = _model(spec), _batches()
    db = build_database(model, batches, tmp_path / "db", show_progress=False)
    stitched = stitch(model, db, _full_choice(model))
    torch.testing.assert_close(_hidden(stitched, batches[0]), _hidden(model, batches[0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_errors_are_monotone_and_module_removal_is_one(tmp_path: Path, spec: ModelSpec) -> None:
    model = _model(spec)
    db = build_database(model, _batches(), tmp_path / "db", show_progress=False)
    for layer in range(adapter_for(model).dims(model).num_layers):
        for sublayer in ("attention", "ffn"):
            errors = db.errors(layer, sublayer)
            by_keep = [errors[k] for k in sorted(errors, reverse=True)]  # from dense to removed
            assert by_keep[0] == pytest.approx(0.0, abs=1e-9)
            assert errors[0] == 1.0
            assert all(b >= a - 1e-12 for a, b in itertools.pairwise(by_keep)), by_keep


def _projection_outputs(model: nn.Module, layer: int, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    module = adapter_for(model).output_projection(model, layer, "ffn")
    assert module is not None
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
    for batch in batches:
        with torch.no_grad():
            model(**batch)
    handle.remove()
    mask = torch.cat([b["attention_mask"].reshape(-1) for b in batches]).bool()
    return torch.cat([o.reshape(-1, o.shape[-1]) for o in outputs])[mask]


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_stored_error_equals_measured_relative_output_error(tmp_path: Path, spec: ModelSpec) -> None:
    """e = Σ‖Ŵx+b − (Wx+b)‖² / Σ‖Wx+b‖² over non-padding calibration tokens, measured by forward passes."""
    model, batches = _model(spec), _batches()
    db = build_database(model, batches, tmp_path / "db", show_progress=False)
    layer, dims = 1, adapter_for(model).dims(model)
    keep = sorted(db.errors(layer, "ffn"))[len(db.errors(layer, "ffn")) // 2]
    choice = _full_choice(model)
    choice[layer] = (dims.num_heads, keep)  # only this FFN changes, so its inputs stay the dense ones
    dense_out = _projection_outputs(model, layer, batches)
    pruned_out = _projection_outputs(stitch(model, db, choice), layer, batches)
    measured = float((pruned_out - dense_out).pow(2).sum() / dense_out.pow(2).sum())
    assert 0 < measured < 1
    assert db.errors(layer, "ffn")[keep] == pytest.approx(measured, rel=1e-3)


def test_interrupted_build_resumes_only_missing_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, batches = _model(TINY_BERT), _batches()
    folder = tmp_path / "db"
    build_database(model, batches, folder, show_progress=False)
    reference = json.loads((folder / "manifest.json").read_text())
    # Simulate a crash after layer 0: layers 1 and 2 never written.
    manifest = json.loads((folder / "manifest.json").read_text())
    for layer in ("1", "2"):
        del manifest["layers"][layer]
        (folder / f"layer_00{layer}.safetensors").unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    seen: list[list[int]] = []
    real_capture = capture_module.capture

    def spy(
        model: nn.Module, batches: object, layers: object, show_progress: bool = True, calibrate: object = None
    ) -> object:
        seen.append(list(layers))  # type: ignore[call-overload]
        return real_capture(model, batches, layers, show_progress, calibrate)  # type: ignore[arg-type]

    monkeypatch.setattr("ziplm.pruning.database_builder.capture", spy)
    db = build_database(model, batches, folder, show_progress=False)
    assert seen == [[1, 2]]
    assert db.completed_layers() == {0, 1, 2}
    assert json.loads((folder / "manifest.json").read_text())["layers"] == reference["layers"]
    build_database(model, batches, folder, show_progress=False)  # complete: nothing recomputed
    assert seen == [[1, 2]]


def test_stale_database_is_refused(tmp_path: Path) -> None:
    model, batches = _model(TINY_BERT), _batches()
    build_database(model, batches, tmp_path / "db", show_progress=False)
    with pytest.raises(ValueError, match=r"different inputs \(damp: stored 0.01 vs run 0.1\)"):
        build_database(model, batches, tmp_path / "db", DatabaseSettings(damp=0.1), show_progress=False)
    with pytest.raises(ValueError, match="calibration"):
        build_database(model, _batches(2), tmp_path / "db", show_progress=False)
    (tmp_path / "db" / "manifest.json").write_text("{broken")
    with pytest.raises(ValueError, match="corrupt"):
        build_database(model, batches, tmp_path / "db", show_progress=False)


def test_empty_calibration_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration set is empty"):
        build_database(_model(TINY_BERT), [], tmp_path / "db", show_progress=False)
    padding_only = [{"input_ids": torch.ones(2, 4, dtype=torch.long), "attention_mask": torch.zeros(2, 4)}]
    with pytest.raises(ValueError, match=r"empty|no token"):
        build_database(_model(TINY_BERT), padding_only, tmp_path / "db2", show_progress=False)


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_database_of_an_already_pruned_model(tmp_path: Path, spec: ModelSpec) -> None:
    """Gradual schedules rebuild the database on the current (pruned) model; keys stay dense-width."""
    model, batches = _model(spec), _batches()
    dims = adapter_for(model).dims(model)
    first = Structure.from_kept(dims, [[0, 1, 2], [], [1, 3]], [range(0, 64, 2), range(64), []])
    adapter_for(model).apply_structure(model, first)
    db = build_database(model, batches, tmp_path / "db", show_progress=False)
    assert max(db.errors(0, "attention")) == 3 and max(db.errors(0, "ffn")) == 32
    assert sorted(db.errors(1, "attention")) == [0] and sorted(db.errors(2, "ffn")) == [0]
    current = [(3, 32), (0, 64), (2, 0)]
    torch.testing.assert_close(
        _hidden(stitch(model, db, current), batches[0]), _hidden(model, batches[0]), atol=1e-6, rtol=0
    )
    smaller = stitch(model, db, [(2, 16), (0, 0), (1, 0)])
    kept = Structure.from_dict(smaller.config.ziplm_structure)
    assert kept.is_subset_of(first)
    assert LevelDatabase.read_manifest(tmp_path / "db")["fingerprint"]["dims"] == dims.to_dict()


def test_baseline_methods_share_the_database_and_lose_to_obs(tmp_path: Path) -> None:
    """Magnitude and random selection (no weight update) err more than structured OBS on the same data."""
    model, batches = _model(TINY_BERT), _batches()
    totals = {}
    for method in ("obs", "magnitude", "random"):
        db = build_database(model, batches, tmp_path / method, DatabaseSettings(method=method), show_progress=False)
        totals[method] = sum(sum(db.errors(l, s).values()) for l in range(3) for s in ("attention", "ffn"))
        assert all(db.errors(l, "ffn")[0] == 1.0 for l in range(3))
    assert totals["obs"] < totals["magnitude"] and totals["obs"] < totals["random"], totals
    with pytest.raises(ValueError, match="unknown structure-selection method"):
        build_database(model, batches, tmp_path / "x", DatabaseSettings(method="fischer"), show_progress=False)


def _kept_ids(db: LevelDatabase) -> dict[tuple[int, str, int], list[int]]:
    return {
        (layer, sub, keep): db.entry(layer, sub, keep).ids.tolist()
        for layer in range(3)
        for sub in ("attention", "ffn")
        for keep in db.errors(layer, sub)
    }


def test_random_baseline_is_seeded_by_the_run(tmp_path: Path) -> None:
    """Another seed selects other structures (and never reuses the database); the same seed, the same ones."""
    model, batches = _model(TINY_BERT), _batches()

    def kept(seed: int, folder: str) -> dict[tuple[int, str, int], list[int]]:
        settings = DatabaseSettings(method="random", seed=seed)
        return _kept_ids(build_database(model, batches, tmp_path / folder, settings, show_progress=False))

    first, again, other = kept(1, "a"), kept(1, "b"), kept(2, "c")
    assert first == again
    assert first != other
    assert first[(0, "ffn", 31)] != other[(0, "ffn", 31)]  # 31 of 64 neurons: another half
    assert first[(0, "ffn", 31)] != first[(1, "ffn", 31)]  # and every sublayer draws on its own
    with pytest.raises(ValueError, match="seed: stored 1 vs run 2"):
        build_database(model, batches, tmp_path / "a", DatabaseSettings(method="random", seed=2), show_progress=False)
    # The seed is no input of the deterministic methods: their databases are shared across seeds.
    build_database(model, batches, tmp_path / "obs", DatabaseSettings(seed=1), show_progress=False)
    build_database(model, batches, tmp_path / "obs", DatabaseSettings(seed=2), show_progress=False)


def test_database_of_another_solver_version_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ziplm.pruning import levels_database

    model, batches = _model(TINY_BERT), _batches()
    folder = tmp_path / "db"
    build_database(model, batches, folder, show_progress=False)
    stored = LevelDatabase.read_manifest(folder)["fingerprint"]
    assert stored["version"] == levels_database.DATABASE_FORMAT
    built_by = re.escape(f"({levels_database.DATABASE_FORMAT!r}; this code writes 'levels-v999')")
    monkeypatch.setattr(levels_database, "DATABASE_FORMAT", "levels-v999")
    with pytest.raises(ValueError, match=f"built by another version of the level solver {built_by}"):
        build_database(model, batches, folder, show_progress=False)
    # A manifest from before versions were recorded is never taken for a current one either.
    monkeypatch.undo()
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["fingerprint"]["version"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"another version of the level solver \('levels-v1'.*delete the folder"):
        build_database(model, batches, folder, show_progress=False)
