"""`ZipLMPruning`: a Lightning callback that turns the model a user's own training script trained into a
ZipLM family (levels database → latency table → DP search per target → stitch → measure → save).

    trainer = L.Trainer(..., callbacks=[ZipLMPruning(targets=[1.5, 2.0], output_dir="family")])
    trainer.fit(my_module, datamodule=my_data)

The HF model (BERT or GPT-2 family) is the LightningModule's ``model_attribute``; it is checked, and the
latency table measured, at fit start, so a wrong setup or an unreachable target fails before training.
At fit end (global rank zero only) the callback works on a CPU float32 deep copy: the user's model is
never changed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback

from ziplm.core.latency import LatencyModel
from ziplm.core.structure import Structure
from ziplm.data.features import MODEL_INPUTS
from ziplm.latency.cache import load_or_measure
from ziplm.latency.measure import Environment, interleaved_speedups
from ziplm.models import adapter_for, count_parameters, save_pruned
from ziplm.pipelines.members import METRICS_FILE
from ziplm.pruning.database_builder import build_database
from ziplm.pruning.levels_database import DatabaseSettings
from ziplm.pruning.search import search_space
from ziplm.pruning.stitch import stitch
from ziplm.pruning.targets import search_target
from ziplm.report.records import MemberRecord

DATABASE_DIR = "database"
FAMILY_TABLE = "family.md"


def _check_targets(targets: Iterable[float]) -> list[float]:
    values = [float(t) for t in targets]
    if not values:
        raise ValueError("ZipLMPruning: targets is empty; give at least one speedup target, e.g. [1.5, 2.0]")
    bad = [t for t in values if not math.isfinite(t) or t <= 1.0]
    if bad:
        raise ValueError(f"ZipLMPruning: every target must be a finite speedup above 1, got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"ZipLMPruning: targets must be unique, got {values}")
    return sorted(values)


def calibration_batches(loader: Iterable[Any], samples: int) -> list[dict[str, torch.Tensor]]:
    """Up to `samples` rows of `loader`'s batches, model inputs only (labels etc. dropped), on the CPU."""
    batches: list[dict[str, torch.Tensor]] = []
    rows = 0
    for batch in loader:
        if rows >= samples:
            break
        if not isinstance(batch, Mapping):
            raise ValueError(
                f"ZipLMPruning: calibration needs batches that are dicts of model inputs {MODEL_INPUTS}, "
                f"got a {type(batch).__name__}"
            )
        inputs = {k: v for k, v in batch.items() if k in MODEL_INPUTS and isinstance(v, torch.Tensor)}
        if "input_ids" not in inputs:
            raise ValueError(f"ZipLMPruning: a training batch has no input_ids tensor (keys: {sorted(batch)})")
        take = min(samples - rows, int(inputs["input_ids"].shape[0]))
        batches.append({k: v[:take].detach().cpu() for k, v in inputs.items()})
        rows += take
    if not batches:
        raise ValueError("ZipLMPruning: the train dataloader gave no batches to calibrate on")
    return batches


def _train_loader(trainer: L.Trainer, pl_module: L.LightningModule) -> Iterable[Any]:
    loader = getattr(trainer, "train_dataloader", None)
    if loader is not None:
        return loader  # type: ignore[no-any-return]
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        return datamodule.train_dataloader()  # type: ignore[no-any-return]
    return pl_module.train_dataloader()  # type: ignore[no-any-return]


def family_table(members: Sequence[MemberRecord], dense_parameters: int) -> str:
    """The markdown table written as ``family.md``."""
    lines = [
        "# ZipLM family",
        "",
        "| member | target | predicted | measured | parameters | heads kept | neurons kept |",
        "|---|---|---|---|---|---|---|",
        f"| dense | 1× | 1× | 1× | {dense_parameters:,} | all | all |",
    ]
    for m in members:
        lines.append(
            f"| {m.member} | {m.target_speedup:g}× | {m.predicted_speedup:.2f}× | {m.measured_speedup:.2f}× "
            f"| {m.parameters:,} | {sum(m.heads_kept or [])} | {sum(m.neurons_kept or [])} |"
        )
    return "\n".join(lines) + "\n"


