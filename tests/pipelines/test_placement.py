"""Device and dtype placement: timing copies, the teacher guard, the run's device and evaluation precision."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY_BERT, token_batch
from ziplm.eval.evaluate import precision_context
from ziplm.latency.measure import Environment, model_timer
from ziplm.models import build_model
from ziplm.pipelines.placement import TeacherGuard, eval_precision, run_device


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_timing_leaves_the_callers_model_as_it_was(dtype: str) -> None:
    """The bug: model_timer called model.to(device, dtype) on the teacher itself, so after the first timing
    in a half-precision environment the fp32 teacher was half precision for the rest of the run."""
    model = build_model(TINY_BERT, "classification", num_labels=2).train()
    before = _state(model)
    env = Environment(dtype=dtype, batch_size=2, seq_length=8, warmup=1, repetitions=1)
    outputs = model_timer(model, env)()
    assert outputs.logits.dtype == getattr(torch, dtype)  # the timed copy really ran in the environment's dtype
    assert model.training  # not switched to eval
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_teacher_guard_catches_a_cast_a_move_and_an_update() -> None:
    model = build_model(TINY_BERT, "classification", num_labels=2)
    guard = TeacherGuard(model)
    guard.check("nothing happened")
    model.to(torch.bfloat16)
    with pytest.raises(RuntimeError, match="phase 'cast' changed the dense teacher's placement"):
        guard.check("cast")
    model.to(torch.float32)  # back to fp32, but the bf16 round trip rounded the weights
    with pytest.raises(RuntimeError, match="phase 'round trip' modified the dense teacher's weights"):
        guard.check("round trip")
    fresh = build_model(TINY_BERT, "classification", num_labels=2)
    guard = TeacherGuard(fresh)
    with torch.no_grad():
        next(fresh.parameters())[0, 0] += 1e-3
    with pytest.raises(RuntimeError, match="modified"):
        guard.check("update")
    assert guard.checked == []


def test_run_device_follows_the_trainer() -> None:
    assert run_device({"accelerator": "cpu"}) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert run_device({"accelerator": "auto"}) == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device is visible; use trainer=cpu"):
            run_device({"accelerator": "gpu"})
    with pytest.raises(ValueError, match="not supported"):
        run_device({"accelerator": "tpu"})


def test_eval_precision_defaults_to_the_training_precision() -> None:
    assert eval_precision({"precision": "bf16-mixed", "eval_precision": None}) == "bf16-mixed"
    assert eval_precision({"precision": "bf16-mixed", "eval_precision": "32-true"}) == "32-true"


def test_precision_context_autocasts_only_mixed_precisions() -> None:
    model = build_model(TINY_BERT, "classification", num_labels=2).eval()
    ids, mask = token_batch()
    with torch.no_grad():
        with precision_context("32-true", torch.device("cpu")):
            full = model(input_ids=ids, attention_mask=mask).logits
        with precision_context("bf16-mixed", torch.device("cpu")):
            mixed = model(input_ids=ids, attention_mask=mask).logits
    assert full.dtype == torch.float32 and mixed.dtype == torch.bfloat16
    assert torch.allclose(full, mixed.float(), atol=0.05) and not torch.equal(full, mixed.float())
    with pytest.raises(ValueError, match="unknown evaluation precision"):
        precision_context("8-mixed", torch.device("cpu"))


@pytest.mark.gpu
def test_calibration_batches_follow_a_gpu_model() -> None:
    """On a GPU the calibration set stays in host memory; capture moves each batch to the model."""
    from ziplm.pruning.capture import capture

    model = build_model(TINY_BERT, "base").cuda()
    ids, mask = token_batch()
    stats = capture(model, [{"input_ids": ids, "attention_mask": mask}], range(TINY_BERT.num_layers or 1), False)
    assert all(s.hessian.n_tokens > 0 for s in stats.stats.values())
