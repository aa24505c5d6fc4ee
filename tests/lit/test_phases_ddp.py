"""Evaluation and calibration as Lightning phases: 2 processes (DDP, gloo) give the 1-process numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_phases_script.py")


def _run(out: Path, devices: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), str(devices)], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out / f"phases-{devices}.pt")


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("phases")
    return _run(out, 1), _run(out, 2)


def test_two_processes_score_the_whole_split_once(one_and_two: tuple[dict, dict]) -> None:
    one, two = one_and_two
    assert one["metrics"] == two["metrics"]  # 45 rows in batches of 7: uneven shards, no padding rows


def test_two_processes_sum_the_hessians_of_all_batches(one_and_two: tuple[dict, dict]) -> None:
    one, two = one_and_two
    assert set(one["hessians"]) == set(two["hessians"]) == {"0.attention", "0.ffn", "1.attention", "1.ffn"}
    for name, hessian in one["hessians"].items():
        assert hessian.dtype == torch.float64
        scale = float(hessian.abs().max())
        assert float((hessian - two["hessians"][name]).abs().max()) <= 1e-12 * scale, name
        assert two["energy"][name] == pytest.approx(one["energy"][name], rel=1e-12)
