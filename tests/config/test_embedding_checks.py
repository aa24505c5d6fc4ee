"""`validate_config` on label-free embedding runs: what needs labels or a decoder is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ziplm.config.paths import compose
from ziplm.config.validate import validate_config

EMBED = ("experiment=smoke", "task=embed-bbc")


@pytest.mark.parametrize("task", ["embed-bbc", "embed-wiki", "sts-b-embed"])
def test_the_embedding_tasks_validate(task: str) -> None:
    validate_config(compose(["experiment=smoke", f"task={task}"]))
    validate_config(compose(["experiment=minilm-embedding-family", f"task={task}"]))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model=tiny-llama",), "needs an encoder"),
        (("pruner=fisher-norescale",), "task-loss gradients, which need labels"),
        (("distill.task=0.5",), "distill.task must be 0"),
        (("task.metric=accuracy",), "scored by embedding_fidelity or sts_spearman"),
        (("task=bbc-news", "task.kind=embedding", "task.metric=embedding_fidelity"), "set task.label_key=null"),
    ],
)
def test_settings_without_sense_for_embeddings_are_refused(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        validate_config(compose([*EMBED, *overrides]))
    assert "\n" not in str(caught.value)


def test_an_empty_text_file_is_refused_by_the_validation(tmp_path: Path) -> None:
    empty = tmp_path / "mine.txt"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match=r"^task.data_files.train=.*mine.txt has no text"):
        validate_config(compose([*EMBED, f"task.data_files.train={empty}"]))


def test_eval_of_an_embedding_member_may_name_any_model() -> None:
    """Only pruning runs need an encoder model: ``ziplm eval`` scores a checkpoint, the model is a fallback."""
    validate_config(compose([*EMBED, "model=tiny-gpt2"], command="eval"))
