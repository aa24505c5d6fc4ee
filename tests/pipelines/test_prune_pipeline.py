"""Both schedules end to end on a tiny BERT and a generated task (seconds), including resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ziplm.config.paths import compose
from ziplm.core.latency import LatencyModel, LatencyTable
from ziplm.core.structure import Structure
from ziplm.latency.speedup import MeasuredSpeedup
from ziplm.models import load_pruned
from ziplm.pipelines import members, prune, schedules

SMOKE = ["experiment=smoke", "logger=none", "search.speedup_rounds=2", "hardware.repetitions=4"]


def _linear_table(model: object, env: object, heads: list[int], ffn: list[int], cache_dir: str, *_: object) -> tuple:
    """A deterministic table (attention 0.1, FFN 0.3 per layer, T_base 1.0): timing a tiny model on a
    shared CPU is noise; measurement itself is tested in tests/latency. Max speedup with 2 layers: 5x."""
    table = LatencyTable(
        environment={"fake": True},
        base_time=1.0,
        attention={k: 0.1 * k / max(heads) for k in heads},
        ffn={m: 0.3 * m / max(ffn) for m in ffn},
    )
    path = Path(cache_dir) / "latency" / "linear.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    return table, path, False


def _table_machine(bias: float = 1.0) -> object:
    """`timed_speedups` of a machine whose every structure runs `bias` × as fast as the linear table
    predicts: deterministic, so the measured-speedup loop can be tested exactly."""

    def speedups(dense: object, models: list[torch.nn.Module], *_: object) -> list[MeasuredSpeedup]:
        results = []
        for model in models:
            structure = Structure.from_dict(model.config.ziplm_structure)
            heads, ffn = structure.dims.num_heads, structure.dims.intermediate_size
            overhead = 1.0 - 0.4 * structure.dims.num_layers
            seconds = overhead + sum(
                0.1 * len(la.heads) / heads + 0.3 * len(la.neurons) / ffn for la in structure.layers
            )
            results.append(MeasuredSpeedup(bias / seconds, bias / seconds, bias / seconds, 5))
        return results

    return speedups


def _run(
    tmp_path: Path, out: Path, overrides: list[str], monkeypatch: pytest.MonkeyPatch, machine_bias: float = 1.0
) -> None:
    monkeypatch.setattr(prune, "run_dir", lambda cfg: out.mkdir(parents=True, exist_ok=True) or out)
    monkeypatch.setattr(prune, "load_or_measure", _linear_table)
    monkeypatch.setattr(members, "timed_speedups", _table_machine(machine_bias))
    monkeypatch.setattr(members, "noise_floor", lambda *_: MeasuredSpeedup(1.0, 0.995, 1.005, 5))
    cfg = compose([*SMOKE, f"output_root={tmp_path}", f"cache_dir={tmp_path / 'cache'}", *overrides])
    prune.run_prune(cfg)


def _check_family(out: Path, targets: list[float], meets_targets: bool = True) -> list[dict]:
    """Every member saved, loadable, with the predicted speedup of the structure it really has (at least
    its target when `meets_targets`: searched members; a layer-drop member is the *closest* layer count)."""
    table = LatencyTable.load(out / "latency_table.json")
    records = []
    for target in targets:
        folder = out / "family" / f"{target:g}x"
        record = json.loads((folder / "metrics.json").read_text())
        model = load_pruned(folder)
        latency = LatencyModel(table, model.config.num_hidden_layers)
        assert record["predicted_speedup"] >= target * (1 - 1e-9) or not meets_targets
        # The structure the model really has must give the recorded predicted speedup.
        choice = list(zip(record["heads_kept"], record["neurons_kept"], strict=True))
        assert latency.speedup(choice) == pytest.approx(record["predicted_speedup"])
        assert "metric/accuracy" in record and record["measured_speedup"] > 0
        records.append(record)
    assert (out / "results.md").read_text().count("|") > 20
    assert (out / "results.png").stat().st_size > 1000
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 + len(targets)
    return records


def test_oneshot_family_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    _run(tmp_path, out, [], monkeypatch)
    _check_family(out, [1.5, 2.0])
    first = (out / "family" / "1.5x" / "metrics.json").stat().st_mtime_ns
    (out / "family" / "2x" / "metrics.json").unlink()  # as if the run died while making 2x
    _run(tmp_path, out, [], monkeypatch)
    assert (out / "family" / "1.5x" / "metrics.json").stat().st_mtime_ns == first  # skipped
    _check_family(out, [1.5, 2.0])


def test_gradual_family_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    gradual = [
        "schedule=gradual",
        "search.targets=[1.5,2.0]",
        "distill.epochs_per_stage=1",
        "pruner.calibration_samples=32",
        "search.spdy_random_starts=1",
        "search.spdy_local_steps=1",
    ]
    built_on, stitched = _record_stages(monkeypatch)
    _run(tmp_path, out, gradual, monkeypatch)
    records = _check_family(out, [1.5, 2.0])
    # Later stages re-prune earlier ones: kept counts never grow.
    assert all(b <= a for a, b in zip(records[0]["neurons_kept"], records[1]["neurons_kept"], strict=True))
    # Stage 2's database is built on stage 1's *distilled* model (the saved 1.5x member), not on the teacher
    # (stage 1's database input) nor on stage 1's stitch before distillation.
    member = _state(load_pruned(out / "family" / "1.5x"))
    assert len(built_on) == len(stitched) == 2
    _assert_same_weights(built_on[1], member)
    assert _differs(built_on[1], stitched[0]) and _differs(built_on[1], built_on[0])
    first = (out / "family" / "1.5x" / "metrics.json").stat().st_mtime_ns
    (out / "family" / "2x" / "metrics.json").unlink()
    built_on.clear()
    _run(tmp_path, out, gradual, monkeypatch)
    assert (out / "family" / "1.5x" / "metrics.json").stat().st_mtime_ns == first
    _check_family(out, [1.5, 2.0])
    assert len(built_on) == 1  # resumed: only stage 2 is built, on the reloaded 1.5x member
    _assert_same_weights(built_on[0], member)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _record_stages(monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict], list[dict]]:
    """Wrap the real `build_database` and `stitch` of the pipeline to record the weights of the model each
    database is built on and of each freshly stitched model (before any distillation)."""
    built_on: list[dict[str, torch.Tensor]] = []
    stitched: list[dict[str, torch.Tensor]] = []
    real_build, real_stitch = schedules.build_database_on_ranks, schedules.stitch

    def build_database(model: torch.nn.Module, *args: object, **kwargs: object) -> object:
        built_on.append(_state(model))
        return real_build(model, *args, **kwargs)

    def stitch(*args: object, **kwargs: object) -> torch.nn.Module:
        model = real_stitch(*args, **kwargs)
        stitched.append(_state(model))
        return model

    monkeypatch.setattr(schedules, "build_database_on_ranks", build_database)
    monkeypatch.setattr(schedules, "stitch", stitch)
    return built_on, stitched


def _assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=0, rtol=0, msg=key)


def _differs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Some weight differs in shape or by more than rounding."""
    return sorted(a) != sorted(b) or any(
        a[k].shape != b[k].shape or not torch.allclose(a[k], b[k], atol=1e-6, rtol=0) for k in a
    )


