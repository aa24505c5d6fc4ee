"""Serving benchmark: request accounting, queueing maths, fair interleaving, real speed order, the CLI pipeline."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ziplm.config.paths import compose
from ziplm.core.structure import Structure
from ziplm.deploy.serving import ServeResult, ServeSettings, dense_architecture, paired_speedups, serve_benchmark
from ziplm.models import ModelSpec, adapter_for, build_model, count_parameters, save_pruned
from ziplm.pipelines import serve_bench as serve_module


class Sleepy(nn.Module):
    """A fake model whose forward takes a known time and records how it was called."""

    def __init__(self, seconds: float, vocab: int = 50, log: list[str] | None = None, name: str = "") -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, max_position_embeddings=64)
        self.weight = nn.Parameter(torch.zeros(1))
        self.seconds, self.vocab, self.log, self.name = seconds, vocab, log, name
        self.lock = threading.Lock()
        self.calls = self.active = self.max_active = 0
        self.shapes: set[tuple[int, ...]] = set()
        self.all_inference = True
        self.ids_in_vocab = True
        self.masks_all_ones = True

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            if self.log is not None:
                self.log.append(self.name)
        self.shapes.add(tuple(input_ids.shape))
        self.all_inference &= torch.is_inference_mode_enabled()
        self.ids_in_vocab &= bool(((input_ids >= 0) & (input_ids < self.vocab)).all())
        self.masks_all_ones &= bool((attention_mask == 1).all()) and attention_mask.shape == input_ids.shape
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        return input_ids.float().sum() * self.weight


def test_every_request_is_served_once_by_one_worker_and_the_figures_add_up() -> None:
    model = Sleepy(0.002)
    settings = ServeSettings(concurrency=4, requests=30, batch_size=2, seq_length=8, warmup=2, rounds=3)
    (result,) = serve_benchmark({"m": model}, settings)
    assert model.calls == 32  # warm-up + timed, nothing lost or duplicated
    assert model.max_active == 1  # one forward at a time: requests queue as in a single-model server
    assert model.shapes == {(2, 8)} and model.all_inference and model.ids_in_vocab and model.masks_all_ones
    assert result.requests == 30 and len(result.latencies_ms) == 30
    assert result.p50_ms <= result.p95_ms <= result.p99_ms <= max(result.latencies_ms)
    assert result.requests_per_s == pytest.approx(30 / result.wall_s)
    assert result.sequences_per_s == pytest.approx(60 / result.wall_s)
    assert result.mean_ms == pytest.approx(statistics.fmean(result.latencies_ms))
    # One worker serves serially: the run takes at least 30 service times, every request at least one.
    assert result.wall_s >= 30 * 0.002
    assert min(result.latencies_ms) >= 2.0
    # Little's law bound: at most `concurrency` requests are in the system at any moment.
    assert sum(result.latencies_ms) / 1e3 <= 4 * result.wall_s + 1e-6
    # With 4 clients and one worker, requests wait in the queue: mean well above one service time.
    assert result.mean_ms >= 2 * 2.0


def test_percentiles_match_a_reference_and_to_dict_round_trips() -> None:
    settings = ServeSettings(concurrency=1, requests=100, batch_size=3)
    latencies = [(i + 1) / 1e3 for i in range(100)]  # 1 .. 100 ms
    rounds = [(latencies[:40][::-1], 1.0), (latencies[40:], 1.0)]
    result = ServeResult.from_rounds("x", rounds, settings=settings)
    reference = statistics.quantiles([1e3 * v for v in latencies], n=100, method="inclusive")
    assert (result.p50_ms, result.p95_ms, result.p99_ms) == pytest.approx((reference[49], reference[94], reference[98]))
    assert result.mean_ms == pytest.approx(50.5)
    assert result.requests_per_s == 50.0 and result.sequences_per_s == 150.0 and result.wall_s == 2.0
    assert result.round_p50_ms == pytest.approx((20.5, 70.5)) and result.round_requests_per_s == (40.0, 60.0)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["p99_ms"] == result.p99_ms and len(record["latencies_ms"]) == 100
    assert "latencies_ms" not in result.to_dict(latencies=False)
    with pytest.raises(ValueError, match="positive wall time"):
        ServeResult.from_rounds("x", [([0.1], 0.0)], settings)


def test_paired_speedups_take_the_median_of_per_round_ratios() -> None:
    settings = ServeSettings(concurrency=1, requests=3)
    # The machine slows 4x in round 2; the member is 2x faster in every round.
    dense = ServeResult.from_rounds("dense", [([0.010], 0.010), ([0.040], 0.040), ([0.010], 0.010)], settings)
    member = ServeResult.from_rounds("m", [([0.005], 0.005), ([0.020], 0.020), ([0.005], 0.005)], settings)
    paired = paired_speedups(dense, member)
    assert paired["p50"] == pytest.approx(2.0) and paired["throughput"] == pytest.approx(2.0)
    assert paired["p50_pooled"] == pytest.approx(2.0) and paired["throughput_pooled"] == pytest.approx(2.0)
    # A load spike during one member round moves the pooled throughput ratio, not the paired one.
    steady = ServeResult.from_rounds("dense", [([0.010], 0.010)] * 3, settings)
    spiked = ServeResult.from_rounds("m", [([0.005], 0.005), ([0.005], 0.005), ([0.040], 0.040)], settings)
    paired = paired_speedups(steady, spiked)
    assert paired["throughput"] == pytest.approx(2.0) and paired["p50"] == pytest.approx(2.0)
    assert paired["throughput_pooled"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="same rounds"):
        paired_speedups(dense, ServeResult.from_rounds("m", [([0.005], 0.005)], settings))


def test_rounds_split_requests_evenly() -> None:
    assert ServeSettings(requests=200, rounds=5).round_sizes() == [40] * 5
    assert ServeSettings(requests=7, rounds=3).round_sizes() == [3, 2, 2]
    assert ServeSettings(requests=2, rounds=5).round_sizes() == [1, 1]


def test_models_are_interleaved_in_alternating_rounds() -> None:
    log: list[str] = []
    models = {"a": Sleepy(0.0, log=log, name="a"), "b": Sleepy(0.0, log=log, name="b")}
    serve_benchmark(models, ServeSettings(concurrency=2, requests=8, seq_length=4, warmup=0, rounds=4))
    assert "".join(log) == "aa" + "bbbb" + "aaaa" + "bbbb" + "aa"  # a b | b a | a b | b a


def test_a_slow_model_has_higher_percentiles_and_lower_throughput() -> None:
    models = {"slow": Sleepy(0.02), "fast": Sleepy(0.001)}
    slow, fast = serve_benchmark(models, ServeSettings(concurrency=3, requests=12, seq_length=4, warmup=1, rounds=2))
    assert fast.p50_ms * 3 < slow.p50_ms
    assert fast.requests_per_s > 3 * slow.requests_per_s


def _tiny_bert(intermediate: int) -> nn.Module:
    spec = ModelSpec(
        name="t",
        family="bert",
        source="scratch",
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        intermediate_size=intermediate,
        vocab_size=120,
        max_position_embeddings=128,
    )
    return build_model(spec, "classification", num_labels=2).eval()


def test_a_much_smaller_member_of_a_real_bert_is_faster_than_its_dense_twin() -> None:
    member = _tiny_bert(4096)
    dense_params = count_parameters(member)
    dims = adapter_for(member).dims(member)
    adapter_for(member).apply_structure(member, Structure.from_kept(dims, [[0], []], [[], []]))
    dense = dense_architecture(member)
    assert type(dense) is type(member) and count_parameters(dense) == dense_params
    assert adapter_for(dense).dims(dense) == dims
    dense_res, member_res = serve_benchmark(
        {"dense": dense, "member": member},
        ServeSettings(concurrency=2, requests=12, seq_length=128, warmup=1, threads=1, rounds=2),
    )
    assert member_res.p50_ms * 2 < dense_res.p50_ms  # ~20x less work; 2x cannot flake
    assert member_res.requests_per_s > 2 * dense_res.requests_per_s


@pytest.mark.parametrize(
    ("field", "value"),
    [("concurrency", 0), ("requests", 0), ("batch_size", -1), ("seq_length", 0), ("rounds", 0), ("warmup", -1)],
)
def test_bad_settings_are_refused(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        ServeSettings(**{field: value})  # type: ignore[arg-type]


def test_bad_models_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="threads"):
        ServeSettings(threads=0)
    with pytest.raises(ValueError, match="at least one model"):
        serve_benchmark({}, ServeSettings())
    with pytest.raises(ValueError, match="seq_length 128 is longer"):
        serve_benchmark({"m": Sleepy(0.0)}, ServeSettings(seq_length=128))
    with pytest.raises(ValueError, match="vocab_size"):
        serve_benchmark({"m": nn.Linear(2, 2)}, ServeSettings(seq_length=4))
    with pytest.raises(ValueError, match="no HF config"):
        dense_architecture(nn.Linear(2, 2))


def test_a_failing_forward_is_reported_with_the_model_name_and_does_not_hang() -> None:
    class Broken(Sleepy):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"'bad'.*boom"):
        serve_benchmark({"bad": Broken(0.0)}, ServeSettings(concurrency=3, requests=6, seq_length=4, warmup=0))
    with pytest.raises(RuntimeError, match="'bad' failed on a warm-up"):
        serve_benchmark({"bad": Broken(0.0)}, ServeSettings(requests=2, seq_length=4, warmup=1))


# --- the `ziplm serve-bench` pipeline -------------------------------------------------------------


def _saved_member(root: Path) -> tuple[Path, nn.Module]:
    spec = ModelSpec(
        name="t",
        family="bert",
        source="scratch",
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        vocab_size=120,
        max_position_embeddings=64,
    )
    model = build_model(spec, "classification", num_labels=2)
    dense = build_model(spec, "classification", num_labels=2).eval()
    dims = adapter_for(model).dims(model)
    structure = Structure.from_kept(dims, [[0, 1], []], [range(32), range(64)])
    adapter_for(model).apply_structure(model, structure)
    return save_pruned(model, structure, root / "2x"), dense


def _cfg(*overrides: str):
    base = ["experiment=smoke", "serve.requests=6", "serve.concurrency=2", "serve.warmup=1", "serve.seq_length=16"]
    return compose([*base, *overrides], command="serve-bench")


def test_pipeline_writes_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, dense = _saved_member(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(serve_module, "run_dir", lambda cfg: out)
    serve_module.run_serve_bench(_cfg(f"checkpoint={folder}"))
    record = json.loads((out / "serve_bench.json").read_text())
    assert "random weights" in record["baseline"]
    dense_row, member_row = record["results"]
    assert (dense_row["name"], member_row["name"]) == ("dense", "2x")
    assert dense_row["parameters"] == count_parameters(dense) > member_row["parameters"]
    assert dense_row["speedup_p50"] == 1.0 and dense_row["speedup_throughput"] == 1.0
    for row in (dense_row, member_row):
        assert len(row["latencies_ms"]) == 6 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert member_row["speedup_p50_pooled"] == pytest.approx(dense_row["p50_ms"] / member_row["p50_ms"])
    ratios = [d / m for d, m in zip(dense_row["round_p50_ms"], member_row["round_p50_ms"], strict=True)]
    assert len(ratios) == 6 and member_row["speedup_p50"] == pytest.approx(statistics.median(ratios))
    text = (out / "serve_bench.md").read_text()
    assert "| 2x |" in text and "random weights" in text

    hf = tmp_path / "hf"
    dense.save_pretrained(hf)
    record = serve_module.run_serve_bench(_cfg(f"checkpoint={folder}", f"serve.baseline={hf}"))
    assert "Hugging Face model folder" in record["baseline"]
    assert record["results"][0]["parameters"] == count_parameters(dense)
    record = serve_module.run_serve_bench(_cfg(f"checkpoint={folder}", f"serve.baseline={folder}"))
    assert "ziplm model folder" in record["baseline"]


def test_pipeline_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs checkpoint="):
        serve_module.run_serve_bench(_cfg())
    with pytest.raises(FileNotFoundError, match="no such folder"):
        serve_module.run_serve_bench(_cfg(f"checkpoint={tmp_path / 'nope'}"))
    with pytest.raises(ValueError, match="neither a ziplm family member"):
        serve_module.run_serve_bench(_cfg(f"checkpoint={tmp_path}"))
    with pytest.raises(ValueError, match="concurrency"):
        serve_module.run_serve_bench(_cfg(f"checkpoint={tmp_path}", "serve.concurrency=0"))
    with pytest.raises(ValueError, match="requests"):
        serve_module.run_serve_bench(_cfg(f"checkpoint={tmp_path}", "serve.requests=0"))
    folder, _ = _saved_member(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"serve\.baseline"):
        serve_module.run_serve_bench(_cfg(f"checkpoint={folder}", f"serve.baseline={tmp_path / 'nope'}"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither"):
        serve_module.run_serve_bench(_cfg(f"checkpoint={folder}", f"serve.baseline={tmp_path / 'empty'}"))
