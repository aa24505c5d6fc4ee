"""Distillation recipes for a pruned sentence embedder, side by side: the same one-shot member, the same
paragraphs in the same order, one variant per row, fidelity to the dense model on the held-out paragraphs.

Why: the embedding preset's recipe (learning rate, dropout, loss weights, steps) was chosen with this, and
its README claims come from it. The member is a one-shot ZipLM member of the packaged MiniLM (make one with
``ziplm run experiment=minilm-embedding-family schedule=oneshot distill.epochs_per_stage=0``); each variant
starts from a fresh copy of it and trains with the run's own losses (pooled-embedding cosine + MSE, token
loss) in a plain loop (AdamW, 10% warm-up then linear decay, padding trimmed per batch).

    python benchmarks/embedding_recipe.py <run>/family/1.5x                       # the preset's sweep, 128 steps
    python benchmarks/embedding_recipe.py <member> --steps 512 --eval-every 128 --variants lr=3e-4,dropout=0
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch

from ziplm.config.paths import compose
from ziplm.config.settings import RunSettings
from ziplm.core.distill import paired_hidden_states, set_dropout, token_distillation_loss
from ziplm.core.embedding import embedding_distillation_loss, pool
from ziplm.core.padding import trim_padding
from ziplm.data.embedding import embedding_features
from ziplm.data.sources import load_splits
from ziplm.eval.embedding import fidelity
from ziplm.models.build import build_model, build_tokenizer, packaged_minilm_path
from ziplm.models.checkpoint import load_checkpoint
from ziplm.models.pooling import read_pooling

DEFAULT_VARIANTS = [
    "lr=1e-4",
    "lr=1e-3",
    "lr=3e-4",
    "lr=3e-4,dropout=0",
    "lr=3e-4,dropout=0,token=0",
    "lr=3e-4,dropout=0,logit=10",
]
KNOBS = {"lr": 1e-4, "dropout": -1.0, "logit": 1.0, "token": 1.0}  # dropout -1 = the model's own


def parse(variant: str) -> dict[str, float]:
    """``lr=3e-4,dropout=0`` -> the knobs, the others at their defaults."""
    knobs = dict(KNOBS)
    for part in filter(None, variant.split(",")):
        key, _, value = part.partition("=")
        if key not in KNOBS:
            raise SystemExit(f"unknown knob {key!r} in {variant!r}; known: {sorted(KNOBS)}")
        knobs[key] = float(value)
    return knobs


def encode(model: torch.nn.Module, features, pooling) -> torch.Tensor:
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(features), 64):
            batch = trim_padding(features[i : i + 64])
            out.append(pool(model(**batch).last_hidden_state, batch["attention_mask"], pooling))
    return torch.cat(out)


def train(student, dense, features, order, knobs, steps, batch_size, pooling, probe) -> list[str]:
    """Distill `student` in place for `steps` batches of `order`; returns the progress lines."""
    if knobs["dropout"] >= 0:
        set_dropout(student, knobs["dropout"])
    optimizer = torch.optim.AdamW(student.parameters(), lr=knobs["lr"], weight_decay=0.0)
    warmup = int(0.1 * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup))
    )
    lines = []
    student.train()
    for step in range(steps):
        batch = trim_padding(features[order[step * batch_size : (step + 1) * batch_size].tolist()])
        mask = batch["attention_mask"]
        out = student(**batch, output_hidden_states=True)
        with torch.no_grad():
            ref = dense(**batch, output_hidden_states=True)
        loss = knobs["logit"] * embedding_distillation_loss(
            pool(out.last_hidden_state, mask, pooling), pool(ref.last_hidden_state, mask, pooling)
        )
        if knobs["token"]:
            pair = paired_hidden_states(out.hidden_states[1:], ref.hidden_states[1:], None)
            loss = loss + knobs["token"] * token_distillation_loss(*pair, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if probe and (step + 1) % probe[0] == 0 and step + 1 < steps:
            lines.append(f"  after {step + 1} steps: mean cosine {probe[1](student)['mean_cosine']:.4f}")
            student.train()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("member", help="a one-shot member folder of the packaged MiniLM (embed-bbc run)")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train", type=int, default=4096, help="training paragraphs (task.max_train_samples)")
    parser.add_argument("--eval-every", type=int, default=0, help="also score every N steps (0 = at the end)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS)
    args = parser.parse_args()
    variants = [(v, parse(v)) for v in args.variants]
    torch.manual_seed(0)
    settings = RunSettings.from_config(
        compose(["experiment=minilm-embedding-family", f"task.max_train_samples={args.train}"])
    )
    splits = load_splits(settings.task, seed=settings.seed)
    tokenizer = build_tokenizer(settings.model)
    train_split, heldout_split = list(splits)[:2]
    features = embedding_features(splits[train_split], tokenizer, ["text"], settings.task.max_seq_length)
    heldout = embedding_features(splits[heldout_split], tokenizer, ["text"], settings.task.max_seq_length)
    pooling, _ = read_pooling(packaged_minilm_path())
    dense = build_model(settings.model, "base").eval()
    start = load_checkpoint(args.member, "embedding", None, "cpu").model
    start = getattr(start, "base_model", start)
    reference = encode(dense, heldout, pooling)

    def score(model: torch.nn.Module) -> dict[str, float]:
        return fidelity(encode(model, heldout, pooling), reference)

    generator = torch.Generator().manual_seed(0)
    epochs = math.ceil(args.steps * args.batch_size / len(features)) + 1
    order = torch.cat([torch.randperm(len(features), generator=generator) for _ in range(epochs)])
    rows = [("one-shot (no distillation)", score(start), 0.0)]
    print(f"member {args.member}: {args.steps} steps of {args.batch_size} from {len(features)} paragraphs")
    print(f"{rows[0][0]}: {json.dumps({k: round(v, 4) for k, v in rows[0][1].items()})}", flush=True)
    for name, knobs in variants:
        student = copy.deepcopy(start)
        began = time.perf_counter()
        probe = (args.eval_every, score) if args.eval_every else None
        lines = train(student, dense, features, order, knobs, args.steps, args.batch_size, pooling, probe)
        seconds = time.perf_counter() - began
        rows.append((name, score(student), seconds))
        print(f"{name}: {json.dumps({k: round(v, 4) for k, v in rows[-1][1].items()})} ({seconds:.0f} s)")
        print("\n".join(lines), flush=True)
    print("\n| recipe | mean cosine | pairwise Spearman | NN top-1 | NN top-10 | train s |\n|---|---|---|---|---|---|")
    for name, m, seconds in rows:
        cells = " | ".join(f"{m[k]:.4f}" for k in ("mean_cosine", "pairwise_spearman", "nn_top1", "nn_top10"))
        print(f"| {name} | {cells} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
