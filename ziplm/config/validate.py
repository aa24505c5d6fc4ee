"""Every setting of the composed config, checked in milliseconds before a command loads anything.

`validate_config` runs in the CLI's dispatch (every command, every sweep job) right after Hydra composes
the config. A bad value fails at once with one line that names the key, says what it must be and gives a
value that works, instead of after the teacher, the latency table or the search has run. The schema
(`ziplm.config.schema`) already fixed each key's type at compose time; this module checks ranges and names.

It imports neither torch nor the data layer: the names that heavy modules accept (pruning methods, timing
dtypes and engines, ...) are mirrored below, and tests/config/test_validate.py checks each copy against
its source. Checks that need the machine (CUDA present, a C++ compiler, onnxruntime) stay where they were.
"""

from __future__ import annotations

import importlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from ziplm.config.baselines import parse_baselines
from ziplm.config.distill_checks import check_distill
from ziplm.config.embedding_checks import check_embedding
from ziplm.config.eval_checks import check_eval
from ziplm.config.instantiable import check_callbacks, check_logger, check_trainer  # the _target_ groups
from ziplm.config.model_checks import check_attention_shape
from ziplm.config.paths import task_options
from ziplm.pruning.settings import check_calibration  # plain Python, like the other settings classes

# Mirrors of what the consuming modules accept (kept equal to their sources by tests/config/test_validate.py).
SCHEDULES = ("oneshot", "gradual")
METHODS = ("obs", "magnitude", "random", "fisher", "fisher-norescale", "layerdrop", "blockdrop")  # pruning.methods
MEMBER_DTYPES = ("float32", "bfloat16", "float16")  # ziplm.models.io.SAVE_DTYPES
HARDWARE_DTYPES = ("float32", "float16", "bfloat16")  # ziplm.latency.measure.DTYPES
ENGINES = ("eager", "compile", "onnxruntime")  # ziplm.latency.measure.ENGINES
FAMILIES = ("bert", "gpt2", "llama", "mistral", "qwen2", "qwen3", "opt")  # ziplm.models.registry.ADAPTERS
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")  # ziplm.pipelines.placement.run_device
# Training keeps the members' weights in float32 (mixed precision autocasts the math only); every evaluation
# runs in one of these too (ziplm.eval.evaluate.EVAL_PRECISIONS), `trainer.precision` when eval_precision is null.
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed")
_PRECISION_FIX = {"16-true": "16-mixed", "16": "16-mixed", "bf16-true": "bf16-mixed", "bf16": "bf16-mixed"}
UNSTRUCTURED = ("none", "obs", "magnitude")  # ziplm.compress.compound.UNSTRUCTURED_METHODS
EXPORT_FORMATS = ("onnx", "hf", "transformers", "sentence-transformers")  # ziplm.pipelines.export.FORMATS
# Commands that build the model from the `model` group (the others load a saved `checkpoint=` member),
# so only they are checked against the model's dims.
MODEL_COMMANDS = ("run", "prune", "latency", "smoke")
SEED_LIMIT = 2**32 - 1  # numpy / Lightning seeds


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


