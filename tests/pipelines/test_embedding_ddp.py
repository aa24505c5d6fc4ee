"""A sentence-embedding run on two processes (``trainer=ddp-cpu``, gloo) in bf16-mixed, through the CLI.

The search and the fidelity scores run outside Lightning, on rank 0, and are handed to the other rank;
distillation runs on both. So the run must finish (DDP refuses trainable parameters without a gradient,
such as an embedder's unused pooler), write its files once, report the scores one process computes for
the saved member, and really train: its first stage starts where the one-shot member of the same target
is (same database, same search), and ends elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.pipelines.test_embedding_run import METRICS, TINY, _texts, _ziplm

BF16 = ("hardware=cpu-bf16", "trainer.precision=bf16-mixed", "search.speedup_corrections=0")  # picks from the table
GRADUAL = ("schedule=gradual", "distill.epochs_per_stage=1", "pruner.calibration_samples=32")


def _run(base: Path, name: str, *args: str) -> Path:
    data = base / "mine.txt"
    where = (f"task.data_files.train={data}", f"output_root={base / name}", f"cache_dir={base / 'cache'}")
    done = _ziplm("run", *TINY, *BF16, *where, *args, cwd=base)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "report:" in done.stdout
    (run,) = (base / name / "run" / "smoke").iterdir()
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("embedding-ddp")
    _texts(base / "mine.txt")
    one = _run(base, "one")  # one process, one-shot: caches the dense teacher and the latency table
    two = _run(base, "two", *GRADUAL, "trainer=ddp-cpu")
    return one, two


@pytest.mark.slow  # two CLI runs and two evals: ~80 s on an idle 2-core CPU
def test_the_two_process_run_writes_its_files_once(runs: tuple[Path, Path]) -> None:
    one, two = runs
    assert (two / "rank1.log").is_file() and not (one / "rank1.log").exists()
    assert "report:" not in (two / "rank1.log").read_text()  # rank 1 reports nothing
    logged = [json.loads(line)["member"] for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert logged == ["dense", "1.5x", "2x"]  # appended by rank 0 alone
    assert sorted(p.name for p in (two / "family").iterdir()) == ["1.5x", "2x"]
    dense = json.loads((two / "dense_metrics.json").read_text())
    assert dense == json.loads((one / "dense_metrics.json").read_text())
    assert all(dense[f"metric/{name}"] == 1.0 for name in METRICS)


@pytest.mark.slow
def test_distillation_on_two_processes_moved_the_one_shot_start(runs: tuple[Path, Path]) -> None:
    one, two = runs
    a = json.loads((one / "family" / "1.5x" / "metrics.json").read_text())
    b = json.loads((two / "family" / "1.5x" / "metrics.json").read_text())
    assert (a["heads_kept"], a["neurons_kept"]) == (b["heads_kept"], b["neurons_kept"])  # the same start
    start = load_file(str(one / "family" / "1.5x" / "model.safetensors"))
    trained = load_file(str(two / "family" / "1.5x" / "model.safetensors"))
    assert start.keys() == trained.keys()
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in trained.values())
    # Two AdamW steps at distill.learning_rate 5e-5 move weights by ~7e-5; the two starts differ by the
    # rounding of Hessians summed over ranks (~1e-9 relative) at most.
    moved = [n for n in start if (start[n] - trained[n]).abs().max() > 1e-5]
    assert any(n.startswith("encoder.") for n in moved), moved
    assert not [n for n in moved if n.startswith("pooler.")]  # no gradient reaches it: frozen, as in one process


@pytest.mark.slow
def test_the_reported_fidelity_is_what_one_process_computes(runs: tuple[Path, Path], tmp_path: Path) -> None:
    """``ziplm eval`` of the member on one process, and on two (rank 0 scores, as in the run)."""
    member = runs[1] / "family" / "2x"
    data = runs[1].parents[3] / "mine.txt"
    results = []
    for trainer in ("cpu", "ddp-cpu"):
        out = tmp_path / trainer
        done = _ziplm("eval", f"checkpoint={member}", *TINY, *BF16, f"task.data_files.train={data}",
                      f"trainer={trainer}", f"output_root={out}", cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        (record,) = out.glob("eval/*/*/eval.json")
        results.append(json.loads(record.read_text())["results"]["validation"])
    saved = json.loads((member / "metrics.json").read_text())
    assert saved["eval_precision"] == "bf16-mixed" and saved["saved_dtype"] == "float32"
    assert results[0] == pytest.approx({name: saved[f"metric/{name}"] for name in METRICS}, abs=1e-6)
    assert results[1] == results[0] and all(0 < value <= 1 + 1e-9 for value in results[0].values())
