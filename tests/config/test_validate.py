"""`validate_config`: every bad value fails at once, naming its key and a fix; every preset passes.

Unit tests compose the real config (as the CLI does) and validate it in-process; the CLI tests run
``python -m ziplm`` on a few representative bad values and check that nothing was loaded or written.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from ziplm.config import validate
from ziplm.config.paths import CONF_DIR, EXPERIMENTS_DIR, REPO_ROOT, compose
from ziplm.config.schema import GROUP_SCHEMAS
from ziplm.config.validate import check_schedule_targets, validate_config

SMOKE = "experiment=smoke"  # tiny-bert: hidden 32, 4 heads, FFN 64, 128 positions; tiny-cls: 32 tokens

# (overrides on top of the smoke preset, the key the message must name)
BAD: list[tuple[tuple[str, ...], str]] = [
    (("seed=-1",), "seed"),
    (("seed=4294967296",), "seed"),
    (("model.family=t5",), "model.family"),
    (("model.hidden_size=0",), "model.hidden_size"),
    (("model.num_heads=5",), "model.num_heads"),  # does not divide hidden_size 32
    (("model.vocab_size=null",), "model.vocab_size"),  # a scratch model needs every dim
    (("model.tokenizer=null",), "model.tokenizer"),
    (("task.kind=ranking",), "task.kind"),
    (("task.metric=bleu",), "task.metric"),
    (("task.max_seq_length=1",), "task.max_seq_length"),
    (("task.max_seq_length=4096",), "task.max_seq_length"),  # > the model's 128 positions
    (("task.num_labels=1",), "task.num_labels"),
    (("task.max_train_samples=0",), "task.max_train_samples"),
    (("task.max_eval_samples=-5",), "task.max_eval_samples"),
    (("task=squad", "model=minilm", "task.doc_stride=384"), "task.doc_stride"),
    (("task=tiny-lm", "task.stride=0"), "task.stride"),
    (("hardware.device=gpu",), "hardware.device"),
    (("hardware.dtype=float8",), "hardware.dtype"),
    (("hardware.dtype=float16",), "hardware.dtype"),  # on CPU
    (("hardware=cpu-onnxruntime", "hardware.dtype=bfloat16"), "hardware.dtype"),
    (("hardware.engine=tensorrt",), "hardware.engine"),
    (("hardware.batch_size=0",), "hardware.batch_size"),
    (("hardware.seq_length=0",), "hardware.seq_length"),
    (("hardware.seq_length=512",), "hardware.seq_length"),  # > the model's 128 positions
    (("hardware.warmup=-1",), "hardware.warmup"),
    (("hardware.repetitions=0",), "hardware.repetitions"),
    (("hardware.max_seconds_per_entry=0",), "hardware.max_seconds_per_entry"),
    (("hardware.threads=0",), "hardware.threads"),
    (("schedule.name=cyclic",), "schedule.name"),
    (("pruner.method=obd",), "pruner.method"),
    (("schedule.member_dtype=float8",), "schedule.member_dtype"),
    (("search.targets=[]",), "search.targets"),
    (("search.targets=[0.5]",), "search.targets"),
    (("search.targets=[2.0,inf]",), "search.targets"),
    (("search.targets=[2.0,2.0]",), "search.targets"),
    (("schedule=gradual", "search.targets=[3,2]"), "search.targets"),
    (("pruner.damp=-1",), "pruner.damp"),
    (("pruner.damp=0",), "pruner.damp"),
    (("pruner.damp=nan",), "pruner.damp"),
    (("pruner.calibration_samples=0",), "pruner.calibration_samples"),
    (("search.spdy_loss_samples=-1",), "search.spdy_loss_samples"),
    (("search.spdy_random_starts=-1",), "search.spdy_random_starts"),
    (("search.spdy_local_steps=-1",), "search.spdy_local_steps"),
    (("distill.epochs_per_stage=-1",), "distill.epochs_per_stage"),
    (("teacher.epochs=-0.5",), "teacher.epochs"),
    (("distill.learning_rate=0",), "distill.learning_rate"),
    (("distill.learning_rate=inf",), "distill.learning_rate"),
    (("teacher.learning_rate=-1e-4",), "teacher.learning_rate"),
    (("pruner.ffn_group_size=0",), "pruner.ffn_group_size"),
    (("pruner.ffn_group_size=3",), "pruner.ffn_group_size"),  # does not divide the FFN width 64
    (("pruner.ffn_grid_ratio=1",), "pruner.ffn_grid_ratio"),
    (("pruner.ffn_grid_ratio=0",), "pruner.ffn_grid_ratio"),
    (("pruner.ffn_round_to=0",), "pruner.ffn_round_to"),
    (("search.speedup_rounds=0",), "search.speedup_rounds"),
    (("search.speedup_tolerance=1.5",), "search.speedup_tolerance"),
    (("search.speedup_tolerance=-0.1",), "search.speedup_tolerance"),
    (("search.speedup_corrections=-1",), "search.speedup_corrections"),
    (("distill.token=-1",), "distill.token"),
    (("distill.temperature=0",), "distill.temperature"),
    (("distill.dropout=1",), "distill.dropout"),
    (("distill.dropout=-0.1",), "distill.dropout"),
    (("distill.epochs_per_stage=1", "distill.logit=0", "distill.token=0"), "distill.logit"),
    (("trainer.accelerator=tpu",), "trainer.accelerator"),
    (("trainer.devices=0",), "trainer.devices"),
    (("trainer.num_nodes=0",), "trainer.num_nodes"),
    (("trainer.precision=16-true",), "trainer.precision"),
    (("trainer.precision=bf16-true",), "trainer.precision"),
    (("trainer.precision=64-true",), "trainer.precision"),
    (("trainer.eval_precision=16-true",), "trainer.eval_precision"),
    (("trainer.max_epochs=0",), "trainer.max_epochs"),
    (("trainer.max_steps=0",), "trainer.max_steps"),
    (("trainer.batch_size=0",), "trainer.batch_size"),
    (("trainer.eval_batch_size=0",), "trainer.eval_batch_size"),
    (("trainer.log_every_n_steps=0",), "trainer.log_every_n_steps"),
    (("trainer.num_workers=-1",), "trainer.num_workers"),
    (("trainer.gradient_clip_val=0",), "trainer.gradient_clip_val"),
    (("trainer.limit_train_batches=0",), "trainer.limit_train_batches"),
    (("trainer.limit_val_batches=1.5",), "trainer.limit_val_batches"),
    (("logger.kind=mlflow",), "logger.kind"),
    (("logger.mode=cloud",), "logger.mode"),
    (("compression.unstructured=sparsegpt",), "compression.unstructured"),
    (("compression=obs50", "compression.sparsity=1.0"), "compression.sparsity"),
    (("compression.sparsity=0.5",), "compression.unstructured"),  # sparsity needs a method
    (("compression=obs50", "compression.calibration_samples=0"), "compression.calibration_samples"),
    (("compression.damp=0",), "compression.damp"),
    (("export.formats=[]",), "export.formats"),
    (("export.formats=[tflite]",), "export.formats"),
    (("export.seq_length=1",), "export.seq_length"),
    (("export.atol=0",), "export.atol"),
    (("serve.concurrency=0",), "serve.concurrency"),
    (("serve.requests=0",), "serve.requests"),
    (("serve.batch_size=0",), "serve.batch_size"),
    (("serve.seq_length=0",), "serve.seq_length"),
    (("serve.rounds=0",), "serve.rounds"),
    (("serve.warmup=-1",), "serve.warmup"),
]


@cache
def _compose(overrides: tuple[str, ...], command: str = "run") -> DictConfig:
    return compose(list(overrides), command=command)


def _config(overrides: Sequence[str], command: str = "run") -> DictConfig:
    """The config of ``ziplm <command> <overrides>``: presets and group choices composed by Hydra (0.2 s
    each, cached), then each ``key=value`` parsed by Hydra's override parser and set as Hydra sets it."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    groups = tuple(o.input_line for o in parsed if "." not in o.key_or_group)
    cfg = copy.deepcopy(_compose(groups, command))
    for override in parsed:
        if "." in override.key_or_group:
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
    return cfg


