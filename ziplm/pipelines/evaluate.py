"""``ziplm eval checkpoint=<folder> task=…``: evaluate a saved family member (or any HF folder) on a task.

``eval=lm-eval`` scores it on lm-evaluation-harness tasks instead (``ziplm.pipelines.evaluate_harness``).
"""

from __future__ import annotations

import json

from omegaconf import DictConfig
from rich.console import Console

from ziplm.commands import INVOCATION
from ziplm.data.builtin import train_texts
from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec
from ziplm.lit.distributed import finish_ranks, is_main, on_main
from ziplm.lit.phases import evaluate
from ziplm.models import build_tokenizer, count_parameters
from ziplm.models.build import from_source
from ziplm.models.checkpoint import load_checkpoint
from ziplm.pipelines.common import model_spec, to_dict
from ziplm.pipelines.embedding import checkpoint_scores
from ziplm.pipelines.outputs import run_dir
from ziplm.pipelines.placement import eval_precision, run_device
from ziplm.pipelines.ranks import start_ranks
from ziplm.pipelines.retrieval import retrieval_scores
from ziplm.report.provenance import write_provenance


def run_evaluate(cfg: DictConfig) -> None:
    """Score `checkpoint` (a family member, a plain HF folder or a Hub id) on every evaluation split."""
    if not cfg.get("checkpoint"):
        raise ValueError(
            "ziplm eval needs checkpoint=<a family member folder (outputs/run/.../family/2x), a fine-tuned HF "
            "folder or a Hub id>"
        )
    if cfg.eval.name == "lm-eval":  # lm-evaluation-harness tasks instead of the ziplm task
        from ziplm.pipelines.evaluate_harness import run_lm_eval

        return run_lm_eval(cfg)
    source = str(cfg.checkpoint)
    trainer = to_dict(cfg.trainer)
    task = TaskSpec.from_mapping(to_dict(cfg.task))
    out = run_dir(cfg)
    start_ranks(trainer, out)  # `trainer=ddp-cpu` etc.: every process scores its share of each split
    device, precision = run_device(trainer), eval_precision(trainer)
    # Scored in float32 as `ziplm run` scores members; a plain checkpoint's head is checked against the task.
    checkpoint = load_checkpoint(source, task.kind, task.num_labels, device)
    model = checkpoint.model
    if checkpoint.has_tokenizer:
        import transformers

        tokenizer = from_source(transformers.AutoTokenizer.from_pretrained, source, "tokenizer", "checkpoint")
    else:
        tokenizer = build_tokenizer(model_spec(cfg), cache_dir=str(cfg.cache_dir), corpus=train_texts)
    splits = load_splits(task, seed=int(cfg.seed))
    results: dict[str, dict[str, float]] = {}
    batch = int(cfg.trainer.eval_batch_size)
    if task.kind == "embedding":  # label-free: fidelity to the dense model; no Lightning phase: rank 0 scores
        fallback = model_spec(cfg)
        results = on_main(lambda: checkpoint_scores(source, model, task, splits, tokenizer, fallback, batch, precision))
        if task.retrieval is not None:  # the member's retrieval scores, next to its headline split's fidelity
            results[task.eval_split] |= on_main(
                lambda: retrieval_scores(source, model, task, tokenizer, batch, precision)
            )
    for split in [] if task.kind == "embedding" else task.eval_splits:
        examples = splits[split]
        features = build_features(examples, tokenizer, task, train=False)
        results[split] = evaluate(model, task, examples, features, trainer, int(cfg.trainer.eval_batch_size), precision)
    record = {
        "checkpoint": source,
        "kind": "ziplm member" if checkpoint.is_member else "plain checkpoint",
        "task": task.name,
        "parameters": count_parameters(model),
        "eval_precision": precision,
        "device": str(device),
        "results": results,
    }
    if is_main():
        record["provenance"] = write_provenance(out, INVOCATION or ["eval", "(from Python)"])
        (out / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
        Console().print_json(json.dumps(record))
    finish_ranks()
