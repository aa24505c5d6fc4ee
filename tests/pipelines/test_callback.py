"""`ZipLMPruning`: a family from a user's own Lightning script (tiny BERT, real timing on the CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from tests.conftest import TINY_BERT
from ziplm.latency.measure import Environment
from ziplm.models import build_model, load_pruned
from ziplm.pipelines.callback import ZipLMPruning, calibration_batches

ENV = Environment(batch_size=16, seq_length=32, warmup=1, repetitions=3)
TARGETS = [1.3, 1.6]


class UserModule(L.LightningModule):
    """What a user writes: their own module around an HF model, their own loss and optimizer."""

    def __init__(self, attribute: str = "model") -> None:
        super().__init__()
        setattr(self, attribute, build_model(TINY_BERT, "classification", num_labels=2))
        self.attribute = attribute
        self.steps = 0

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.steps += 1
        return getattr(self, self.attribute)(**batch).loss  # type: ignore[no-any-return]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def _loader(rows: int = 64) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, TINY_BERT.vocab_size, (rows, 32), generator=generator)
    labels = torch.randint(0, 2, (rows,), generator=generator)
    data = [
        {"input_ids": ids[i], "attention_mask": torch.ones(32, dtype=torch.long), "labels": labels[i]}
        for i in range(rows)
    ]
    return DataLoader(data, batch_size=16)  # type: ignore[arg-type]


def _trainer(callback: ZipLMPruning) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ZipLMPruning, UserModule, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("callback") / "family"
    torch.manual_seed(0)
    module = UserModule()
    callback = ZipLMPruning(TARGETS, out, environment=ENV, calibration_samples=48, speedup_rounds=3)
    trainer = _trainer(callback)
    seen: dict[str, Any] = {}

    class Snapshot(L.Callback):  # the trained model, just before ZipLMPruning sees it
        def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen["state"] = {k: v.clone() for k, v in pl_module.model.state_dict().items()}

    trainer.callbacks.insert(0, Snapshot())  # type: ignore[attr-defined]
    trainer.fit(module, train_dataloaders=_loader())
    return callback, module, seen, out


def test_fit_end_writes_one_reloadable_member_per_target(fitted: Any) -> None:
    callback, _, _, out = fitted
    assert [m.member for m in callback.members] == [f"{t:g}x" for t in TARGETS]
    for target, record in zip(TARGETS, callback.members, strict=True):
        folder = out / f"{target:g}x"
        pruned = load_pruned(folder)
        structure = pruned.config.ziplm_structure
        assert structure is not None
        assert record.predicted_speedup is not None and record.predicted_speedup >= target
        assert record.measured_speedup is not None and math.isfinite(record.measured_speedup)
        assert record.measured_speedup > 0
        saved = json.loads((folder / "metrics.json").read_text())
        assert saved["target_speedup"] == target and saved["measured_speedup"] == record.measured_speedup
        assert record.heads_kept is not None and record.neurons_kept is not None
        assert sum(record.heads_kept) + sum(record.neurons_kept) < 3 * (4 + 64)
    table = (out / "family.md").read_text()
    assert all(f"| {t:g}x |" in table for t in TARGETS)


def test_the_users_model_is_left_unchanged(fitted: Any) -> None:
    _, module, seen, _ = fitted
    state = module.model.state_dict()
    assert state.keys() == seen["state"].keys()
    assert all(torch.equal(state[k], seen["state"][k]) for k in state)
    assert all(p.dtype == torch.float32 for p in module.model.parameters())
    assert module.model.config.num_attention_heads == 4
    assert module.model.bert.encoder.layer[0].intermediate.dense.out_features == 64
    assert module.steps == 4  # it trained: 64 rows / batch 16


def test_wrong_model_attribute_fails_before_training(tmp_path: Path) -> None:
    module = UserModule(attribute="net")
    callback = ZipLMPruning([1.5], tmp_path / "family", environment=ENV)
    with pytest.raises(ValueError, match=r"no attribute 'model'.*'net'"):
        _trainer(callback).fit(module, train_dataloaders=_loader())
    assert module.steps == 0


def test_unsupported_model_fails_before_training(tmp_path: Path) -> None:
    module = UserModule()
    module.model = torch.nn.Linear(2, 2)  # type: ignore[assignment]
    callback = ZipLMPruning([1.5], tmp_path / "family", environment=ENV)
    with pytest.raises(ValueError, match="cannot prune"):
        _trainer(callback).fit(module, train_dataloaders=_loader())
    assert module.steps == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": []}, "targets is empty"),
        ({"targets": [0.9]}, "above 1"),
        ({"targets": [1.0]}, "above 1"),
        ({"targets": [float("inf")]}, "finite"),
        ({"targets": [float("nan")]}, "finite"),
        ({"targets": [1.5, 1.5]}, "unique"),
        ({"calibration_samples": 0}, "calibration_samples"),
        ({"output_dir": ""}, "output_dir"),
        ({"output_dir": None}, "output_dir"),
    ],
)
def test_bad_constructor_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"targets": [1.5], "output_dir": "family", **kwargs}
    with pytest.raises(ValueError, match=message):
        ZipLMPruning(**args)


def test_calibration_keeps_model_inputs_up_to_the_sample_count() -> None:
    batches = calibration_batches(_loader(), 20)
    assert [b["input_ids"].shape[0] for b in batches] == [16, 4]
    assert all(set(b) == {"input_ids", "attention_mask"} for b in batches)
    with pytest.raises(ValueError, match="dicts of model inputs"):
        calibration_batches([torch.zeros(2, 3)], 4)


def test_an_output_dir_with_an_earlier_database_fails_before_training(fitted: Any) -> None:
    out = fitted[3]
    module = UserModule()
    with pytest.raises(ValueError, match="earlier run"):
        _trainer(ZipLMPruning([1.5], out, environment=ENV)).fit(module, train_dataloaders=_loader())
    assert module.steps == 0


def test_members_are_logged_to_the_modules_logger(fitted: Any) -> None:
    callback = fitted[0]
    logged: list[tuple[dict[str, float], int]] = []

    class Logger:
        def log_metrics(self, metrics: dict[str, float], step: int) -> None:
            logged.append((metrics, step))

    callback._log(SimpleNamespace(logger=Logger()), step=7)
    ((metrics, step),) = logged
    assert step == 7
    assert metrics["ziplm/1.3x/measured_speedup"] == callback.members[0].measured_speedup
    assert {"ziplm/1.6x/predicted_speedup", "ziplm/1.6x/parameters"} <= set(metrics)