def _error(overrides: Sequence[str]) -> str:
    with pytest.raises(ValueError) as info:
        validate_config(_config((SMOKE, *overrides)))
    return str(info.value)


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_a_bad_value_names_its_key_and_a_value_that_works(overrides: tuple[str, ...], key: str) -> None:
    message = _error(overrides)
    assert "\n" not in message
    assert f"{key} " in message or f"{key}=" in message, message
    advice = message.rsplit("; e.g. ", 1)
    assert len(advice) == 2 and "got " in advice[0], message
    validate_config(_config((SMOKE, *overrides, advice[1])))  # the advice works: the suggested value passes


def test_overrides_in_these_tests_set_values_as_the_cli_does() -> None:
    overrides = ["schedule=gradual", "search.targets=[3,2]", "pruner.damp=nan", "model.vocab_size=null"]
    assert OmegaConf.to_yaml(_config((SMOKE, *overrides))) == OmegaConf.to_yaml(_compose((SMOKE, *overrides)))


def test_messages_read_as_key_requirement_value_and_example() -> None:
    assert _error(("pruner.damp=-1",)) == (
        "pruner.damp must be a finite number > 0 (relative Hessian dampening), got -1.0; e.g. pruner.damp=0.01"
    )
    assert _error(("search.speedup_tolerance=1.5",)).startswith("search.speedup_tolerance must be a number in [0, 1)")
    assert "e.g. trainer.precision=16-mixed" in _error(("trainer.precision=16-true",))
    assert "got 'float8'; e.g. schedule.member_dtype=float32" in _error(("schedule.member_dtype=float8",))


