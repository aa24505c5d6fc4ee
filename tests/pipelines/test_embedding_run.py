"""Label-free sentence embeddings through the CLI: a tiny family from a local text file, whose members carry
the fidelity and retrieval metrics and their pooling, ``ziplm eval`` of a member, and bad input as one line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.test_retrieval_data import write_mteb
from tests.eval.test_retrieval_metrics import _brute_force
from ziplm.config.paths import REPO_ROOT
from ziplm.data.retrieval import load_retrieval
from ziplm.data.spec import TaskSpec

TINY = (
    "experiment=smoke", "task=embed-bbc", "task.max_train_samples=64", "task.max_eval_samples=24",
    "task.max_seq_length=32", "hardware.batch_size=4", "hardware.seq_length=16", "hardware.warmup=0",
    "hardware.repetitions=2", "search.speedup_rounds=2", "search.spdy_loss_samples=16",
)  # fmt: skip
METRICS = ("mean_cosine", "pairwise_spearman", "nn_top1", "nn_top10")
RETRIEVAL = ("retrieval/ndcg@10", "retrieval/recall@10", "retrieval/mrr@10")


def _ziplm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "ziplm", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def _texts(path: Path, count: int = 120) -> Path:
    words = ("market", "river", "vote", "music", "phone", "team", "rain", "film", "bank", "city", "game")
    lines = [" ".join(words[(i * 5 + k * 3) % len(words)] for k in range(5 + i % 9)) + f" {i}." for i in range(count)]
    path.write_text("\n".join([*lines, "", lines[0]]) + "\n")  # a blank and a repeated line: dropped
    return path


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("embedding")
    data, mteb = _texts(work / "mine.txt"), write_mteb(work / "mteb")
    done = _ziplm("run", *TINY, f"task.data_files.train={data}", f"task.retrieval={mteb}", f"output_root={work}",
                  cwd=work)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "using mean pooling" in done.stdout  # tiny-bert has no pooling config: said in one line
    (run,) = (work / "run" / "smoke").iterdir()
    return run


@pytest.mark.slow  # ~30 s on an idle 2-core CPU (the README's own-text line runs the same path by default)
def test_members_carry_the_fidelity_metrics_and_their_pooling(family: Path) -> None:
    dense = json.loads((family / "dense_metrics.json").read_text())
    assert all(dense[f"metric/{name}"] == pytest.approx(1.0) for name in METRICS)  # the dense model itself
    for target in ("1.5x", "2x"):
        member = family / "family" / target
        record = json.loads((member / "metrics.json").read_text())
        assert all(0 < record[f"metric/{name}"] <= 1 + 1e-9 for name in METRICS)
        saved = json.loads((member / "embedding.json").read_text())
        assert (saved["pooling"], saved["normalize"]) == ("mean", False)
        assert Path(saved["reference"]["teacher"], "config.json").is_file()  # the dense teacher it is scored against
        assert (member / "modules.json").is_file() and (member / "1_Pooling" / "config.json").is_file()
    assert "mean_cosine" in (family / "results.md").read_text()


@pytest.mark.slow
def test_retrieval_scores_of_dense_and_members_match_a_brute_force(family: Path) -> None:
    import torch
    import transformers

    dense = json.loads((family / "dense_metrics.json").read_text())
    members = [json.loads((family / "family" / t / "metrics.json").read_text()) for t in ("1.5x", "2x")]
    assert all(0 <= record[f"metric/{name}"] <= 1 for record in (dense, *members) for name in RETRIEVAL)
    member = family / "family" / "2x"
    teacher = json.loads((member / "embedding.json").read_text())["reference"]["teacher"]
    model, tokenizer = (
        transformers.AutoModel.from_pretrained(teacher).eval(),
        transformers.AutoTokenizer.from_pretrained(member),
    )
    found = load_retrieval(TaskSpec(name="m", kind="embedding", metric="embedding_fidelity", text_keys=("text",),
                                    retrieval=str(family.parents[2] / "mteb"), max_eval_samples=24))  # fmt: skip
    assert found is not None

    def embed(texts: list[str]) -> torch.Tensor:  # mean pooling over real tokens, as the run's (no pooling config)
        batch = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        with torch.no_grad():
            states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return (states * mask).sum(1) / mask.sum(1)

    expected = _brute_force(embed(found.queries), embed(found.corpus), found.query_ids, found.doc_ids, found.qrels)
    assert {name: dense[f"metric/retrieval/{name}"] for name in expected} == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_eval_of_a_member_reproduces_its_fidelity(family: Path, tmp_path: Path) -> None:
    member = family / "family" / "2x"
    data = sorted(family.parents[2].glob("mine.txt"))[0]
    mteb = family.parents[2] / "mteb"
    done = _ziplm("eval", f"checkpoint={member}", *TINY, f"task.data_files.train={data}", f"task.retrieval={mteb}",
                  f"output_root={tmp_path}", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = tmp_path.glob("eval/*/*/eval.json")
    scores = json.loads(record.read_text())["results"]["validation"]
    saved = json.loads((member / "metrics.json").read_text())
    assert scores == pytest.approx({name: saved[f"metric/{name}"] for name in (*METRICS, *RETRIEVAL)}, abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("model=tiny-gpt2",), "task.kind=embedding needs an encoder"),
        (("pruner=fisher",), "pruner.method=fisher scores structures by task-loss gradients"),
        (("distill.task=1",), "distill.task must be 0 for task.kind=embedding"),
        (("task.label_key=label",), "kind 'embedding' is label-free"),
        (("task.num_labels=5",), "task.num_labels=null"),
        (("task.retrieval=scifact",), "task.retrieval=scifact is no builtin retrieval set"),
        (("task.retrieval=./no/such/folder",), "missing corpus.jsonl, queries.jsonl, qrels/test.tsv"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = _ziplm("run", *TINY, *args, f"output_root={tmp_path}", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert message in line
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob("run/*/*/*.json"))  # Hydra's log only


def test_an_empty_text_file_is_refused_before_any_work(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    done = _ziplm("run", *TINY, f"task.data_files.train={empty}", f"output_root={tmp_path}", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"error: ValueError: task.data_files.train={empty} has no text" in done.stderr
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob("run/*/*/*.json"))
