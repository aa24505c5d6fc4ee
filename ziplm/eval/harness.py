"""EleutherAI's lm-evaluation-harness on an in-memory model: ``ziplm eval checkpoint=… eval=lm-eval``.

Why through lm_eval's Python API rather than its CLI (``lm-eval --model hf --model_args pretrained=<dir>``):
a pruned member is not a stock Hugging Face folder (removed sublayers and uneven KV groups have no config
form; see ``ziplm.models.io``), so transformers' ``from_pretrained`` cannot rebuild it. ziplm loads the
member itself and hands the module to lm_eval's ``HFLM``, which accepts an ``nn.Module`` as ``pretrained``;
every request (loglikelihood, rolling loglikelihood, generation) then runs lm_eval's own code on it, so the
numbers are the ones lm_eval reports for any other model.

Offline: ``ziplm_task`` (`ZIPLM_TASK`) is the configured ziplm LM task's evaluation text (``task=wiki-excerpt``
ships in gensim's test data) written at run time as an lm_eval ``loglikelihood_rolling`` task (word and byte
perplexity, bits per byte); any other local task is a YAML in a folder passed as ``include_path``.

This module imports lm_eval only inside its functions: the rest of ziplm never needs it installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib.util
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ziplm.data.spec import TaskSpec
from ziplm.eval.evaluate import precision_context

ZIPLM_TASK = "ziplm_task"
TASKS_FOLDER = "lm_eval_tasks"  # <run dir>/lm_eval_tasks/: the generated ziplm_task YAML and its documents
SAMPLES_FOLDER = "lm_eval_samples"  # <run dir>/lm_eval_samples/<task>.jsonl with eval.log_samples=true
# lm_eval's metrics of a rolling-loglikelihood task and their aggregations (as its `wikitext` task scores).
ROLLING_METRICS = {
    "word_perplexity": "weighted_perplexity",
    "byte_perplexity": "weighted_perplexity",
    "bits_per_byte": "bits_per_byte",
}
INSTALL = "pip install 'ziplm[lmeval]' (or pip install 'lm_eval>=0.4.8' accelerate)"
# lm_eval's defaults for simple_evaluate's random / numpy / torch / few-shot seeds (kept when eval.seed=null,
# so few-shot draws match other lm_eval runs of the same task).
DEFAULT_SEEDS = {"random_seed": 0, "numpy_random_seed": 1234, "torch_random_seed": 1234, "fewshot_random_seed": 1234}


@dataclasses.dataclass(frozen=True)
class HarnessSettings:
    """The ``eval`` group for lm-eval (see ``conf/eval/lm-eval.yaml``): lm_eval's simple_evaluate arguments."""

    tasks: Sequence[str]
    include_path: Sequence[str] = ()
    num_fewshot: int | None = None
    limit: int | None = None
    batch_size: int = 8
    max_length: int | None = None
    seed: int | None = None
    log_samples: bool = False

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> HarnessSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in fields}
        paths = kept.get("include_path")
        kept["include_path"] = tuple([paths] if isinstance(paths, str) else paths or ())
        kept["tasks"] = tuple(kept.get("tasks") or ())
        return cls(**kept)


def require_lm_eval() -> None:
    """ImportError (the CLI prints it as one line) naming the install command when lm_eval cannot run."""
    missing = [name for name in ("lm_eval", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"eval=lm-eval needs {' and '.join(missing)}, not installed: {INSTALL}")


def task_manager(include_path: Sequence[str], tasks: Sequence[str] = ()) -> Any:
    """lm_eval's task index over its packaged tasks plus every YAML under `include_path`.

    Indexing the packaged tasks (thousands of YAML files) takes seconds; when every name in `tasks` is a
    plain task of `include_path` (local tasks, ``ziplm_task``) the index of those folders alone serves, as a
    local task overrides a packaged one of the same name anyway. Groups and tags may name packaged tasks, so
    they always get the full index. Raises FileNotFoundError for a folder that does not exist.
    """
    for path in include_path:
        if not Path(path).expanduser().is_dir():
            raise FileNotFoundError(f"eval.include_path: {path} is not a folder (of lm-eval task YAMLs)")
    from lm_eval.tasks import TaskManager

    paths = [str(Path(p).expanduser()) for p in include_path]
    if paths and tasks:
        local = TaskManager(include_path=paths, include_defaults=False)
        if set(tasks) <= set(local.all_subtasks):
            return local
    return TaskManager(include_path=paths or None)


def _list_command() -> str:
    """How this lm_eval version lists its tasks (``lm-eval ls tasks`` since its CLI got subcommands)."""
    return "lm-eval ls tasks" if importlib.util.find_spec("lm_eval._cli.ls") else "lm_eval --tasks list"


def check_tasks(manager: Any, tasks: Sequence[str]) -> None:
    """Every name must be an lm_eval task, group or tag, or a task YAML file: checked on the index before
    the model is loaded, so a typo costs seconds, not a model load. Raises ValueError with close matches."""
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known and not (t.endswith((".yaml", ".yml")) and Path(t).is_file())]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hints.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    raise ValueError(
        f"eval.tasks: unknown lm-eval task {', '.join(hints)}; list the tasks with `{_list_command()}`, "
        f"add a folder of task YAMLs with eval.include_path=<dir>, or use {ZIPLM_TASK} (the configured LM task)"
    )