def test_members_missing_their_measured_target_are_searched_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine 20% slower than the table: each first pick measures 0.8x its target, the second search
    aims at target / 0.8 and lands on it; the record and the report say so."""
    out = tmp_path / "run"
    _run(tmp_path, out, [], monkeypatch, machine_bias=0.8)
    table = LatencyTable.load(out / "latency_table.json")
    for target in (1.5, 2.0):
        record = json.loads((out / "family" / f"{target:g}x" / "metrics.json").read_text())
        first, second = record["attempts"]
        assert first["search_target"] == target and first["measured"] == pytest.approx(0.8 * first["predicted"])
        assert second["search_target"] == pytest.approx(target * first["predicted"] / first["measured"])
        assert record["search_target"] == second["search_target"]
        # The member is the second pick: its structure predicts >= the corrected target and measures ~target.
        choice = list(zip(record["heads_kept"], record["neurons_kept"], strict=True))
        assert LatencyModel(table, 2).speedup(choice) == pytest.approx(record["predicted_speedup"])
        assert record["predicted_speedup"] >= second["search_target"] * (1 - 1e-9)
        assert abs(record["deviation"]) < abs(first["measured"] / target - 1)
    assert "searched at 1.50×" in (out / "results.md").read_text()


def test_without_corrections_the_table_pick_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    _run(tmp_path, out, ["search.speedup_corrections=0"], monkeypatch, machine_bias=0.8)
    record = json.loads((out / "family" / "2x" / "metrics.json").read_text())
    assert len(record["attempts"]) == 1 and record["deviation"] == pytest.approx(
        0.8 * record["predicted_speedup"] / 2 - 1
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["search.targets=[]"], "empty target list"),
        (["schedule=gradual", "search.targets=[3.0,2.0]"], "strictly increasing"),
        (["search.targets=[0.5]"], "> 1"),
        (["task.eval_split=nope"], "nope"),
        (["search.targets=[500.0]"], "maximum reachable speedup"),
        (["search.speedup_tolerance=5"], "search.speedup_tolerance must be"),
        (["search.speedup_corrections=-1"], "search.speedup_corrections must be"),
    ],
)
def test_bad_input_fails_before_expensive_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], message: str
) -> None:
    def no_teacher(*_: object, **__: object) -> None:
        raise AssertionError("the teacher was trained despite bad input")

    monkeypatch.setattr(prune, "load_or_train_teacher", no_teacher)
    with pytest.raises(ValueError, match=message):
        _run(tmp_path, tmp_path / "run", overrides, monkeypatch)


def test_teacher_with_wrong_head_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ziplm.models import ModelSpec, build_model

    spec = ModelSpec(name="t", family="bert", source="scratch", hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=64, vocab_size=30522, max_position_embeddings=128)  # fmt: skip
    folder = tmp_path / "three-label-teacher"
    build_model(spec, "classification", num_labels=3).save_pretrained(folder)
    with pytest.raises(ValueError, match="3 labels but task 'tiny-cls' has 2"):
        _run(tmp_path, tmp_path / "run", [f"model.source={folder}"], monkeypatch)


def test_distillation_lowers_the_students_loss(tmp_path: Path) -> None:
    """Same seed, same pruned student: distilling lowers its distance to the teacher."""
    from ziplm.core.distill import DistillWeights, logit_distillation_loss, token_distillation_loss
    from ziplm.core.structure import Structure
    from ziplm.lit.data import TaskDataModule
    from ziplm.lit.module import ZipLMModule
    from ziplm.lit.trainer import make_trainer
    from ziplm.models import ModelSpec, adapter_for, build_model

    torch.manual_seed(0)
    spec = ModelSpec(name="t", family="bert", source="scratch", hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=64, vocab_size=200, max_position_embeddings=64)  # fmt: skip
    # A larger init than BERT's 0.02 so layers (and hence pruning) visibly change the hidden states.
    extra = {"num_labels": 2, "initializer_range": 0.2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    teacher = build_model(spec, "classification", **extra).eval()
    student = build_model(spec, "classification", **extra)
    student.load_state_dict(teacher.state_dict())
    dims = adapter_for(student).dims(student)
    adapter_for(student).apply_structure(student, Structure.from_kept(dims, [[0], [1, 2]], [range(16), range(8)]))
    import datasets

    ids = torch.randint(0, 200, (64, 16))
    rows = {"input_ids": ids.tolist(), "attention_mask": [[1] * 16] * 64, "labels": [0, 1] * 32}
    train = datasets.Dataset.from_dict(rows).with_format("torch")
    held_out = {"input_ids": torch.randint(0, 200, (32, 16)), "attention_mask": torch.ones(32, 16, dtype=torch.long)}

    def distance() -> float:
        with torch.no_grad():
            s = student.eval()(**held_out, output_hidden_states=True)
            t = teacher(**held_out, output_hidden_states=True)
        token = token_distillation_loss(s.hidden_states[1:], t.hidden_states[1:], held_out["attention_mask"])
        return float(token + logit_distillation_loss(s.logits, t.logits, 2.0))

    before = distance()
    module = ZipLMModule(student, teacher, DistillWeights(), learning_rate=1e-3)
    trainer = make_trainer({"accelerator": "cpu", "devices": 1}, tmp_path, max_epochs=3, show_progress=False)
    trainer.fit(module, datamodule=TaskDataModule(train, None, 16, 32))
    assert distance() < 0.8 * before


def test_gpt2_language_model_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder path: tiny GPT-2 on generated text, perplexity, gradual with distillation."""
    out = tmp_path / "run"
    overrides = [
        "model=tiny-gpt2",
        "task=tiny-lm",
        "schedule=gradual",
        "search.targets=[1.5]",
        "distill.epochs_per_stage=1",
        "pruner.calibration_samples=16",
        "search.spdy_random_starts=1",
        "search.spdy_local_steps=1",
        "task.max_train_samples=40",
        "task.max_eval_samples=8",
    ]
    _run(tmp_path, out, overrides, monkeypatch)
    record = json.loads((out / "family" / "1.5x" / "metrics.json").read_text())
    dense = json.loads((out / "dense_metrics.json").read_text())
    assert record["predicted_speedup"] >= 1.5
    assert 1.0 < dense["metric/perplexity"] < 1e6 and 1.0 < record["metric/perplexity"] < 1e6
    assert load_pruned(out / "family" / "1.5x").config.model_type == "gpt2"
