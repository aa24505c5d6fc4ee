"""Lightning DataModule over already tokenized task features."""

from __future__ import annotations

import datasets
import lightning as L
from torch.utils.data import DataLoader

from ziplm.data.features import model_input_columns

TARGET_COLUMNS = ("labels", "start_positions", "end_positions")


def _torch_view(features: datasets.Dataset) -> datasets.Dataset:
    columns = model_input_columns(features) + [c for c in TARGET_COLUMNS if c in features.column_names]
    return features.with_format("torch", columns=columns)


class TaskDataModule(L.LightningDataModule):
    """Training batches shuffled (seeded by Lightning), evaluation batches in dataset order.

    Evaluation order matters: QA post-processing pairs logits with windows by position.
    """

    def __init__(
        self,
        train: datasets.Dataset,
        evaluation: datasets.Dataset | None,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if len(train) == 0:
            raise ValueError("the training split has no rows")
        self.train, self.evaluation = _torch_view(train), evaluation
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)  # type: ignore[arg-type]

    def val_dataloader(self) -> DataLoader:
        if self.evaluation is None:
            raise ValueError("this data module has no evaluation split; build it with one to validate")
        return DataLoader(_torch_view(self.evaluation), batch_size=self.eval_batch_size, shuffle=False)  # type: ignore[arg-type]
