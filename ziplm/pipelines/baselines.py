"""Published baselines measured in the run's harness: each ``baselines:`` checkpoint is scored with the
same data, precision and metric code as the family, and timed interleaved with the same dense model in
the same environment, so its row compares with the members' rows (quoted numbers were timed elsewhere).

Saved as ``baselines/<label>/metrics.json``: a finished baseline is skipped on restart.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ziplm.config.baselines import Baseline
from ziplm.data.spec import TaskSpec
from ziplm.lit.distributed import barrier, is_main
from ziplm.models import count_parameters
from ziplm.models.checkpoint import check_checkpoint, load_checkpoint
from ziplm.models.io import count_encoder_parameters
from ziplm.pipelines.members import METRICS_FILE, Family
from ziplm.report.records import MemberRecord

BASELINE_METHOD = "baseline"


def check_baselines(baselines: Sequence[Baseline], task: TaskSpec) -> None:
    """Every baseline can be scored on `task` (head, labels, architecture, reachable): before any training."""
    for index, baseline in enumerate(baselines):
        check_checkpoint(baseline.checkpoint, task.kind, task.num_labels, f"baselines[{index}].checkpoint")


def measure_baselines(family: Family, dense: nn.Module, baselines: Sequence[Baseline]) -> list[MemberRecord]:
    """Evaluate and time each baseline against `dense` (the run's teacher) as the members are."""
    records = []
    for index, baseline in enumerate(baselines):
        folder = family.out / "baselines" / baseline.label
        if (folder / METRICS_FILE).is_file():
            records.append(MemberRecord.load(folder / METRICS_FILE))
            continue
        task, setting = family.data.task, f"baselines[{index}].checkpoint"
        model = load_checkpoint(baseline.checkpoint, task.kind, task.num_labels, family.device, setting).model
        metrics = family.scores(model)
        measured = family.speedup(dense, model)
        record = MemberRecord(
            member=baseline.label,
            parameters=count_parameters(model),
            metrics=dict(metrics),
            eval_precision=family.eval_precision,
            measured_speedup=measured,
            method=BASELINE_METHOD,
            encoder_parameters=_encoder_parameters(model),
            other={"checkpoint": baseline.checkpoint, "citation": baseline.citation},
        )
        if is_main():
            folder.mkdir(parents=True, exist_ok=True)
            record.save(folder / METRICS_FILE)
        barrier()
        records.append(record)
    return records


def _encoder_parameters(model: nn.Module) -> int | None:
    """The Transformer layers' parameters where ziplm knows the architecture (BERT, GPT-2); None otherwise."""
    try:
        return count_encoder_parameters(model)
    except (KeyError, ValueError, TypeError):
        return None
