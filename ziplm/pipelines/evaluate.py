"""``ziplm eval checkpoint=<folder> task=…``: evaluate a saved family member (or any HF folder) on a task."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console

from ziplm.data.builtin import train_texts
from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec
from ziplm.lit.distributed import finish_ranks, is_main
from ziplm.lit.phases import evaluate
from ziplm.models import build_tokenizer, count_parameters, load_pruned
from ziplm.models.io import MANIFEST
from ziplm.pipelines.common import model_spec, to_dict
from ziplm.pipelines.outputs import run_dir
from ziplm.pipelines.placement import eval_precision, run_device
from ziplm.pipelines.ranks import start_ranks


def run_evaluate(cfg: DictConfig) -> None:
    """Load `checkpoint` offline and report the task metric on every evaluation split."""
    if not cfg.get("checkpoint"):
        raise ValueError("ziplm eval needs checkpoint=<folder of a saved member, e.g. outputs/run/.../family/2x>")
    folder = Path(str(cfg.checkpoint))
    if not (folder / MANIFEST).is_file():
        raise ValueError(f"{folder} is not a ziplm model folder (no {MANIFEST}); pass a family member folder")
    trainer = to_dict(cfg.trainer)
    out = run_dir(cfg)
    start_ranks(trainer, out)  # `trainer=ddp-cpu` etc.: every process scores its share of each split
    device, precision = run_device(trainer), eval_precision(trainer)
    model = load_pruned(folder, device=str(device), dtype="float32")  # scored as `ziplm run` scored it
    task = TaskSpec.from_mapping(to_dict(cfg.task))
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    tokenizer = (
        None if has_tokenizer else build_tokenizer(model_spec(cfg), cache_dir=str(cfg.cache_dir), corpus=train_texts)
    )
    if tokenizer is None:
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    splits = load_splits(task, seed=int(cfg.seed))
    results: dict[str, dict[str, float]] = {}
    for split in task.eval_splits:
        examples = splits[split]
        features = build_features(examples, tokenizer, task, train=False)
        results[split] = evaluate(model, task, examples, features, trainer, int(cfg.trainer.eval_batch_size), precision)
    record = {
        "checkpoint": str(folder),
        "task": task.name,
        "parameters": count_parameters(model),
        "eval_precision": precision,
        "device": str(device),
        "results": results,
    }
    if is_main():
        (out / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
        Console().print_json(json.dumps(record))
    finish_ranks()
