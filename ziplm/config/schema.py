"""Structured-config schemas for every Hydra config group.

Why dataclasses: registered with Hydra's ConfigStore they make the composed config *structured*, so a
misspelt key or a wrong type fails at compose time with Hydra's own message, not hours into a run.
Each YAML file in ``conf/<group>/`` starts with ``defaults: [<group>_schema, _self_]``.
Every group's settings class is declared once, in the layer that takes it (``ModelSpec``, ``TaskSpec``,
``Environment``, ``PrunerSettings``, ``SearchSettings``, ``DistillSettings``, ``TeacherSettings``); this
module registers those classes (frozen ones through `layer_schema`). The compression/eval/export/serve/report
groups keep their schemas here: their layers take different settings (see each layer's own class).
``ziplm.config.settings.RunSettings`` is the typed view the pipelines hand down.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ziplm.config.settings import TeacherSettings
from ziplm.core.settings import DistillSettings
from ziplm.data.spec import TaskSpec
from ziplm.latency.environment import Environment
from ziplm.models.spec import ModelSpec
from ziplm.pruning.settings import PrunerSettings, SearchSettings


def layer_schema(cls: type, name: str, *, label: bool = False, defaults: dict[str, Any] | None = None) -> type:
    """A Hydra schema derived field by field from a layer's own (frozen) dataclass; nothing is re-declared.

    OmegaConf makes a frozen dataclass read-only (no YAML file or override could set it) and supports no
    tuples or ``Sequence``/``Mapping`` hints, so the schema is a mutable copy with ``list``/``Any`` in their
    place; the pipelines turn the composed group back into the layer's class (``RunSettings.from_config``).
    ``label`` puts a ``name`` (the option's label, not a setting) first; ``defaults`` replaces field defaults.
    """
    hints = get_type_hints(cls)
    specs: list[tuple[str, Any, Any]] = [("name", str, field(default=MISSING))] if label else []
    for f in dataclasses.fields(cls):
        hint = _config_type(hints[f.name])
        if defaults and f.name in defaults:
            specs.append((f.name, hint, field(default_factory=functools.partial(copy.deepcopy, defaults[f.name]))))
        elif isinstance(f.default, tuple | list):  # a mutable default needs a factory (a list: OmegaConf has no tuples)
            specs.append((f.name, hint, field(default_factory=functools.partial(list, f.default))))
        elif f.default is not dataclasses.MISSING:
            specs.append((f.name, hint, field(default=f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            specs.append((f.name, hint, field(default_factory=f.default_factory)))
        else:
            specs.append((f.name, hint, field(default=MISSING)))
    schema = dataclasses.make_dataclass(name, specs, namespace={"__doc__": cls.__doc__})
    # Importable under its own name: launchers that pickle the ConfigStore into worker processes (joblib,
    # submitit) find the schema by module and name, so it must not share the layer class's name.
    schema.__module__ = __name__
    return schema


def _config_type(hint: Any) -> Any:
    """``Sequence[X]``/``tuple[X, ...]`` -> ``list[X]``; a ``Mapping`` (optional or not) -> ``Any``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (Sequence, tuple, list) and args:
        return list[args[0]]  # type: ignore[valid-type]
    if origin is Mapping or any(typing.get_origin(a) is Mapping for a in args):
        return Any
    return hint


ModelSchema = layer_schema(ModelSpec, "ModelSchema")
# Task data_files: typed Any with the usual split keys pre-set, so every command-line form composes
# (task.data_files={train: a.csv}, task.data_files.train=a.csv, +task.data_files.<split>=...).
_SPLITS: dict[str, Any] = {"train": None, "validation": None, "test": None}
TaskSchema = layer_schema(TaskSpec, "TaskSchema", defaults={"data_files": _SPLITS})
HardwareSchema = layer_schema(Environment, "HardwareSchema", label=True)


@dataclass
class ScheduleConfig:
    """How the family is produced: one-shot (no fine-tuning) or gradual (prune, distill, repeat).

    Only the name and the members' storage dtype: what a gradual schedule changes in the other groups
    (``distill.epochs_per_stage``, ``search.targets`` ...) its YAML file sets (``conf/schedule/gradual.yaml``).
    """

    name: str = MISSING  # oneshot | gradual
    # Saved members' weights: float32 (default) | bfloat16 | float16 (recorded in each member's ziplm.json).
    # Independent of how the run computes: timing follows `hardware.dtype`, training `trainer.precision`.
    member_dtype: str = "float32"


@dataclass
class TrainerConfig:
    """The Lightning Trainer of every stage (``ziplm.lit.trainer.make_trainer``): a ``_target_`` config.

    Every key except ziplm's own (batch_size, eval_batch_size, num_workers, eval_precision, callbacks) is a
    Trainer kwarg; add any other with ``+trainer.<kwarg>=...`` (``ziplm.config.validate`` checks the name).
    """

    _target_: str = "lightning.pytorch.Trainer"
    callbacks: Any = "${callbacks}"  # the `callbacks` group (name -> _target_ config), built per Trainer
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    # Precision of every evaluation (dense row and members alike): 32-true | bf16-mixed | 16-mixed;
    # null = the training precision above. Recorded in results.md and every metrics.json.
    eval_precision: str | None = None
    max_epochs: int = 1
    max_steps: int = -1
    batch_size: int = 32
    eval_batch_size: int = 64
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 10
    num_workers: int = 0
    limit_train_batches: float | None = None
    limit_val_batches: float | None = None


# Experiment tracking (``ziplm.report.tracking.make_logger``): a ``_target_`` config of any Lightning logger
# class (null: none), built with hydra.utils.instantiate. Open mappings, as their kwargs depend on the class
# (``+logger.<kwarg>=...`` adds any); `kind` only names the choice (wandb | csv | none). Every choice has
# the W&B settings (the sweep report's W&B run reads them too): mode is offline unless the user opts in.
LoggerConfig: dict[str, Any] = {
    "_target_": None, "kind": None, "project": "ziplm", "mode": "offline", "group": None, "tags": [],
}  # fmt: skip
# The run's Lightning callbacks: name -> ``_target_`` config (``ziplm.lit.trainer.make_callbacks``).
CallbacksConfig: dict[str, Any] = {}


@dataclass
class CompressionConfig:
    """Compound compression on top of a structured member (issue 7): each step optional."""

    name: str = MISSING
    unstructured: str = "none"  # none | obs | magnitude: per-matrix unstructured pruning
    sparsity: float = 0.0  # fraction of each prunable matrix's weights set to zero, in [0, 1)
    int8: bool = False  # INT8 dynamic quantization of every nn.Linear (CPU)
    calibration_samples: int = 128  # Hessian samples for unstructured OBS
    damp: float = 0.01


@dataclass
class ExportConfig:
    """``ziplm export checkpoint=<member>``: standard formats of a family member."""

    formats: list[str] = field(default_factory=lambda: ["onnx"])  # onnx | hf | transformers (stock HF, layer-drop)
    output: str | None = None  # default: <checkpoint>/export
    seq_length: int = 128  # example input shape (axes stay dynamic)
    verify: bool = True  # run the ONNX file in onnxruntime and compare with PyTorch
    atol: float = 1e-4


@dataclass
class EvalConfig:
    """``ziplm eval checkpoint=<member | HF folder | Hub id>``: what the checkpoint is scored on.

    ``eval=task`` (default): the configured ziplm ``task=`` (its metric on every evaluation split).
    ``eval=lm-eval``: lm-evaluation-harness tasks (``ziplm.eval.harness``), for causal LMs only; the other
    keys are lm_eval's ``simple_evaluate`` arguments and apply to it alone.
    """

    name: str = MISSING  # task | lm-eval
    # lm-eval task, group or tag names (`lm-eval ls tasks`), names defined in `include_path`, or `ziplm_task`
    # (the configured LM task's evaluation text as a rolling-loglikelihood task, written to the run folder).
    tasks: list[str] = field(default_factory=list)
    # Folders (a path or a list of paths) of extra task YAMLs (lm_eval's --include_path), e.g. local tasks.
    include_path: Any = None
    num_fewshot: int | None = None  # null = each task's own default
    limit: int | None = None  # first N documents of each task (for quick checks); null = all
    batch_size: int = 8
    max_length: int | None = None  # tokens per forward pass; null = the model's max_position_embeddings
    seed: int | None = None  # null = lm_eval's default seeds (0 / 1234); else every lm_eval seed
    log_samples: bool = False  # also write every request and its loglikelihoods to lm_eval_samples/<task>.jsonl


@dataclass
class ServeConfig:
    """``ziplm serve-bench checkpoint=<member | HF folder | Hub id>``: latency percentiles under concurrent requests."""

    baseline: str | None = None  # a dense model (folder / Hub id); default: the member's dense architecture
    concurrency: int = 4  # client threads sending requests at once
    requests: int = 200  # per model
    batch_size: int = 1  # sequences per request
    seq_length: int = 128
    warmup: int = 10
    rounds: int = 10  # models alternate in this many rounds, so machine drift hits them alike


@dataclass
class ReportConfig:
    """``ziplm report <dir>``: one table and Pareto plots from every run under a folder."""

    dir: str | None = None
    references: bool = True  # show the presets' published numbers as reference rows
    # Also write a self-contained copy (report, runs/<label>/ records, publish.md index) into this folder,
    # e.g. experiments/results/<name>; outside `dir`. Files it does not write there are kept.
    publish: str | None = None


@dataclass
class Config:
    """The composed top-level config of one ``ziplm <command>`` run."""

    command: str = "run"
    name: str = "default"
    seed: int = 0
    output_root: str = "outputs"
    cache_dir: str = "outputs/cache"
    # `ziplm eval` / `serve-bench` / `export`: a member folder, an HF folder or a Hub id; `ziplm latency`: one
    # or a list ([a,b]) timed against the configured model.
    checkpoint: Any = None
    model: ModelSchema = MISSING  # type: ignore[valid-type]
    task: TaskSchema = MISSING  # type: ignore[valid-type]
    hardware: HardwareSchema = MISSING  # type: ignore[valid-type]
    pruner: PrunerSettings = MISSING
    search: SearchSettings = MISSING
    distill: DistillSettings = MISSING
    teacher: TeacherSettings = MISSING
    schedule: ScheduleConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: dict[str, Any] = MISSING
    callbacks: dict[str, Any] = field(default_factory=dict)
    compression: CompressionConfig = MISSING
    eval: EvalConfig = MISSING
    export: ExportConfig = field(default_factory=ExportConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # Free-form notes an experiment preset carries (published reference numbers, citations).
    reference: dict[str, Any] = field(default_factory=dict)
    # Published checkpoints evaluated and timed in this run's harness: [{checkpoint, label, citation}, ...].
    baselines: list[Any] = field(default_factory=list)


GROUP_SCHEMAS: dict[str, Any] = {  # a dataclass, or an open mapping for `_target_` groups
    "model": ModelSchema,
    "task": TaskSchema,
    "hardware": HardwareSchema,
    "pruner": PrunerSettings,
    "search": SearchSettings,
    "distill": DistillSettings,
    "teacher": TeacherSettings,
    "schedule": ScheduleConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "callbacks": CallbacksConfig,
    "compression": CompressionConfig,
    "eval": EvalConfig,
}


def register_schemas() -> None:
    """Register the top-level schema and one ``<group>_schema`` node per group with Hydra."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"{group}_schema", node=schema)
