"""Engines that run a timed model: eager PyTorch, ``torch.compile`` (TorchInductor), onnxruntime.

Each engine says up front why it cannot run on this machine (`engine_problem`), so a profile asking for
one fails at validation, not in the middle of a latency table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# --------------------------------------------------------------------------------------------------
RECOMPILE_LIMIT = 256  # compiled variants per model class and process (torch's default of 8 is too few)


@functools.cache
def engine_problem(engine: str, device: str, dtype: str) -> str | None:
    """Why `engine` cannot time `dtype` models on `device` on this machine; None when it can.

    Cached: probing for a C++ compiler runs a subprocess, and `validate` is called before every timing.
    """
    if engine == "compile":
        return _inductor_problem(device)
    if engine == "onnxruntime":
        return _onnxruntime_problem(device, dtype)
    return None


def _inductor_problem(device: str) -> str | None:
    if device.startswith("cuda"):
        from torch.utils._triton import has_triton

        return None if has_triton() else "engine 'compile' on CUDA needs Triton (pip install triton); or engine=eager"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as err:  # InvalidCxxCompiler, or an inductor that does not import on this platform
        return (
            f"engine 'compile' needs a working C++ compiler for TorchInductor on CPU ({type(err).__name__}: {err}); "
            "install g++ (or point the CXX variable at one), or use engine=eager"
        )
    return None


def _onnxruntime_problem(device: str, dtype: str) -> str | None:
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) needs it)
    except ImportError as err:
        return f"engine 'onnxruntime' needs onnxruntime, onnx, onnxscript ({err}); pip install onnxruntime onnxscript"
    if dtype != "float32":
        return f"engine 'onnxruntime' times float32 ONNX exports only, not {dtype}; set hardware.dtype=float32"
    providers = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" not in providers:
        return (
            f"engine 'onnxruntime' on {device} needs onnxruntime's CUDAExecutionProvider "
            f"(pip install onnxruntime-gpu); this onnxruntime has {providers}"
        )
    return None


def compiled_call(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> Callable[[], object]:
    """The model under ``torch.compile``, compiled here (so no timed round pays for compilation).

    Dynamo caches compiled code per *code object*, shared by every instance of a model class, and after
    ``recompile_limit`` differently shaped members it silently runs eager: a latency table compiles
    ~20 members, so the limit is raised, and hitting it while compiling is an error rather than a wrong timing.
    """
    import torch._dynamo

    config: Any = torch._dynamo.config
    for key in ("recompile_limit", "accumulated_recompile_limit", "cache_size_limit", "accumulated_cache_size_limit"):
        if hasattr(config, key):  # torch < 2.6 names them cache_size_limit; newer ones keep those as aliases
            setattr(config, key, max(int(getattr(config, key)), RECOMPILE_LIMIT))
    compiled = torch.compile(model, dynamic=False)  # static shapes: what a deployment at this batch x seq runs

    def call() -> object:
        with torch.inference_mode():  # one grad mode for every call, so the compiled entry always matches
            return compiled(input_ids=ids, attention_mask=mask)

    strict = {k: True for k in ("fail_on_recompile_limit_hit",) if hasattr(config, k)}
    with config.patch(strict):
        call()
    return call


def onnxruntime_call(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, env: Any) -> Callable[[], Any]:
    """Export `model` (a float32 CPU copy made by `model_timer`) to a temporary ONNX file and call an
    onnxruntime session on numpy inputs.

    The session holds the weights once created, so the file is deleted right away. Threads: ``env.threads``,
    else torch's count, which is what the table's fingerprint records. On CUDA the inputs are copied from
    host memory on every call, as a plain ``session.run`` user's are.
    """
    import tempfile
    from pathlib import Path

    from ziplm.deploy.onnx_export import export_onnx, max_positions, onnx_session

    limit = max_positions(model) or env.seq_length
    cuda = env.device.startswith("cuda")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    with tempfile.TemporaryDirectory(prefix="ziplm-onnx-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", seq_length=max(2, min(env.seq_length, limit)))
        session = onnx_session(path, providers, env.threads or torch.get_num_threads())
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    return lambda: session.run(None, feeds)