def _list(values: Sequence[float]) -> str:
    """A list as a shell-safe override value: ``[2,3.5]``."""
    return "[" + ",".join(f"{v:g}" for v in values) + "]"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Group:
    """Checks of one config group; every message reads ``<group>.<key> must be ..., got X; e.g. <group>.<key>=Y``."""

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        self.name, self.values = name, values

    def key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def fail(self, key: str, requirement: str, example: Any) -> NoReturn:
        value = self.values.get(key)
        raise ValueError(f"{self.key(key)} must be {requirement}, got {_show(value)}; e.g. {self.key(key)}={example}")

    def integer(self, key: str, minimum: int, example: Any, *, optional: bool = False, note: str = "") -> int | None:
        value: Any = self.values.get(key)
        if value is None and optional:
            return None
        if not _is_int(value) or value < minimum:
            self.fail(key, f"an integer >= {minimum}{' or null' if optional else ''}{note}", example)
        return int(value)

    def number(self, key: str, example: Any, interval: str, *, optional: bool = False, note: str = "") -> float | None:
        """`interval` like ``(0, inf)`` or ``[0, 1)``: brackets include their bound, parentheses exclude it."""
        value: Any = self.values.get(key)
        if value is None and optional:
            return None
        low, high = (float(bound) for bound in interval[1:-1].split(","))
        inside = _is_number(value) and (value > low if interval[0] == "(" else value >= low)
        if not inside or not (value < high if interval[-1] == ")" else value <= high):
            relation = f"{'>' if interval[0] == '(' else '>='} {low:g}"
            requirement = f"a number in {interval}" if math.isfinite(high) else f"a finite number {relation}"
            self.fail(key, f"{requirement}{' or null' if optional else ''}{note}", example)
        return None if value is None else float(value)

    def limit(self, key: str, example: Any, minus_one: str) -> None:
        """An integer >= 1, or -1 meaning `minus_one`."""
        value: Any = self.values.get(key)
        if not _is_int(value) or (value < 1 and value != -1):
            self.fail(key, f"an integer >= 1 (or -1: {minus_one})", example)

    def choice(self, key: str, options: Sequence[str], example: str | None = None, note: str = "") -> str:
        value = self.values.get(key)
        if value not in options:
            self.fail(key, f"one of {', '.join(options)}{note}", example or options[0])
        return str(value)


def _plain(cfg: DictConfig, group: str) -> dict[str, Any] | None:
    node = cfg.get(group)
    if node is None:
        return None
    container = OmegaConf.to_container(node, resolve=True)
    return {str(k): v for k, v in container.items()} if isinstance(container, dict) else None


def validate_config(cfg: DictConfig) -> None:
    """Check every numeric and enumerated setting of a composed ``ziplm`` config, group by group.

    Raises:
        ValueError: the first bad value, as ``<group>.<key> must be ..., got X; e.g. <group>.<key>=<good>``.
    """
    command = str(cfg.get("command", "run"))
    _check_top(cfg)
    model = _plain(cfg, "model")
    dims = model if model is not None and command in MODEL_COMMANDS else {}
    checks = {
        "model": _check_model,
        "task": lambda values: _check_task(values, dims),
        "hardware": lambda values: _check_hardware(values, dims),
        "pruner": lambda values: _check_pruner(values, dims, _plain(cfg, "trainer") or {}),
        "search": lambda values: _check_search(values, str(cfg.schedule.name) if "schedule" in cfg else "oneshot"),
        "distill": lambda values: check_distill(_Group("distill", values)),
        "teacher": _check_teacher,
        "schedule": _check_schedule,
        "trainer": _check_trainer,
        "logger": check_logger,
        "callbacks": check_callbacks,
        "compression": _check_compression,
        "eval": lambda values: check_eval(_Group("eval", values), command, (_plain(cfg, "task") or {}).get("kind")),
        "export": _check_export,
        "serve": _check_serve,
    }
    for group, check in checks.items():
        values = model if group == "model" else _plain(cfg, group)
        if values is not None:
            check(values)
    parse_baselines(OmegaConf.to_container(cfg.baselines, resolve=True) if "baselines" in cfg else [], task_options())
    check_embedding(cfg)  # label-free sentence embeddings: encoder, no labelled settings, non-empty text
    if command == "compress":
        _check_int8_environment(cfg)


def _check_int8_environment(cfg: DictConfig) -> None:
    """``ziplm compress``: INT8 dynamic quantization is timed in PyTorch eager on CPU with float32 activations."""
    if not cfg.compression.int8:
        return
    hardware = f"{cfg.hardware.device}/{cfg.hardware.engine}/{cfg.hardware.dtype}"
    if hardware != "cpu/eager/float32":
        raise ValueError(
            "compression.int8=true must run on hardware cpu/eager/float32 (INT8 dynamic quantization is a "
            f"PyTorch CPU kernel), got hardware {cfg.hardware.name} = {hardware}; e.g. hardware=cpu"
        )


