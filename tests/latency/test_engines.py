"""Inference engines of the latency layer: eager, torch.compile, onnxruntime — same outputs, clear refusals."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import TINY_BERT, TINY_GPT2
from ziplm.config.paths import compose
from ziplm.core.structure import Structure
from ziplm.latency import engines, measure
from ziplm.latency.measure import ENGINES, Environment, interleaved_samples, model_timer
from ziplm.models import ModelSpec, adapter_for, build_model
from ziplm.pipelines.common import environment

QUICK = {"batch_size": 2, "seq_length": 12, "warmup": 1, "repetitions": 2, "max_seconds_per_entry": 0.5}


@pytest.fixture(autouse=True)
def _fresh_engine_probe() -> Iterator[None]:
    """Engine availability is cached per process; tests that fake the machine must not leak into others."""
    engines.engine_problem.cache_clear()
    yield
    engines.engine_problem.cache_clear()


def pruned(spec: ModelSpec, heads: list[list[int]], neurons: list[list[int]]) -> nn.Module:
    model = build_model(spec, "base").eval()
    dims = adapter_for(model).dims(model)
    adapter_for(model).apply_structure(model, Structure.from_kept(dims, heads, neurons))
    return model


def first_output(out: object) -> np.ndarray:
    if isinstance(out, list):  # onnxruntime: numpy arrays in graph-output order
        return np.asarray(out[0])
    return out["last_hidden_state"].detach().numpy()  # type: ignore[index]


def run_engine(model: nn.Module, engine: str) -> np.ndarray:
    torch.manual_seed(123)  # model_timer draws its batch from torch's generator: same ids for every engine
    return first_output(model_timer(model, Environment(engine=engine, **QUICK))())  # type: ignore[arg-type]


def test_engines_are_eager_compile_onnxruntime() -> None:
    assert ENGINES == ("eager", "compile", "onnxruntime")


@pytest.mark.parametrize("spec", [TINY_BERT, TINY_GPT2])
def test_onnxruntime_timer_matches_eager(spec: ModelSpec) -> None:
    pytest.importorskip("onnxruntime")
    model = pruned(spec, [[1, 2], [], [0, 1, 2, 3]], [list(range(30)), list(range(64)), []])
    eager = run_engine(model, "eager")
    torch.manual_seed(123)
    env = Environment(engine="onnxruntime", threads=1, **QUICK)  # type: ignore[arg-type]
    call = model_timer(model, env)
    np.testing.assert_allclose(first_output(call()), eager, atol=1e-4, rtol=0)
    seconds = measure.seconds_timer(call, env.device)
    assert all(seconds() > 0 for _ in range(3))


@pytest.mark.slow
def test_compile_timer_matches_eager_and_really_compiles() -> None:
    """Two differently pruned members of one class: each gets its own compiled graph (no silent eager fallback)."""
    from torch._dynamo.utils import counters

    a = pruned(TINY_BERT, [[0], [1, 2], [0, 1, 2, 3]], [list(range(8)), [], list(range(64))])
    b = pruned(TINY_BERT, [[0, 1, 2], [], [3]], [list(range(40)), list(range(16)), list(range(2))])
    graphs = counters["stats"]["unique_graphs"]
    for model in (a, b):
        np.testing.assert_allclose(run_engine(model, "compile"), run_engine(model, "eager"), atol=1e-5, rtol=0)
    assert counters["stats"]["unique_graphs"] >= graphs + 2
    assert torch._dynamo.config.recompile_limit >= engines.RECOMPILE_LIMIT
    samples = interleaved_samples([a, b], Environment(engine="compile", **QUICK), rounds=2)  # type: ignore[arg-type]
    assert all(len(s) >= 2 and min(s) > 0 for s in samples)


def test_compile_engine_is_available_here_or_refused_clearly() -> None:
    if shutil.which("g++") is None:
        pytest.skip("no g++ on this machine")
    Environment(engine="compile").validate()
    import torch._inductor.config as inductor_config

    engines.engine_problem.cache_clear()
    no_compiler = inductor_config.patch({"cpp.cxx": ("no-such-compiler-here",)})
    with no_compiler, pytest.raises(ValueError, match="engine 'compile' needs a working C\\+\\+ compiler"):
        Environment(engine="compile").validate()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (Environment(engine="tensorrt"), "engine 'tensorrt' is not supported; choose one of"),
        (Environment(engine="onnxruntime", dtype="bfloat16"), "float32 ONNX exports only"),
        (Environment(device="tpu"), "unknown device 'tpu'"),
    ],
)
def test_unsupported_engines_are_refused(env: Environment, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        env.validate()
    with pytest.raises(ValueError, match=message):  # before any model is built or timed
        interleaved_samples([nn.Linear(1, 1)], env, rounds=1)


def test_onnxruntime_on_cuda_needs_the_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # pretend a GPU, keep this onnxruntime
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="needs onnxruntime's CUDAExecutionProvider"):
        Environment(device="cuda", engine="onnxruntime").validate()


def test_onnxruntime_engine_is_refused_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        Environment(engine="onnxruntime").validate()


@pytest.mark.parametrize(("profile", "engine"), [("cpu-compile", "compile"), ("cpu-onnxruntime", "onnxruntime")])
def test_hardware_profiles_compose_to_valid_environments(profile: str, engine: str) -> None:
    env = environment(compose([f"hardware={profile}"]))
    assert (env.engine, env.device, env.batch_size, env.seq_length) == (engine, "cpu", 32, 128)
    if engine == "compile" and shutil.which("g++") is None:
        pytest.skip("no g++ on this machine")
    env.validate()