class ZipLMPruning(Callback):
    """Prune the trained model to each speedup target at the end of `trainer.fit`.

    Args:
        targets: speedups over the dense model (finite, > 1, unique); one member folder each.
        output_dir: where ``<target>x/`` member folders (``load_pruned`` reloads them, each with a
            ``metrics.json``), ``family.md`` and the levels database (``database/``) are written.
        environment: the inference environment timed (latency table and measured speedups).
        calibration_samples: rows of training data the levels database is calibrated on.
        model_attribute: the LightningModule attribute holding the HF model.
        cache_dir: latency table cache (default ``<output_dir>/latency_cache``).
        settings: levels database settings (damp, FFN grid); the latency table uses the same grids.
        speedup_rounds: interleaved timing rounds of each member's measured speedup.
        show_progress: progress bars of the database build and the latency measurement.

    Attributes:
        members: after fit, one `MemberRecord` per target (also each member's ``metrics.json``).
    """

    def __init__(
        self,
        targets: Sequence[float],
        output_dir: str | Path,
        environment: Environment | None = None,
        calibration_samples: int = 256,
        model_attribute: str = "model",
        cache_dir: str | Path | None = None,
        settings: DatabaseSettings | None = None,
        speedup_rounds: int = 5,
        show_progress: bool = False,
    ) -> None:
        self.targets = _check_targets(targets)
        if output_dir is None or str(output_dir) == "":
            raise ValueError("ZipLMPruning: output_dir is required (where the family is written)")
        if isinstance(calibration_samples, bool) or int(calibration_samples) != calibration_samples:
            raise ValueError(f"ZipLMPruning: calibration_samples must be an integer, got {calibration_samples!r}")
        if calibration_samples < 1:
            raise ValueError(f"ZipLMPruning: calibration_samples must be >= 1, got {calibration_samples}")
        if speedup_rounds < 1:
            raise ValueError(f"ZipLMPruning: speedup_rounds must be >= 1, got {speedup_rounds}")
        if not model_attribute:
            raise ValueError("ZipLMPruning: model_attribute must name the LightningModule's HF model attribute")
        self.output_dir = Path(output_dir)
        self.environment = environment or Environment()
        self.environment.validate()
        self.calibration_samples = int(calibration_samples)
        self.model_attribute = model_attribute
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.output_dir / "latency_cache"
        self.settings = settings or DatabaseSettings()
        self.speedup_rounds = int(speedup_rounds)
        self.show_progress = show_progress
        self.members: list[MemberRecord] = []
        self.latency: LatencyModel | None = None

    # --- setup-time checks --------------------------------------------------------------------------------

    def hf_model(self, pl_module: L.LightningModule) -> Any:
        """The LightningModule's HF model; ValueError (what was found) if missing or unsupported."""
        model = getattr(pl_module, self.model_attribute, None)
        if model is None:
            found = sorted(name for name, _ in pl_module.named_children())
            raise ValueError(
                f"ZipLMPruning: {type(pl_module).__name__} has no attribute {self.model_attribute!r}; "
                f"its submodules are {found}: pass model_attribute=<the one holding the HF model>"
            )
        try:
            adapter_for(model)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"ZipLMPruning: {type(pl_module).__name__}.{self.model_attribute} is a {type(model).__name__}, "
                f"which ZipLM cannot prune: {err}"
            ) from None
        return model

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        model = self.hf_model(pl_module)
        if not trainer.is_global_zero:
            return
        if (self.output_dir / DATABASE_DIR).exists():
            raise ValueError(
                f"ZipLMPruning: {self.output_dir / DATABASE_DIR} holds a levels database from an earlier run; "
                "delete it or choose another output_dir"
            )
        self.latency = self._measure_latency(_cpu_copy(model))

    def _measure_latency(self, model: Any) -> LatencyModel:
        """The latency table on the model's shape (weights do not matter); every target must be reachable."""
        dims = adapter_for(model).dims(model)
        heads, ffn = self.settings.level_grids(dims.num_heads, dims.intermediate_size)
        table, _, _ = load_or_measure(model, self.environment, heads, ffn, self.cache_dir, self.show_progress)
        latency = LatencyModel(table, dims.num_layers)
        latency.check_reachable(self.targets)
        return latency

    # --- the family ------------------------------------------------------------------------------------------

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        model = _cpu_copy(self.hf_model(pl_module))
        latency = self.latency or self._measure_latency(model)
        batches = calibration_batches(_train_loader(trainer, pl_module), self.calibration_samples)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        database = build_database(
            model, batches, self.output_dir / DATABASE_DIR, self.settings, show_progress=self.show_progress
        )
        space = search_space(database, latency.table, latency.num_layers)
        self.members = []
        for target in self.targets:
            choice, _ = search_target(space, latency, target)
            pruned = stitch(model, database, choice).eval()
            measured = interleaved_speedups(model, [pruned], self.environment, self.speedup_rounds)[0]
            self.members.append(self._save(pruned, target, latency.speedup(choice), measured))
        self._log(pl_module, trainer.global_step)
        (self.output_dir / FAMILY_TABLE).write_text(family_table(self.members, count_parameters(model)))

    def _save(self, pruned: Any, target: float, predicted: float, measured: float) -> MemberRecord:
        structure = Structure.from_dict(pruned.config.ziplm_structure)
        folder = save_pruned(pruned, structure, self.output_dir / f"{target:g}x", dtype="float32")
        record = MemberRecord(
            member=f"{target:g}x",
            parameters=count_parameters(pruned),
            target_speedup=target,
            predicted_speedup=predicted,
            measured_speedup=measured,
            deviation=measured / target - 1,
            heads_kept=[len(layer.heads) for layer in structure.layers],
            neurons_kept=[len(layer.neurons) for layer in structure.layers],
            saved_dtype="float32",
            method=self.settings.method,
            search_target=target,
        )
        record.save(folder / METRICS_FILE)
        return record

    def _log(self, pl_module: L.LightningModule, step: int) -> None:
        logger = pl_module.logger
        if logger is None:
            return
        metrics: dict[str, float] = {}
        for m in self.members:
            prefix = f"ziplm/{m.member}"
            metrics[f"{prefix}/predicted_speedup"] = float(m.predicted_speedup or 0.0)
            metrics[f"{prefix}/measured_speedup"] = float(m.measured_speedup or 0.0)
            metrics[f"{prefix}/parameters"] = float(m.parameters)
        logger.log_metrics(metrics, step=step)


def _cpu_copy(model: Any) -> Any:
    """A CPU float32 deep copy in eval mode (the user's model, wherever it lives, is left as it is)."""
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()


__all__ = ["ZipLMPruning", "calibration_batches", "family_table"]
