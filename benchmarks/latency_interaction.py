"""Is the additive latency model additive? Attention cost next to a dense vs a small FFN, on this machine.

The latency table measures attention levels in models whose FFNs are dense (and FFN levels next to
dense attention). Search-chosen members at high targets shrink both. This script times, interleaved
with the dense model and summarised as medians of per-round ratios (see `ziplm.latency.measure`):

- a mixed structure like a 3× member, with its last layer's attention at 0, 1 and 2 heads,
- uniform models with every layer at 0, 1 and 2 heads and dense FFNs (what the table anchors see),

and prints what one layer's attention costs in each context, as a fraction of the dense time.

    python benchmarks/latency_interaction.py                 # MiniLM, batch 32 × seq 128
    python benchmarks/latency_interaction.py --batch 1 --rounds 30
"""

from __future__ import annotations

import argparse

import torch

from ziplm.latency.anchors import mixed_model
from ziplm.latency.measure import Environment, interleaved_samples, relative_to_first
from ziplm.models import ModelSpec, build_model

# Per layer (kept heads, kept neurons) of a 3× MiniLM member chosen by SPDY on BBC News (this session's sweep).
MEMBER = [(10, 151), (11, 482), (8, 151), (4, 482), (4, 285), (1, 151)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    model = build_model(ModelSpec(name="minilm", family="bert", source="packaged:minilm"), "base").eval()
    layers = len(MEMBER)
    last = MEMBER[-1][1]
    variants = {
        "dense": [(12, 1536)] * layers,
        **{f"member, last attention {h} heads": [*MEMBER[:-1], (h, last)] for h in (0, 1, 2)},
        **{f"uniform {h} heads, dense FFN": [(h, 1536)] * layers for h in (0, 1, 2)},
    }
    env = Environment(batch_size=args.batch, seq_length=128, warmup=2, max_seconds_per_entry=20.0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch} × seq 128, fp32 eager")
    relative = dict(zip(variants, relative_to_first(interleaved_samples(
        [mixed_model(model, c) for c in variants.values()], env, args.rounds)), strict=True))  # fmt: skip
    for name, rel in relative.items():
        print(f"{name:<34} time / dense {rel:.4f}")
    print("\none layer's attention, as a fraction of the dense model's time:")
    for heads in (1, 2):
        in_member = relative[f"member, last attention {heads} heads"] - relative["member, last attention 0 heads"]
        uniform = relative[f"uniform {heads} heads, dense FFN"] - relative["uniform 0 heads, dense FFN"]
        print(
            f"  {heads} head(s): next to small FFNs (member) {in_member:.4f}, "
            f"next to dense FFNs (table anchors) {uniform / layers:.4f}"
        )


if __name__ == "__main__":
    main()