def test_target_messages_keep_the_wording_sweep_reports_match() -> None:
    assert _error(("search.targets=[]",)).startswith("schedule 'oneshot' has an empty target list")
    assert _error(("search.targets=[0.5]",)).startswith("speedup targets must be finite and > 1, got [0.5]")


@pytest.mark.parametrize(
    ("targets", "schedule"),
    [([], "oneshot"), ([1.0], "oneshot"), ([0.5, 2.0], "gradual"), ([float("nan")], "oneshot"),
     ([2.0, 2.0], "oneshot"), ([3.0, 2.0], "gradual")],
)  # fmt: skip
def test_targets_are_refused(targets: list[float], schedule: str) -> None:
    with pytest.raises(ValueError, match=r"search\.targets"):
        check_schedule_targets(targets, schedule)
    check_schedule_targets([3.0, 2.0], "oneshot")  # one-shot targets need no order


def test_task_structure_is_checked_by_the_data_layers_own_rules() -> None:
    assert "takes 2 text_keys" in _error(("task=squad", "model=minilm", "task.text_keys=[question]"))
    assert "needs a label_key" in _error(("task.label_key=null",))


PRESETS = [[], *([f"experiment={p.stem}"] for p in sorted(EXPERIMENTS_DIR.glob("*.yaml")))]
OPTIONS = [[f"{g}={p.stem}"] for g in sorted(GROUP_SCHEMAS) for p in sorted((CONF_DIR / g).glob("*.yaml"))]
LONG_LM_TASKS = {"task=openwebtext", "task=wikitext103", "task=wikitext2"}  # 1024 tokens: GPT-2, not MiniLM


@pytest.mark.parametrize("overrides", PRESETS + OPTIONS, ids=lambda o: " ".join(o) or "defaults")
def test_every_preset_and_group_option_passes(overrides: list[str]) -> None:
    if overrides and overrides[0] in LONG_LM_TASKS:
        overrides = [*overrides, "model=gpt2"]
    validate_config(_compose(tuple(overrides)))


