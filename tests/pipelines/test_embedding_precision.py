"""A sentence-embedding run (task kind ``embedding``, the user's text file) under the GPU half-precision
profile on the CPU: bf16 timing (``hardware=cpu-bf16``) and bf16-mixed evaluation and distillation.

Half precision must stay in the autocast: the dense model is both the teacher and the reference every
member is scored against, so it must come out of the run as it went in (float32, same weights, the same
embeddings), members must be saved in the declared dtype, and the fidelity metrics must stay sane.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.pipelines.test_embedding_run import METRICS, TINY, _texts
from ziplm.config.paths import compose
from ziplm.config.settings import RunSettings
from ziplm.pipelines import members, prune
from ziplm.pipelines.embedding import encode
from ziplm.pipelines.teacher import teacher_dir

BF16 = ["hardware=cpu-bf16", "trainer.precision=bf16-mixed", "search.speedup_corrections=0"]


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> tuple[Path, dict[str, Any]]:
    """`prune.run_prune` as the CLI calls it, recording the dense reference as first made (its weights and
    embeddings) and each distillation stage's student before and after."""
    out, seen = tmp_path / "run", {"stages": []}
    monkeypatch.setattr(prune, "run_dir", lambda cfg: out.mkdir(parents=True, exist_ok=True) or out)
    real_use_dense, real_stage = members.Family.use_dense, members.distill_stage

    def use_dense(family: members.Family, dense: torch.nn.Module, reference: Any) -> None:
        real_use_dense(family, dense, reference)
        ref = family.embedding["dense"]
        seen["reference"], seen["weights"] = ref, _snapshot(dense)
        seen["embeddings"] = {
            split: encode(dense, features, ref.pooling, ref.batch_size, ref.precision)
            for split, (_, features) in ref.splits.items()
        }

    def stage(student: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        before = _snapshot(student)
        real_stage(student, *args, **kwargs)
        seen["stages"].append((before, _snapshot(student)))

    monkeypatch.setattr(members.Family, "use_dense", use_dense)
    monkeypatch.setattr(members, "distill_stage", stage)
    data = _texts(tmp_path / "mine.txt")
    where = [f"task.data_files.train={data}", f"output_root={tmp_path}", f"cache_dir={tmp_path / 'cache'}"]
    cfg = compose([*TINY, *where, *BF16, *overrides])
    prune.run_prune(cfg)
    seen["teacher_dir"] = teacher_dir(RunSettings.from_config(cfg))
    return out, seen


@pytest.mark.parametrize(
    ("overrides", "member_dtype", "stages"),
    [
        (["schedule.member_dtype=bfloat16"], torch.bfloat16, 0),  # one-shot, members saved as declared
        (["schedule=gradual", "distill.epochs_per_stage=1", "pruner.calibration_samples=32"], torch.float32, 2),
    ],
    ids=["oneshot-bf16-members", "gradual-distilled"],
)
def test_a_bf16_embedding_run_leaves_the_dense_reference_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str], member_dtype: torch.dtype, stages: int
) -> None:
    out, seen = _run(tmp_path, monkeypatch, overrides)
    reference = seen["reference"]
    teacher = reference.dense
    # The teacher: float32, the weights it was loaded (and cached) with, the same embeddings as at the start.
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    cached = load_file(str(seen["teacher_dir"] / "model.safetensors"))
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, seen["weights"][name]), name
        assert name not in cached or torch.equal(tensor, cached[name]), name
    for split, (_, features) in reference.splits.items():
        after = encode(teacher, features, reference.pooling, reference.batch_size, reference.precision)
        assert after.dtype == torch.float32 and torch.equal(after, seen["embeddings"][split]), split
    # Dense vs itself is exactly 1 in bf16-mixed too (both sides the same autocast computation).
    dense = json.loads((out / "dense_metrics.json").read_text())
    assert dense["eval_precision"] == "bf16-mixed"
    assert all(dense[f"metric/{name}"] == 1.0 for name in METRICS)
    assert reference.scores(teacher) == {name: 1.0 for name in METRICS}
    for target in ("1.5x", "2x"):
        folder = out / "family" / target
        record = json.loads((folder / "metrics.json").read_text())
        assert record["eval_precision"] == "bf16-mixed" and record["saved_dtype"] == str(member_dtype).split(".")[1]
        assert json.loads((folder / "ziplm.json").read_text())["dtype"] == record["saved_dtype"]
        assert {t.dtype for t in load_file(str(folder / "model.safetensors")).values()} == {member_dtype}
        values = [record[f"metric/{name}"] for name in METRICS]
        assert all(math.isfinite(v) and 0 < v <= 1 + 1e-9 for v in values), record
        assert record["metric/mean_cosine"] > 0.9  # a pruned tiny model still points where the dense one does
    # Distillation trained (fp32 weights under autocast): the encoder moved, the unused pooler did not.
    assert len(seen["stages"]) == stages
    for before, after in seen["stages"]:
        assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in after.values())
        moved = [n for n in before if n.startswith("encoder.") and not torch.equal(before[n], after[n])]
        assert moved, "distillation left every encoder weight as it was"
        assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("pooler."))
