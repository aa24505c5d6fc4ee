"""Run by tests/lit/test_phases_ddp.py: evaluation and calibration through Lightning in N processes.

``python ddp_phases_script.py <out dir> <devices>``: rank 0 writes the metric and the Hessians there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ziplm.lit.distributed import finish_ranks, is_main, launch_ranks
from ziplm.lit.phases import calibrate, evaluate

sys.path.insert(0, str(Path(__file__).parent))
from phase_fixtures import tiny_run


def main() -> None:
    out, devices = Path(sys.argv[1]), int(sys.argv[2])
    trainer = {"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto"}
    launch_ranks(trainer, [__file__, *sys.argv[1:]], out)
    model, task, examples, features, batches, modules = tiny_run()
    metrics = evaluate(model, task, examples, features, trainer, batch_size=7, show_progress=False)
    accumulators, energy = calibrate(model, batches, modules, trainer, show_progress=False)
    if is_main():
        hessians = {name: acc.hessian() for name, acc in accumulators.items()}
        torch.save({"metrics": metrics, "hessians": hessians, "energy": energy}, out / f"phases-{devices}.pt")
    finish_ranks()


if __name__ == "__main__":
    main()