@pytest.mark.parametrize("task", sorted(LONG_LM_TASKS))
def test_model_dims_are_checked_only_for_commands_that_build_that_model(task: str) -> None:
    with pytest.raises(ValueError, match=r"task.max_seq_length must be <= model.max_position_embeddings=512"):
        validate_config(_compose((task,)))  # the default model, MiniLM, has 512 positions
    validate_config(_config((task, "checkpoint=some/member"), "eval"))  # eval scores a saved member


def test_int8_compression_needs_the_cpu_environment_only_when_compressing() -> None:
    overrides = ("compression=int8", "hardware=a100", "checkpoint=some/member")
    with pytest.raises(
        ValueError, match=r"^compression.int8=true must run on hardware cpu/eager/float32.*hardware=cpu$"
    ):
        validate_config(_config(overrides, "compress"))
    validate_config(_config((*overrides, "hardware=cpu"), "compress"))
    validate_config(_config(overrides, "run"))  # `run` does not use the compression group


# Commands the README and the presets document (sweep values expanded), each composed as written.
DOCUMENTED = [
    ("run", ("experiment=gpt2-zipgpt2", "task=wikitext103")),
    ("run", ("experiment=gpt2-mini-wiki", "pruner.method=layerdrop")),
    ("run", ("experiment=minilm-bbc-family", "schedule=gradual", "distill.epochs_per_stage=1")),
    ("run", ("model=bert-base", "task=squad", "hardware=a100", "schedule=gradual")),
    ("run", ("schedule=gradual", "search.targets=[2,3,4]")),
    ("run", ("hardware=cpu-compile",)),
    *(("run", ("experiment=minilm-bbc-baselines", f"pruner.method={m}")) for m in validate.METHODS),
    *(("run", ("experiment=bert-base-glue-gradual", f"task={t}")) for t in ("sst2", "qnli", "mnli", "qqp")),
    *(("run", ("experiment=bert-base-oneshot", f"pruner.calibration_samples={n}")) for n in (32, 4096)),
    *(("run", ("experiment=bert-base-oneshot", f"hardware={h}")) for h in ("cpu", "a100")),
    *(("run", (f"pruner.damp={d}",)) for d in (0.001, 0.01, 0.1)),
    *(("run", ("experiment=smoke", f"seed={s}", "hardware.threads=1")) for s in (0, 1, 2)),
    ("latency", ("model=bert-base", "hardware=cpu-latency")),
    ("eval", ("checkpoint=outputs/run/x/family/2x", "task=wikitext103")),
    ("compress", ("checkpoint=outputs/run/x/family/2x", "compression=obs50-int8")),
    ("export", ("checkpoint=outputs/run/x/family/2x", "export.formats=[onnx,hf]")),
    ("serve-bench", ("checkpoint=outputs/run/x/family/2x", "serve.concurrency=4", "serve.requests=200")),
    ("report", ("report.dir=outputs", "logger=none")),
    ("smoke", ()),
]


@pytest.mark.parametrize(("command", "overrides"), DOCUMENTED, ids=[f"{c} {' '.join(o)}" for c, o in DOCUMENTED])
def test_documented_commands_pass(command: str, overrides: tuple[str, ...]) -> None:
    validate_config(_config(overrides, command))


def _mirror(source: object, name: str) -> set[str]:
    if not hasattr(source, name):
        pytest.skip(f"{source} has no {name} yet")
    return set(getattr(source, name))


def test_mirrored_names_equal_their_sources() -> None:
    from ziplm.compress import compound
    from ziplm.latency import measure
    from ziplm.models import registry
    from ziplm.pipelines import export
    from ziplm.pruning import methods

    assert validate.METHODS == methods.METHODS
    assert set(validate.HARDWARE_DTYPES) == set(measure.DTYPES)
    assert validate.ENGINES == measure.ENGINES
    assert set(validate.FAMILIES) == set(registry.ADAPTERS)
    assert validate.UNSTRUCTURED == compound.UNSTRUCTURED_METHODS
    assert validate.EXPORT_FORMATS == export.FORMATS