def _check_top(cfg: DictConfig) -> None:
    from ziplm.commands import COMMANDS  # imports neither torch nor Hydra

    top = _Group("", {key: cfg.get(key) for key in ("command", "seed", "name")})
    top.choice("command", list(COMMANDS), "run")
    seed = top.integer("seed", 0, 0)
    if seed is not None and seed > SEED_LIMIT:
        top.fail("seed", f"an integer in [0, {SEED_LIMIT}]", 0)
    if not str(top.values.get("name") or "").strip():
        top.fail("name", "a non-empty run name (it names the output folder)", "my-run")


def _check_model(values: Mapping[str, Any]) -> None:
    g = _Group("model", values)
    g.choice("family", FAMILIES)
    examples = {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072}
    examples |= {"vocab_size": 30522, "max_position_embeddings": 512}
    for key, example in examples.items():
        g.integer(key, 1, example, optional=True)
    if values.get("source") == "scratch":
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size"):
            if values.get(key) is None:
                g.fail(key, "set for model.source=scratch (a random model built from its dims)", examples[key])
        if not values.get("tokenizer"):
            g.fail(
                "tokenizer", "set for model.source=scratch (a real tokenizer for the random model)", "packaged:minilm"
            )
    check_attention_shape(values, g)  # head counts, GQA, prune_query_heads


def _positions(dims: Mapping[str, Any], g: _Group, key: str, default: int) -> None:
    """`<group>.<key>` (tokens per sequence) must fit the model's position embeddings."""
    limit, value = dims.get("max_position_embeddings"), g.values.get(key)
    if limit is not None and _is_int(value) and value > limit:
        g.fail(key, f"<= model.max_position_embeddings={limit} (model {dims.get('name')})", min(default, limit))


