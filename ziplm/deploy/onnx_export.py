"""ONNX export of family members (BERT and GPT-2 heads, uneven layers, removed sublayers) and a parity check.

Why the dynamo exporter (``torch.onnx.export(..., dynamo=True)``): the TorchScript exporter fails on
transformers' BERT, and ``torch.export`` traces our surgery modules (``SkippedAttention``,
``ZeroBranch``, sliced layers of any width) like any other Python code, so no special casing is needed.
The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence axes) and
returns the head's tensors by name.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

INPUT_NAMES = ("input_ids", "attention_mask")
# Which model outputs become graph outputs, by head: QA spans, then logits (classification / LM), then encoders.
OUTPUT_CHOICES = (("start_logits", "end_logits"), ("logits",), ("last_hidden_state",))
QUIET_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")
EXAMPLE_BATCH = 2  # torch.export specialises axes of size 0 and 1, so the example batch must be >= 2


class OnnxParityError(RuntimeError):
    """The exported graph disagrees with the PyTorch model by more than the tolerance."""


def max_positions(model: nn.Module) -> int | None:
    """Longest sequence the model's position embeddings allow (None when it has no such limit)."""
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _vocab_size(model: nn.Module) -> int:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"{type(model).__name__} has no config.vocab_size; export_onnx takes an HF language model")
    return vocab


def _check_exportable(model: nn.Module, seq_length: int) -> None:
    """Refuse what the graph cannot represent, before minutes of tracing."""
    placed = {(p.device.type, p.dtype) for p in model.parameters()}
    if placed - {("cpu", torch.float32)}:
        found = sorted(f"{device}/{dtype}" for device, dtype in placed)
        raise ValueError(f"export takes a CPU float32 model, this one has {found}; call model.float().cpu() first")
    if seq_length < 2:
        raise ValueError(f"seq_length must be >= 2 (length-1 axes cannot stay dynamic), got {seq_length}")
    limit = max_positions(model)
    if limit is not None and seq_length > limit:
        raise ValueError(f"seq_length {seq_length} exceeds the model's {limit} positions; pass seq_length <= {limit}")


def random_batch(model: nn.Module, batch_size: int, seq_length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random ids and a mask whose last row is right-padded from the middle on (so masking is exercised).

    Returns:
        ``input_ids`` and ``attention_mask``, both int64 of shape (batch_size, seq_length).
    """
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, _vocab_size(model), (batch_size, seq_length), generator=generator)
    mask = torch.ones(batch_size, seq_length, dtype=torch.long)
    if batch_size > 1:
        mask[-1, max(1, seq_length // 2) :] = 0
    return ids, mask


class _GraphSignature(nn.Module):
    """Positional ``(input_ids, attention_mask) -> tuple of named outputs``: the exported graph's interface."""

    def __init__(self, model: nn.Module, output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.output_names = output_names
        parameters = inspect.signature(model.forward).parameters
        # GPT-2 would also return its key/value cache; a deployed scorer does not need it.
        self.extra: dict[str, Any] = {"use_cache": False} if "use_cache" in parameters else {}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **self.extra)
        return tuple(out[name] for name in self.output_names)


def output_names(model: nn.Module) -> tuple[str, ...]:
    """The graph outputs of `model`, found by running it once on a tiny batch."""
    ids, mask = random_batch(model, EXAMPLE_BATCH, 2)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, return_dict=True)
    for names in OUTPUT_CHOICES:
        if all(isinstance(out.get(n), torch.Tensor) for n in names):
            return names
    known = [n for names in OUTPUT_CHOICES for n in names]
    raise ValueError(f"{type(model).__name__} returns {list(out.keys())}; export_onnx exports one of {known}")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (missing torchvision ops, one INFO line per optimizer pass and folded node)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=r".*axis name.*will not be used")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: nn.Module, path: str | os.PathLike[str], seq_length: int = 128) -> Path:
    """Write `model` (on CPU, float32) to an ONNX file, atomically; returns its path.

    Args:
        model: a BERT or GPT-2 family model (base, classification, QA or LM head), pruned or dense.
        path: destination ``.onnx`` file. Weights above the protobuf limit go to ``<name>.data`` beside it.
        seq_length: length of the example batch the graph is traced with; both axes stay dynamic.
    """
    _check_exportable(model, seq_length)
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a directory; pass the path of the .onnx file to write")
    model = model.eval()
    signature = _GraphSignature(model, output_names(model)).eval()
    example = random_batch(model, EXAMPLE_BATCH, seq_length)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            signature,
            example,
            dynamo=True,
            input_names=list(INPUT_NAMES),
            output_names=list(signature.output_names),
            dynamic_shapes=axes,
            verbose=False,
        )
    if program is None:  # only the TorchScript exporter returns None
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    save_program(program, target)
    return target


def save_program(program: Any, target: Path, sidecars: dict[str, str] | None = None) -> None:
    """Save an exported ONNX program (and text `sidecars`, file name -> content, beside it) atomically.

    Weights go to ``<name>.data`` only above the 2 GB protobuf limit; a stale ``.data`` is removed.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        program.save(staging / target.name)  # external data only above the 2 GB protobuf limit
        for name, text in (sidecars or {}).items():
            (staging / name).write_text(text)
        stale = target.parent / f"{target.name}.data"
        if not (staging / stale.name).exists():
            stale.unlink(missing_ok=True)
        # Weights and sidecars first, graph last: a reader never sees a new graph pointing at missing weights.
        for produced in sorted(staging.iterdir(), key=lambda p: p.name == target.name):
            os.replace(produced, target.parent / produced.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def onnx_session(path: str | os.PathLike[str], providers: list[str] | None = None, threads: int | None = None) -> Any:
    """An onnxruntime ``InferenceSession`` of `path` (CPU unless `providers` say otherwise)."""
    import onnxruntime as ort

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; write it first with export_onnx")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT warns about every initializer it constant-folds
    return ort.InferenceSession(str(file), sess_options=options, providers=providers or ["CPUExecutionProvider"])


def verify_onnx(
    model: nn.Module, path: str | os.PathLike[str], batch_size: int = 2, seq_length: int = 32, atol: float = 1e-4
) -> float:
    """Run the ONNX file in onnxruntime (CPU) on random padded ids and compare with PyTorch.

    Returns:
        The largest absolute difference over every output.

    Raises:
        OnnxParityError: outputs differ in names or shapes, or by more than `atol` (or are not finite).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_exportable(model, seq_length)
    session = onnx_session(path)
    names = output_names(model)
    got_names = tuple(o.name for o in session.get_outputs())
    if got_names != names:
        raise OnnxParityError(f"{path} outputs {got_names}, the model outputs {names}: the file is from another model")
    ids, mask = random_batch(model, batch_size, seq_length, seed=1)
    with torch.no_grad():
        want = _GraphSignature(model.eval(), names)(ids, mask)
    got = session.run(list(names), {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    worst = 0.0
    for name, g, w in zip(names, got, want, strict=True):
        expected = w.float().numpy()
        if g.shape != expected.shape:
            raise OnnxParityError(f"ONNX output {name!r} has shape {g.shape}, PyTorch {expected.shape}")
        diff = float(np.max(np.abs(g.astype(np.float32) - expected))) if expected.size else 0.0
        if not np.isfinite(diff) or diff > atol:
            raise OnnxParityError(
                f"ONNX output {name!r} differs from PyTorch by {diff:.3g} (atol {atol:g}) on a "
                f"{batch_size}x{seq_length} batch; the export of {path} is wrong"
            )
        worst = max(worst, diff)
    return worst