def ziplm_task_documents(task: TaskSpec, seed: int = 0) -> list[str]:
    """The rows of `task`'s evaluation split (``task.max_eval_samples`` of them when set), blank ones dropped:
    one document each (an article of wiki-excerpt, a line of line-level WikiText).

    Only that split is read: the spec is narrowed to it (a Hub task's train split is never downloaded).
    """
    from ziplm.data.sources import load_splits

    only = dataclasses.replace(
        task, train_split=task.eval_split, extra_eval_splits=(), max_train_samples=task.max_eval_samples
    )
    rows = load_splits(only, seed=seed)[task.eval_split][task.text_keys[0]]
    documents = [str(text) for text in rows if text and not str(text).isspace()]
    if not documents:
        raise ValueError(f"{ZIPLM_TASK}: split {task.eval_split!r} of task {task.name!r} has no text")
    return documents


def write_ziplm_task(folder: Path, task: TaskSpec) -> Path:
    """Write the `ZIPLM_TASK` YAML into `folder` (added to the include path); returns the JSON-lines file its
    documents go to (`write_documents`). Scored like lm_eval's own ``wikitext`` task: rolling loglikelihood
    over disjoint windows of the model's context (``eval.max_length``), word and byte perplexity, bits per byte.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = (folder / f"{ZIPLM_TASK}.jsonl").resolve()
    config = {
        "task": ZIPLM_TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [
            {"metric": name, "aggregation": aggregation, "higher_is_better": False}
            for name, aggregation in ROLLING_METRICS.items()
        ],
        "metadata": {"version": 1.0, "ziplm_task": task.name, "split": task.eval_split},
    }
    # JSON is valid YAML: no YAML writer needed, and the file reads back exactly as written.
    (folder / f"{ZIPLM_TASK}.yaml").write_text(json.dumps(config, indent=2) + "\n")
    return data


def write_documents(path: Path, documents: Sequence[str]) -> None:
    """One ``{"text": ...}`` JSON line per document: the rows `ZIPLM_TASK` scores."""
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in documents))


@contextlib.contextmanager
def _quiet_hflm() -> Iterator[None]:
    """HFLM warns that a model passed as an object skips its own loading and multi-GPU setup: that is the
    point here (ziplm loads the member), so those two warnings are silenced while it is built."""
    logger = logging.getLogger("lm_eval.models.huggingface")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def wrap_model(model: nn.Module, tokenizer: Any, settings: HarnessSettings) -> Any:
    """lm_eval's ``HFLM`` around an already-loaded causal LM (any ziplm member or HF model) and its tokenizer.

    The model stays where it is (device, dtype); HFLM reads the device from it, pads with the tokenizer's
    pad token (or unk/eos) and takes its context length from ``max_length`` or the model config.
    """
    from lm_eval.models.huggingface import HFLM

    with _quiet_hflm():
        return HFLM(
            pretrained=model, tokenizer=tokenizer, batch_size=settings.batch_size, max_length=settings.max_length
        )


def run_harness(
    lm: Any, manager: Any, settings: HarnessSettings, precision: str, device: torch.device
) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` on `lm` with the settings; `precision` (Lightning's names, like every ziplm
    evaluation) autocasts the forward passes. Returns lm_eval's result dict."""
    from lm_eval import simple_evaluate

    seeds = DEFAULT_SEEDS if settings.seed is None else dict.fromkeys(DEFAULT_SEEDS, settings.seed)
    try:
        with precision_context(precision, device), torch.no_grad():
            results = simple_evaluate(
                model=lm,
                tasks=list(settings.tasks),
                num_fewshot=settings.num_fewshot,
                limit=settings.limit,
                task_manager=manager,
                log_samples=settings.log_samples,
                **seeds,
            )
    except OSError as err:  # a packaged task's Hub dataset: offline, not cached, or not found
        raise _data_error(err) from err
    if results is None:  # only non-zero ranks of a distributed lm_eval run get None; ziplm runs one process
        raise RuntimeError("lm_eval returned no results")
    return dict(results)


def _data_error(err: OSError) -> FileNotFoundError:
    """lm_eval fetches a packaged task's data with ``datasets`` when it builds the task: one line saying why it
    failed and how to score offline instead (what ``ziplm.data.sources`` says for a ziplm task's data)."""
    from ziplm.data.sources import hub_failure  # imports datasets: only on this error path

    reason, problem = hub_failure(err, "cannot be loaded")
    return FileNotFoundError(
        f"eval.tasks: the data of an lm-eval task {problem} ({reason}); run it once online to cache it, or score "
        f"tasks on local files: eval.include_path=<local folder> of task YAMLs, or eval.tasks=[{ZIPLM_TASK}]"
    )


def _plain(value: Any) -> Any:
    """lm_eval's results as JSON: NaN/inf (an undefined stderr) become null, unknown objects their text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, str | int | bool) else str(value)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The parts of lm_eval's result dict a record keeps: per-task metrics (lm_eval's ``metric,filter`` keys,
    so numbers compare with any lm_eval run), groups, n-shot, task versions, document counts, lm_eval version.
    """
    from lm_eval import __version__ as lm_eval_version

    keys = ("results", "groups", "group_subtasks", "n-shot", "versions", "n-samples", "higher_is_better")
    record = {key: _plain(results[key]) for key in keys if key in results}
    record["lm_eval_version"] = str(results.get("lm_eval_version") or lm_eval_version)
    return record


def results_table(results: dict[str, Any]) -> str:
    """lm_eval's own markdown table (task, version, filter, n-shot, metric, value, stderr), groups below."""
    from lm_eval.utils import make_table

    table = str(make_table(results))
    return table + ("\n" + str(make_table(results, "groups")) if results.get("groups") else "")


def write_samples(folder: Path, results: dict[str, Any]) -> list[Path]:
    """Every logged request per task (arguments, loglikelihoods or generations, target, per-document metrics)
    as JSON lines, like lm_eval's ``--log_samples``."""
    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for task, samples in (results.get("samples") or {}).items():
        path = folder / f"{task}.jsonl"
        path.write_text("".join(json.dumps(_plain(sample)) + "\n" for sample in samples))
        written.append(path)
    return written