def test_mirrored_precisions_and_member_dtypes_equal_their_sources() -> None:
    from ziplm.eval import evaluate  # EVAL_PRECISIONS lives beside the task loss
    from ziplm.models import io

    assert set(validate.PRECISIONS) == _mirror(evaluate, "EVAL_PRECISIONS")
    assert set(validate.MEMBER_DTYPES) == _mirror(io, "SAVE_DTYPES")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "", "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": "offline"}  # fmt: skip


def test_validation_is_fast_and_imports_neither_torch_nor_the_data_layer() -> None:
    """Only the plain-Python specs of the data layer are loaded (the task spec, and the retrieval-set spec whose
    folder checks validation runs); its package loads the rest lazily."""
    code = (
        "import sys, time\n"
        "from ziplm.config.paths import compose\n"
        "from ziplm.config.validate import validate_config\n"
        "cfg = compose(['experiment=smoke'])\n"
        "start = time.perf_counter()\n"
        "validate_config(cfg)\n"
        "print(time.perf_counter() - start)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'datasets', 'lightning')"
        " or (m.startswith('ziplm.data')"
        " and m not in ('ziplm.data', 'ziplm.data.spec', 'ziplm.data.retrieval_spec'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    seconds, modules = out.stdout.strip().splitlines()
    assert float(seconds) < 0.5
    assert modules == "[]"


# Representative bad values through the real CLI (each subprocess costs a few seconds of imports).
CLI_BAD = [
    ("pruner.damp=-1", "pruner.damp"),
    ("pruner.calibration_samples=0", "pruner.calibration_samples"),
    ("hardware.batch_size=0", "hardware.batch_size"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("search.speedup_tolerance=1.5", "search.speedup_tolerance"),
    ("task.max_seq_length=1", "task.max_seq_length"),
    ("schedule.member_dtype=float8", "schedule.member_dtype"),
    ("trainer.precision=16-true", "trainer.precision"),
]


@pytest.mark.parametrize(("override", "key"), CLI_BAD, ids=[o for o, _ in CLI_BAD])
def test_cli_fails_in_seconds_with_one_line_and_does_nothing(tmp_path: Path, override: str, key: str) -> None:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "ziplm", "run", SMOKE, override, f"output_root={tmp_path}"],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: ValueError: {key} must be"), result.stderr
    assert "Traceback" not in result.stderr
    assert seconds < 20, f"took {seconds:.1f} s"
    # Hydra made the run folder (config + log) before dispatch; nothing else was written or cached.
    (run_dir,) = (tmp_path / "run" / "smoke").iterdir()
    assert {p.name for p in run_dir.iterdir()} <= {".hydra", "ziplm.log"}
    assert {p.name for p in tmp_path.iterdir()} == {"run"}  # no cache/: no teacher, latency table, tokenizer


@pytest.mark.parametrize(("overrides", "key"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_every_bad_value_fails_on_the_cli_with_one_line(tmp_path: Path, overrides: tuple[str, ...], key: str) -> None:
    """Each bad value above, through the real CLI: exit 1, one `error:` line naming the key, nothing written."""
    result = subprocess.run(
        [sys.executable, "-m", "ziplm", "run", SMOKE, *overrides, f"output_root={tmp_path}"],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ValueError: ") and key in lines[0], lines[0]
    assert not (tmp_path / "cache").exists()


def test_cli_validates_each_sweep_job_and_the_sweep_goes_on(tmp_path: Path) -> None:
    args = ["run", "-m", SMOKE, "pruner.damp=-1,0", f"output_root={tmp_path}"]
    result = subprocess.run(
        [sys.executable, "-m", "ziplm", *args], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "ziplm: 2 of 2 sweep jobs failed" in result.stderr
    (sweep,) = (tmp_path / "multirun" / "smoke").iterdir()
    for job, value in (("0", "-1.0"), ("1", "0.0")):
        failed = (sweep / job / "FAILED").read_text()
        assert failed.startswith(
            f"ValueError: pruner.damp must be a finite number > 0 (relative Hessian dampening), got {value}"
        )
    assert not (tmp_path / "cache").exists()