def _check_task(values: Mapping[str, Any], dims: Mapping[str, Any]) -> None:
    spec_module = _task_spec_module()
    g = _Group("task", values)
    kind = g.choice("kind", spec_module.KINDS, "classification")
    g.choice("metric", spec_module.METRICS, "accuracy")
    length = g.integer("max_seq_length", 2, 128)
    assert length is not None
    g.integer("max_train_samples", 1, 1000, optional=True, note=" (null = the whole split)")
    g.integer("max_eval_samples", 1, 1000, optional=True, note=" (null = the whole split)")
    labels = g.integer("num_labels", 1, 2, optional=True)
    if kind == "classification" and (labels is None or labels < 2):
        g.fail("num_labels", "an integer >= 2 for a classification task (the number of classes)", 2)
    if kind == "regression" and labels != 1:
        g.fail("num_labels", "1 for a regression task (one real-valued output)", 1)
    g.integer("doc_stride", 1, min(128, length - 1))
    if kind == "qa" and values["doc_stride"] >= length:
        g.fail("doc_stride", f"< task.max_seq_length={length} (overlap of QA windows)", length // 3)
    g.integer("stride", 1, min(512, length))
    if kind == "lm" and values["stride"] > length:
        g.fail("stride", f"<= task.max_seq_length={length} (new tokens per LM window)", length // 2)
    _positions(dims, g, "max_seq_length", 128)
    spec_module.TaskSpec.from_mapping(values)  # text_keys, label_key, data_files: the data layer's own rules


def _task_spec_module() -> Any:
    """``ziplm.data.spec``: plain Python (``ziplm.data`` loads its heavy modules lazily)."""
    return importlib.import_module("ziplm.data.spec")


def _check_hardware(values: Mapping[str, Any], dims: Mapping[str, Any]) -> None:
    g = _Group("hardware", values)
    device = values.get("device")
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        g.fail("device", "cpu, cuda or cuda:N", "cuda" if str(device).startswith(("gpu", "cuda")) else "cpu")
    dtype = g.choice("dtype", HARDWARE_DTYPES)
    engine = g.choice("engine", ENGINES)
    if device == "cpu" and dtype == "float16":
        g.fail("dtype", "float32 or bfloat16 on hardware.device=cpu (float16 is no CPU deployment)", "bfloat16")
    if engine == "onnxruntime" and dtype != "float32":
        g.fail("dtype", "float32 with hardware.engine=onnxruntime (it times float32 ONNX exports)", "float32")
    g.integer("batch_size", 1, 32)
    g.integer("seq_length", 1, 128)
    g.integer("warmup", 0, 2)
    g.integer("repetitions", 1, 15)
    g.number("max_seconds_per_entry", 8.0, "(0, inf)")
    g.integer("threads", 1, 4, optional=True, note=" (null = torch's default)")
    _positions(dims, g, "seq_length", 128)


def check_schedule_targets(targets: Sequence[float], schedule: str) -> None:
    """Targets must be finite speedups > 1, each once; a gradual schedule needs them strictly increasing.

    The messages name ``search.targets`` and keep the wording sweep reports match on.
    """
    example = "search.targets=[1.5,2.0,3.0]" if schedule != "gradual" else "search.targets=[2,3,4]"
    if not targets:
        raise ValueError(
            f"schedule {schedule!r} has an empty target list: search.targets must hold at least one speedup "
            f"> 1, got []; e.g. {example}"
        )
    values = list(targets)
    bad = [t for t in values if not _is_number(t) or t <= 1.0]
    if bad:
        raise ValueError(
            f"speedup targets must be finite and > 1, got {bad} in search.targets={values}; e.g. {example}"
        )
    if len(set(values)) != len(values):
        raise ValueError(
            f"speedup targets contain duplicates: search.targets must list each speedup once, got {values}; "
            f"e.g. search.targets={_list(sorted(set(values)))}"
        )
    if schedule == "gradual" and any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(
            f"gradual targets must be strictly increasing (each stage prunes further), got search.targets="
            f"{values}; e.g. search.targets={_list(sorted(values))}"
        )


def _check_schedule(values: Mapping[str, Any]) -> None:
    g = _Group("schedule", values)
    g.choice("name", SCHEDULES)
    g.choice("member_dtype", MEMBER_DTYPES, "float32", note=" (the saved members' weights)")


def _check_pruner(values: Mapping[str, Any], dims: Mapping[str, Any], trainer: Mapping[str, Any]) -> None:
    g = _Group("pruner", values)
    g.choice("method", METHODS, "obs")
    check_calibration(values, trainer)  # whole | layerwise, and what layerwise cannot run with
    g.integer("calibration_samples", 1, 1024)
    g.number("damp", 0.01, "(0, inf)", note=" (relative Hessian dampening)")
    group = g.integer("ffn_group_size", 1, 1)
    g.number("ffn_grid_ratio", 0.9, "(0, 1)")
    g.integer("ffn_round_to", 1, 1, note=" (1 = no rounding)")
    ffn: Any = dims.get("intermediate_size")
    if group is not None and ffn is not None and ffn % group:
        g.fail("ffn_group_size", f"a divisor of model.intermediate_size={ffn} (neurons pruned together)", 1)


def _check_search(values: Mapping[str, Any], schedule: str) -> None:
    g = _Group("search", values)
    targets = values.get("targets")
    check_schedule_targets(list(targets) if isinstance(targets, list | tuple) else [], schedule)
    g.integer("spdy_loss_samples", 0, 64, note=" (0 = search on the database's errors alone)")
    g.integer("spdy_random_starts", 0, 10, note=" (0 = no random restarts)")
    g.integer("spdy_local_steps", 0, 10)
    g.integer("speedup_rounds", 1, 15)
    g.number("speedup_ci", 0.01, "(0, 1)", note=" (0.01 = time until the speedup's ~95% interval is within 1%)")
    g.number("speedup_tolerance", 0.03, "[0, 1)", note=" (0.03 = measured within 3% of the target)")
    g.integer("speedup_corrections", 0, 2, note=" (0 = trust the latency table)")


def _check_teacher(values: Mapping[str, Any]) -> None:
    g = _Group("teacher", values)
    g.number("epochs", 1, "[0, inf)", note=" (0 = the model as it is)")
    g.number("learning_rate", 1e-4, "(0, inf)")


def _check_trainer(values: Mapping[str, Any]) -> None:
    g = _Group("trainer", values)
    g.choice("accelerator", ACCELERATORS, "cpu")
    if _is_int(values.get("devices")):  # else auto, a list of device ids or Lightning's "0,1" string
        g.limit("devices", 1, "every device")
    g.integer("num_nodes", 1, 1)
    precision_note = (
        " (members train in float32 weights: *-mixed autocasts the math, *-true would cast the weights to half "
        "precision; to save half-precision members set schedule.member_dtype)"
    )
    precision = values.get("precision")
    if precision not in PRECISIONS:
        g.fail(
            "precision",
            f"one of {', '.join(PRECISIONS)}{precision_note}",
            _PRECISION_FIX.get(str(precision), "32-true"),
        )
    if values.get("eval_precision") is not None and values["eval_precision"] not in PRECISIONS:
        fix = _PRECISION_FIX.get(str(values["eval_precision"]), "32-true")
        g.fail("eval_precision", f"null (= trainer.precision) or one of {', '.join(PRECISIONS)}", fix)
    g.limit("max_epochs", 1, "no epoch limit")
    g.limit("max_steps", -1, "no step limit")
    g.integer("batch_size", 1, 32)
    g.integer("eval_batch_size", 1, 64)
    g.integer("log_every_n_steps", 1, 10)
    g.integer("num_workers", 0, 0, note=" (0 = load data in the main process)")
    g.number("gradient_clip_val", 1.0, "(0, inf)", optional=True, note=" (null = no clipping)")
    for key in ("limit_train_batches", "limit_val_batches"):
        g.number(key, 0.5, "(0, 1]", optional=True, note=" (a fraction)")
    check_trainer(values)  # its class and every other Lightning kwarg (+trainer.<kwarg>=...)


def _check_compression(values: Mapping[str, Any]) -> None:
    g = _Group("compression", values)
    method = g.choice("unstructured", UNSTRUCTURED, "obs")
    sparsity = g.number("sparsity", 0.5, "[0, 1)", note=" (fraction of each matrix's weights set to zero)")
    if method == "none" and sparsity:
        g.fail("unstructured", f"obs or magnitude to reach compression.sparsity={sparsity:g}", "obs")
    g.integer("calibration_samples", 1, 128)
    g.number("damp", 0.01, "(0, inf)", note=" (relative Hessian dampening)")


def _check_export(values: Mapping[str, Any]) -> None:
    g = _Group("export", values)
    formats = values.get("formats")
    if not isinstance(formats, list | tuple) or not formats or any(f not in EXPORT_FORMATS for f in formats):
        g.fail("formats", f"a non-empty list of {', '.join(EXPORT_FORMATS)}", "[onnx,hf]")
    g.integer("seq_length", 2, 128, note=" (length-1 axes cannot stay dynamic)")
    g.number("atol", 1e-4, "(0, inf)")


def _check_serve(values: Mapping[str, Any]) -> None:
    g = _Group("serve", values)
    for key, example in (("concurrency", 4), ("requests", 200), ("batch_size", 1), ("seq_length", 128), ("rounds", 10)):
        g.integer(key, 1, example)
    g.integer("warmup", 0, 10)
