"""Making family members: search a target, stitch, (distill), evaluate, measure, save.

Every member is saved (model + structure + metrics.json) before the next begins; a member folder with
a metrics.json is complete, so a restarted run skips it. In a multi-process run, searches and timings
happen on rank 0 and are handed to the others; Lightning phases (distillation, evaluation) use all.
Embedding members are scored outside Lightning, on rank 0 (`Family.scores`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ziplm.config.settings import RunSettings
from ziplm.core.database import LevelDatabase
from ziplm.core.embedding import Pooling
from ziplm.core.latency import LatencyModel
from ziplm.core.structure import Structure
from ziplm.data.task_data import TaskData
from ziplm.eval.evaluate import task_loss
from ziplm.latency.speedup import MeasuredSpeedup, noise_floor, timed_speedups
from ziplm.lit.distill import distill_stage
from ziplm.lit.distributed import barrier, is_main, on_main
from ziplm.lit.phases import evaluate
from ziplm.models import adapter_for, count_parameters, load_pruned, save_pruned
from ziplm.models.io import count_encoder_parameters
from ziplm.models.pooling import write_pooling
from ziplm.pipelines.embedding import EmbeddingReference
from ziplm.pipelines.placement import eval_precision
from ziplm.pipelines.retrieval import RetrievalReference
from ziplm.pruning.block_importance import influential_layers
from ziplm.pruning.layerdrop import (
    choose_layer_count,
    distillation_pairs,
    drop_to_identity,
    layer_count_speedups,
    spread_layers,
)
from ziplm.pruning.methods import method as registered_method
from ziplm.pruning.search import pick_measured
from ziplm.pruning.targets import Choice, target_status
from ziplm.report.records import MemberRecord

METRICS_FILE = "metrics.json"
Batches = Sequence[Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class Family:
    """How this run makes, keeps and finds its members (settings, data, folder, device)."""

    settings: RunSettings
    data: TaskData
    out: Path
    device: torch.device
    # Rank 0's timing state: "noise" (dense vs its own copy, `noise_floor`), measured once per run.
    timing: dict[str, MeasuredSpeedup] = field(default_factory=dict)
    # Task kind ``embedding``: the dense model's pooling, and (once the dense model is loaded, `use_dense`)
    # its outputs, against which candidates are searched and members scored (no labels exist).
    pooling: Pooling | None = None
    embedding: dict[str, Any] = field(default_factory=dict)

    def use_dense(self, dense: nn.Module, reference: Mapping[str, Any]) -> None:
        """Embedding tasks: score and search against `dense` from now on (its outputs computed once each);
        `reference` (model name, source, teacher folder) is recorded in every member's ``embedding.json``."""
        if self.pooling is None:
            return
        data, batch = self.data, int(self.settings.trainer["eval_batch_size"])
        splits = {data.task.eval_split: (data.eval_examples, data.eval_features), **data.extra_eval}
        self.embedding["dense"] = EmbeddingReference(dense, self.pooling, data.task, splits, batch, self.eval_precision)
        # ``task.retrieval``: nDCG/Recall/MRR@10 next to fidelity, same pooling and precision (None: unset)
        self.embedding["retrieval"] = RetrievalReference.of(
            data.task, data.tokenizer, self.pooling, batch, self.eval_precision, dense
        )
        self.embedding["reference"] = dict(reference)

    @property
    def eval_precision(self) -> str:
        """One declared precision for the dense row and every member (``trainer.eval_precision``)."""
        return eval_precision(self.settings.trainer)

    def folder(self, target: float) -> Path:
        return self.out / "family" / f"{target:g}x"

    def completed(self, target: float) -> MemberRecord | None:
        """The saved record of a finished member, or None if it still has to be made."""
        path = self.folder(target) / METRICS_FILE
        return MemberRecord.load(path) if path.is_file() else None

    def reload(self, target: float) -> nn.Module:
        """A finished stage, back on the run's device in float32 (it trains further in a gradual run)."""
        return load_pruned(self.folder(target), device=str(self.device), dtype="float32")

    def scores(self, model: nn.Module) -> dict[str, float]:
        """The task metric on the evaluation split, plus every further split's as ``<split>/<metric>`` (MNLI-mm)."""
        if self.pooling is not None:  # sentence embeddings: fidelity to the dense model's (`use_dense`),
            # no Lightning phase: each rank would encode every split itself, so rank 0 does and hands it on
            reference, retrieval = self.embedding["dense"], self.embedding.get("retrieval")
            return on_main(lambda: reference.scores(model) | (retrieval.scores(model) if retrieval else {}))  # type: ignore[no-any-return]
        data, trainer = self.data, self.settings.trainer
        batch, precision = int(trainer["eval_batch_size"]), self.eval_precision
        metrics = dict(evaluate(model, data.task, data.eval_examples, data.eval_features, trainer, batch, precision))
        for split, (examples, features) in data.extra_eval.items():
            extra = evaluate(model, data.task, examples, features, trainer, batch, precision)
            metrics.update({f"{split}/{name}": value for name, value in extra.items()})
        return metrics

    def speedup(self, dense: nn.Module, model: nn.Module) -> float:
        """`model`'s measured speedup over `dense` (timed interleaved, on rank 0; every rank gets it)."""
        return on_main(lambda: self._timed(dense, model).speedup)

    def _timed(self, dense: nn.Module, model: nn.Module) -> MeasuredSpeedup:
        """Interleaved rounds until the ~95% interval is within ``search.speedup_ci`` (at most speedup_rounds)."""
        search = self.settings.search
        rounds, ci = int(search.speedup_rounds), float(search.speedup_ci)
        return timed_speedups(dense, [model], self.settings.hardware, rounds, ci)[0]

    def noise(self, dense: nn.Module) -> MeasuredSpeedup:
        """The dense model timed against its own copy, once per run: this machine's timing noise floor."""
        if "noise" not in self.timing:
            search = self.settings.search
            rounds, ci = int(search.speedup_rounds), float(search.speedup_ci)
            self.timing["noise"] = noise_floor(dense, self.settings.hardware, rounds, ci)
        return self.timing["noise"]

    def tolerance(self, dense: nn.Module) -> float:
        """``search.speedup_tolerance``, raised to twice the noise floor (a miss smaller than the machine's
        own noise cannot be told from a hit, and chasing it re-searches for nothing)."""
        noise = self.noise(dense)
        floor = abs(noise.speedup - 1) + noise.half_width
        return max(float(self.settings.search.speedup_tolerance), 2 * floor)

    def pick(
        self,
        model: nn.Module,
        dense: nn.Module,
        database: LevelDatabase,
        latency: LatencyModel,
        target: float,
        loss_batches: Sequence[Mapping[str, torch.Tensor]],
    ) -> tuple[Choice, dict[str, Any]]:
        """Sizes for `target` from `database` (SPDY on the task loss of `loss_batches`; for embedding tasks on
        the distortion of the dense model's outputs, `EmbeddingReference.distortion`), closed on speedups
        measured against `dense`; searched on rank 0 and handed to every rank. The kept candidate's timing
        is the member's (``measured_speedup``, ``speedup_interval``): it is not timed again."""

        def score(candidate: nn.Module) -> float:
            return task_loss(candidate, loss_batches, self.eval_precision)

        timings: list[MeasuredSpeedup] = []

        def measure(candidate: nn.Module) -> float:
            timings.append(self._timed(dense, candidate))
            return timings[-1].speedup

        def search() -> tuple[Choice, dict[str, Any]]:
            scorer = score if loss_batches else None
            if scorer is not None and self.pooling is not None:  # label-free: distortion of the dense outputs
                scorer = self.embedding["dense"].distortion(loss_batches)
            tolerance = self.tolerance(dense)
            choice, found = pick_measured(
                model, database, latency, target, self.settings.search, self.settings.seed, measure, scorer, tolerance
            )
            kept = timings[found.pop("kept_attempt")]
            return choice, {**found, "speedup_interval": [kept.low, kept.high]}

        return on_main(search)

    def distill(self, student: nn.Module, teacher: nn.Module, logger: Any, stage: str,
                layer_pairs: Sequence[tuple[int, int]] | None = None) -> None:  # fmt: skip
        """Distill `student` from `teacher` for the run's epochs per stage (nothing for 0 epochs)."""
        distill_stage(
            student,
            teacher,
            self.data.train_features,
            self.settings.distill,
            self.settings.trainer,
            self.out / "stages" / stage,
            self.device,
            logger=logger,
            regression=self.data.task.kind == "regression",
            layer_pairs=layer_pairs,
            stage=f"stage_{stage}",
            pooling=self.pooling,
        )

    def finish(self, pruned: nn.Module, dense: nn.Module, target: float, predicted: float,
               extra: Mapping[str, Any]) -> MemberRecord:  # fmt: skip
        """Evaluate, measure against the dense model, and save a member with its record.

        `extra`: the record fields of how the member was made (method, search, search_target, attempts,
        layers_kept, block_influence: `MemberRecord`'s names).
        """
        started = time.perf_counter()
        data = self.data
        metrics = self.scores(pruned)
        extra = dict(extra)
        if "measured_speedup" not in extra:  # not timed by the search (layer drop): time it now
            timed, tolerance = on_main(lambda: (self._timed(dense, pruned), self.tolerance(dense)))
            extra["measured_speedup"] = timed.speedup
            extra["speedup_interval"] = [timed.low, timed.high]
            extra["target_status"] = target_status(timed.speedup, target, tolerance)
            extra["tolerance"] = tolerance
        measured = float(extra.pop("measured_speedup"))
        structure = Structure.from_dict(pruned.config.ziplm_structure)  # type: ignore[union-attr,arg-type]
        dtype = self.settings.member_dtype
        if is_main():
            save_pruned(pruned, structure, self.folder(target), tokenizer=data.tokenizer, dtype=dtype)
            if self.pooling is not None:  # the embedder is encoder + pooling: eval and export read it here
                hidden = int(pruned.config.hidden_size)  # type: ignore[union-attr,arg-type]
                write_pooling(self.folder(target), self.pooling, hidden, self.embedding["reference"])
        record = MemberRecord(
            member=f"{target:g}x",
            target_speedup=target,
            predicted_speedup=predicted,
            measured_speedup=measured,
            deviation=measured / target - 1,
            parameters=count_parameters(pruned),
            encoder_parameters=count_encoder_parameters(pruned),
            heads_kept=[len(la.heads) for la in structure.layers],
            neurons_kept=[len(la.neurons) for la in structure.layers],
            metrics=dict(metrics),
            eval_precision=self.eval_precision,
            saved_dtype=dtype,
            **extra,
        )
        record.evaluate_measure_seconds = time.perf_counter() - started
        if is_main():
            record.save(self.folder(target) / METRICS_FILE)
        barrier()  # the member is complete on disk before any rank goes on
        return record

    def layerdrop_member(self, teacher: nn.Module, latency: LatencyModel, target: float, logger: Any,
                         start: nn.Module | None = None,
                         calibration: Batches = ()) -> tuple[MemberRecord, nn.Module]:  # fmt: skip
        """Layer-dropping baseline member: keep as many layers as the latency table puts closest to `target`
        — evenly spread (layerdrop), or the live layers of `start` (default the teacher) of highest Block
        Influence on `calibration` (blockdrop) — cut from `start`, distill them (each kept layer matched to
        its own teacher layer), evaluate, save. Returns the record and the member (float32)."""
        dims = adapter_for(teacher).dims(teacher)
        count, predicted = choose_layer_count(latency, dims, target)
        model = teacher if start is None else start
        extra: dict[str, Any] = {"method": self.settings.pruner.method}
        if registered_method(self.settings.pruner.method).layer_choice == "influence":
            keep, extra["block_influence"] = on_main(lambda: influential_layers(model, calibration, count))
            predicted = layer_count_speedups(latency, dims)[len(keep)]  # fewer when `start` has fewer live
        else:
            keep = spread_layers(dims.num_layers, count)
        student = drop_to_identity(model, keep)
        self.distill(student, teacher, logger, f"{target:g}x", layer_pairs=distillation_pairs(keep, shorter=False))
        return self.finish(student, teacher, target, predicted, {**extra, "layers_kept": keep}), student
