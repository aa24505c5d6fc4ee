"""``ziplm eval checkpoint=<folder> eval=lm-eval eval.tasks=[…]``: a member (or any causal LM) through
EleutherAI's lm-evaluation-harness (``ziplm.eval.harness``), one process.

Order: everything that can be wrong is asked before the model is read: lm_eval installed, include_path
folders, every task name (lm_eval's index), a causal-LM head (the member manifest or the HF config).
"""

from __future__ import annotations

import json

from omegaconf import DictConfig
from rich.console import Console

from ziplm.commands import INVOCATION
from ziplm.data.builtin import train_texts
from ziplm.data.spec import TaskSpec
from ziplm.eval import harness
from ziplm.models import build_tokenizer, count_parameters
from ziplm.models.build import from_source
from ziplm.models.checkpoint import check_checkpoint, load_checkpoint
from ziplm.pipelines.common import model_spec, to_dict
from ziplm.pipelines.outputs import run_dir
from ziplm.pipelines.placement import eval_precision, run_device
from ziplm.report.provenance import write_provenance


def run_lm_eval(cfg: DictConfig) -> None:
    """Score `checkpoint` on lm-eval tasks; writes ``eval.json`` (and the generated task, samples) in the run folder."""
    source = str(cfg.checkpoint)
    settings = harness.HarnessSettings.from_mapping(to_dict(cfg.eval))
    harness.require_lm_eval()
    check_checkpoint(source, "lm", None)  # a causal LM, asked of its config / manifest: no weights read yet
    out = run_dir(cfg)
    include, ziplm_task = list(settings.include_path), None
    task = TaskSpec.from_mapping(to_dict(cfg.task))
    if harness.ZIPLM_TASK in settings.tasks:  # its YAML now (the index must see it), its documents once checked
        data = harness.write_ziplm_task(out / harness.TASKS_FOLDER, task)
        include.append(str(data.parent))
    manager = harness.task_manager(include, settings.tasks)
    harness.check_tasks(manager, settings.tasks)
    if harness.ZIPLM_TASK in settings.tasks:
        documents = harness.ziplm_task_documents(task, seed=int(cfg.seed))
        harness.write_documents(data, documents)
        ziplm_task = {"task": task.name, "split": task.eval_split, "documents": len(documents)}

    trainer = to_dict(cfg.trainer)
    device, precision = run_device(trainer), eval_precision(trainer)
    checkpoint = load_checkpoint(source, "lm", None, device)
    if checkpoint.has_tokenizer:
        import transformers

        tokenizer = from_source(transformers.AutoTokenizer.from_pretrained, source, "tokenizer", "checkpoint")
    else:
        tokenizer = build_tokenizer(model_spec(cfg), cache_dir=str(cfg.cache_dir), corpus=train_texts)
    lm = harness.wrap_model(checkpoint.model, tokenizer, settings)
    results = harness.run_harness(lm, manager, settings, precision, device)

    record = {
        "checkpoint": source,
        "kind": "ziplm member" if checkpoint.is_member else "plain checkpoint",
        "harness": "lm-evaluation-harness",
        "tasks": list(settings.tasks),
        "settings": {
            "num_fewshot": settings.num_fewshot,
            "limit": settings.limit,
            "batch_size": settings.batch_size,
            "max_length": int(lm.max_length),
            "seed": settings.seed,
            "include_path": include,
        },
        "ziplm_task": ziplm_task,
        "parameters": count_parameters(checkpoint.model),
        "eval_precision": precision,
        "device": str(device),
        **harness.summarize(results),
    }
    if settings.log_samples:
        record["samples"] = [str(p) for p in harness.write_samples(out / harness.SAMPLES_FOLDER, results)]
    record["provenance"] = write_provenance(out, INVOCATION or ["eval", "(from Python)"])
    (out / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    console = Console()
    console.print(harness.results_table(results), markup=False, highlight=False)
    console.print(f"eval.json: {out / 'eval.json'}", markup=False, highlight=False)
