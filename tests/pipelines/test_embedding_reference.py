"""The run's dense reference for embedding tasks: scores and SPDY distortion against a tiny BERT, by hand."""

from __future__ import annotations

import copy

import datasets
import pytest
import torch

from tests.conftest import TINY_BERT, token_batch
from ziplm.core.embedding import Pooling, embedding_distortion
from ziplm.data.spec import TaskSpec
from ziplm.eval.embedding import fidelity, sts_spearman
from ziplm.models import build_model
from ziplm.pipelines.embedding import EmbeddingReference, encode, split_scores

TASK = TaskSpec(name="mine", kind="embedding", metric="embedding_fidelity", text_keys=("text",))


def _features(rows: int = 10) -> datasets.Dataset:
    ids, mask = token_batch(batch=rows, seq=8, pad_from=5)
    features = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist()})
    return features.with_format("torch", columns=["input_ids", "attention_mask"])


def test_the_dense_model_is_faithful_to_itself_and_a_changed_one_is_scored_by_hand() -> None:
    dense = build_model(TINY_BERT, "base").eval()
    features, pooling = _features(), Pooling("mean", normalize=True)
    reference = EmbeddingReference(dense, pooling, TASK, {"validation": (None, features)}, 4, "32-true")
    assert reference.scores(dense) == pytest.approx({"mean_cosine": 1, "pairwise_spearman": 1, "nn_top1": 1,
                                                     "nn_top9": 1})  # fmt: skip
    other = copy.deepcopy(dense)
    with torch.no_grad():
        other.encoder.layer[0].output.dense.weight.mul_(-3.0)  # type: ignore[union-attr,index,operator]
    expected = fidelity(
        encode(other, features, pooling, 64, "32-true"), encode(dense, features, pooling, 64, "32-true")
    )
    assert reference.scores(other) == pytest.approx(expected)
    assert expected["mean_cosine"] < 1 - 1e-4


def test_spdy_distortion_against_the_dense_states_computed_once() -> None:
    dense = build_model(TINY_BERT, "base").eval()
    ids, mask = token_batch(batch=6, seq=8, pad_from=4)
    batches = [{"input_ids": ids[:3], "attention_mask": mask[:3]}, {"input_ids": ids[3:], "attention_mask": mask[3:]}]
    pooling = Pooling("cls")
    reference = EmbeddingReference(dense, pooling, TASK, {}, 4, "32-true")
    score = reference.distortion(batches)
    assert score(dense) == pytest.approx(0.0, abs=1e-6)
    other = copy.deepcopy(dense)
    with torch.no_grad():
        other.encoder.layer[1].intermediate.dense.weight.mul_(2.0)  # type: ignore[union-attr,index,operator]
        states = [other(**b).last_hidden_state for b in batches]
        dense_states = [dense(**b).last_hidden_state for b in batches]
    masks = [b["attention_mask"] for b in batches]
    assert score(other) == pytest.approx(embedding_distortion(states, dense_states, masks, pooling), rel=1e-5)
    assert score(other) > 1e-4


def test_sts_pairs_are_scored_on_the_first_and_second_halves() -> None:
    task = TaskSpec(name="sts", kind="embedding", metric="sts_spearman", text_keys=("a", "b"), label_key="score")
    examples = datasets.Dataset.from_dict({"a": ["x"] * 5, "b": ["y"] * 5, "score": [0.5, 4.0, 2.0, 3.0, 1.0]})
    student, dense = torch.randn(10, 6), torch.randn(10, 6)
    got = split_scores(task, examples, student, dense)
    assert got["sts_spearman"] == pytest.approx(
        sts_spearman(student[:5], student[5:], torch.tensor([0.5, 4.0, 2.0, 3.0, 1.0]))["sts_spearman"]
    )
    assert got["mean_cosine"] == pytest.approx(fidelity(student, dense)["mean_cosine"])
