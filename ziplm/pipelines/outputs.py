"""Where a run writes: Hydra's run directory when launched by the CLI, a fresh timestamped one otherwise."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig


def run_dir(cfg: DictConfig) -> Path:
    """The output folder of this run (``outputs/<command>/<name>/<time>/``), created if needed."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.output_dir)
    else:  # composed programmatically (tests, notebooks)
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        path = Path(cfg.output_root) / cfg.command / cfg.name / stamp
    path.mkdir(parents=True, exist_ok=True)
    return path
