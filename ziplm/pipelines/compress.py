"""``ziplm compress checkpoint=<member> compression=<name>``: unstructured sparsity and/or INT8 on a member.

Loads a saved family member, compresses a copy (``ziplm.compress``), evaluates both on the task and times
both interleaved in the configured hardware environment, prints a table and writes ``compression.json``
plus the compressed weights into the run folder:

* unstructured only: a normal member folder ``model/`` (``ziplm.models.load_pruned`` reads it);
* with INT8: ``model_int8.pt``, ``torch.save`` of the quantized state dict (quantized modules have no
  safetensors / ``from_pretrained`` form); reload with ``ziplm.compress.load_int8(load_pruned(<member>), path)``.

Unstructured zeros do not make PyTorch's dense CPU kernels faster; expect a speedup from INT8 only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from ziplm.compress import CompressionSettings, compress, sparsity_report
from ziplm.data.builtin import train_texts
from ziplm.data.calibration import calibration_batches
from ziplm.data.features import build_features
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec
from ziplm.eval.metrics import METRICS
from ziplm.latency.measure import Environment, interleaved_medians
from ziplm.lit.phases import evaluate
from ziplm.models import build_tokenizer, count_parameters, load_pruned, save_pruned
from ziplm.models.adapter import current_structure
from ziplm.models.io import WEIGHTS
from ziplm.models.registry import adapter_for
from ziplm.pipelines.common import environment, member_folder, model_spec, to_dict
from ziplm.pipelines.outputs import run_dir

console = Console()
RECORD = "compression.json"
INT8_WEIGHTS = "model_int8.pt"


def compression_settings(cfg: DictConfig) -> tuple[str, CompressionSettings, int]:
    """(name, settings, calibration samples) of the ``compression`` group, validated."""
    c = to_dict(cfg.compression)
    settings = CompressionSettings(
        unstructured=str(c["unstructured"]), sparsity=float(c["sparsity"]), int8=bool(c["int8"]), damp=float(c["damp"])
    )
    samples = int(c["calibration_samples"])
    if settings.prunes and settings.unstructured == "obs" and samples < 1:
        raise ValueError(f"unstructured OBS needs compression.calibration_samples >= 1, got {samples}")
    return str(c["name"]), settings, samples


def _check_environment(env: Environment, settings: CompressionSettings) -> None:
    env.validate()
    if settings.int8 and (env.device != "cpu" or env.engine != "eager" or env.dtype != "float32"):
        raise ValueError(
            "INT8 dynamic quantization runs in PyTorch eager mode on CPU with float32 activations; "
            f"the hardware profile asks for {env.device} / {env.engine} / {env.dtype}: use hardware=cpu"
        )


def _tokenizer(cfg: DictConfig, folder: Path) -> Any:
    if (folder / "tokenizer_config.json").is_file():
        import transformers

        return transformers.AutoTokenizer.from_pretrained(folder)
    return build_tokenizer(model_spec(cfg), corpus=train_texts)


def _save(compressed: Any, settings: CompressionSettings, out: Path, tokenizer: Any) -> Path | None:
    if settings.int8:
        torch.save(compressed.state_dict(), out / INT8_WEIGHTS)
        return out / INT8_WEIGHTS
    if settings.prunes:
        structure = current_structure(compressed, adapter_for(compressed).dims(compressed))
        return save_pruned(compressed, structure, out / "model", tokenizer=tokenizer) / WEIGHTS
    return None  # nothing changed: the member's own weights


def run_compress(cfg: DictConfig) -> None:
    """Compress a member, evaluate and time it against the member, save it with ``compression.json``."""
    folder = member_folder(cfg.get("checkpoint"), "compress")
    name, settings, samples = compression_settings(cfg)
    env = environment(cfg)
    _check_environment(env, settings)
    task = TaskSpec.from_mapping(to_dict(cfg.task))
    member = load_pruned(folder)
    tokenizer = _tokenizer(cfg, folder)
    splits = load_splits(task, seed=int(cfg.seed))
    batches: list[dict[str, torch.Tensor]] = []
    if settings.prunes and settings.unstructured == "obs":
        train = build_features(splits[task.train_split], tokenizer, task, train=True)
        batches = calibration_batches(train, samples, 32, int(cfg.seed))
    started = time.perf_counter()
    compressed = compress(member, batches, settings)
    seconds = time.perf_counter() - started
    examples = splits[task.eval_split]
    features = build_features(examples, tokenizer, task, train=False)
    batch_size = int(cfg.trainer.eval_batch_size)
    on_cpu = {"accelerator": "cpu", "devices": 1}  # INT8 kernels are CPU kernels; both models are scored there
    metrics = [evaluate(m, task, examples, features, on_cpu, batch_size) for m in (member, compressed)]
    times = interleaved_medians([member, compressed], env, max(2, int(cfg.search.speedup_rounds)))
    out = run_dir(cfg)
    weights = _save(compressed, settings, out, tokenizer)
    headline = METRICS[task.metric].headline
    record = {
        "compression": name,
        "checkpoint": str(folder),
        "task": task.name,
        "settings": settings.to_dict(),
        "calibration_samples": sum(len(b["input_ids"]) for b in batches),
        "compress_seconds": seconds,
        "environment": asdict(env),
        "member": {"parameters": count_parameters(member), "seconds": times[0], **metrics[0]},
        "compressed": {"seconds": times[1], **metrics[1], "weights": str(weights) if weights else None},
        "speedup": times[0] / times[1],
        "metric": headline,
        "sparsity": sparsity_report(compressed).to_dict(),
        "note": "unstructured zeros give no speedup with PyTorch's dense CPU kernels; INT8 dynamic quantization does",
    }
    (out / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    _print(record, env)
    console.print(f"[green]done[/green] — {out / RECORD}")


def _print(record: dict[str, Any], env: Environment) -> None:
    metric = record["metric"]
    table = Table(title=f"compression {record['compression']!r} of {record['checkpoint']} ({record['task']})")
    for column in ("model", metric, f"ms (batch {env.batch_size} × {env.seq_length})", "speedup", "zeros"):
        table.add_column(column, justify="right")
    member, compressed = record["member"], record["compressed"]
    table.add_row("member", f"{member[metric]:.2f}", f"{member['seconds'] * 1e3:.1f}", "1.00", "")
    table.add_row(
        record["compression"],
        f"{compressed[metric]:.2f}",
        f"{compressed['seconds'] * 1e3:.1f}",
        f"{record['speedup']:.2f}",
        f"{record['sparsity']['overall']:.1%}",
    )
    console.print(table)
