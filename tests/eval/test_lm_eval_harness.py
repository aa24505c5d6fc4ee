"""``ziplm eval eval=lm-eval``: pruned decoder members through lm-evaluation-harness, checked against torch.

Each member is a tiny random decoder (GPT-2's BPE) with a removed attention sublayer, a removed FFN and, for
Llama, uneven KV groups, saved as `ziplm run` saves members. The tasks are local: a multiple-choice task and
a rolling-loglikelihood task (YAML + JSON lines written by the test). What the harness reports is recomputed
here by hand from the same member with torch: every choice's loglikelihood, accuracy (plain and
length-normalised) and word/byte perplexity over disjoint windows of ``eval.max_length`` tokens.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from tests.models.decoder_checks import tiny_model
from ziplm.config import eval_checks
from ziplm.config.paths import REPO_ROOT, compose
from ziplm.config.validate import validate_config
from ziplm.core.structure import Structure
from ziplm.data.sources import load_splits
from ziplm.data.spec import TaskSpec
from ziplm.eval import harness
from ziplm.models import ModelSpec, adapter_for, build_model, build_tokenizer, load_pruned, save_pruned
from ziplm.pipelines import evaluate as evaluate_module
from ziplm.pipelines import evaluate_harness
from ziplm.pipelines.common import to_dict

WINDOW = 16  # eval.max_length: the rolling texts span several windows
QUESTIONS = [
    ("The sky on a clear day is", ["blue", "made of cheese and old shoes", "green"], 0),
    ("Two plus two equals", ["four", "a purple elephant", "seven hundred"], 0),
    ("Water freezes at zero degrees", ["Celsius", "of the moon", "in a very strange way"], 0),
    ("Cats like to chase", ["mice", "tax returns and spreadsheets", "cars"], 0),
    ("The capital of France is", ["Paris", "Berlin", "a small village near the sea"], 1),
    ("Bread is made from", ["flour", "glass", "stars and distant galaxies far away"], 2),
]
TEXTS = [
    "The quick brown fox jumps over the lazy dog, and then it runs into the forest to find its friends.",
    "Pruning removes attention heads and neurons from a model; the smaller model is faster on real hardware.",
    "Short text.",
]


def _member(folder: Path, family: str) -> Path:
    """A 3-layer decoder: layer 0 without attention, layer 1 with one KV group (or head) and no FFN, layer 2
    with every head and half of its FFN."""
    kv = {"num_key_value_heads": 2} if family == "llama" else {}
    spec = ModelSpec(name=f"tiny-{family}", family=family, source="scratch", hidden_size=32, num_layers=3,
                     num_heads=4, intermediate_size=48, vocab_size=50257, max_position_embeddings=64,
                     tokenizer="packaged:gpt2", **kv)  # fmt: skip
    torch.manual_seed(0)
    model = tiny_model(spec)
    dims = adapter_for(model).dims(model)
    heads = [[], [1], list(range(dims.num_heads))]
    structure = Structure.from_kept(dims, heads, [[3, 7, 20], [], list(range(0, 48, 2))])
    adapter_for(model).apply_structure(model, structure)
    return save_pruned(model, structure, folder, tokenizer=build_tokenizer(spec))


def _tasks(folder: Path) -> Path:
    """Two lm-eval tasks on local JSON lines: `toy_mc` (multiple choice) and `toy_rolling` (perplexity)."""
    folder.mkdir(parents=True, exist_ok=True)
    mc = [{"question": q, "choices": c, "label": label} for q, c, label in QUESTIONS]
    (folder / "mc.jsonl").write_text("".join(json.dumps(row) + "\n" for row in mc))
    (folder / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    metric = "  - metric: {}\n    aggregation: {}\n    higher_is_better: {}\n"
    (folder / "toy_mc.yaml").write_text(
        f"task: toy_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'mc.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: label\nmetric_list:\n"
        + metric.format("acc", "mean", "true") + metric.format("acc_norm", "mean", "true")
        + "metadata:\n  version: 1.0\n"
    )  # fmt: skip
    rolling = "".join(metric.format(m, a, "false") for m, a in harness.ROLLING_METRICS.items())
    (folder / "toy_rolling.yaml").write_text(
        f"task: toy_rolling\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'text.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n" + rolling + "metadata:\n  version: 1.0\n"
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tasks(tmp_path_factory.mktemp("lm_eval_tasks"))


# ---- the expected numbers, by hand -------------------------------------------------------------------


def _logprobs(model: Any, ids: Sequence[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([list(ids)])).logits[0].double(), dim=-1)


def _choice_loglikelihoods(model: Any, tokenizer: Any, question: str, choices: Sequence[str]) -> list[float]:
    """log p(" " + choice | question), the choice's tokens being those the whole text adds to the question's."""
    out = []
    for choice in choices:
        context = tokenizer.encode(question)
        whole = tokenizer.encode(f"{question} {choice}")
        assert whole[: len(context)] == context
        continuation = whole[len(context) :]
        logp = _logprobs(model, (context + continuation)[:-1])
        out.append(sum(float(logp[len(context) - 1 + i, t]) for i, t in enumerate(continuation)))
    return out


def _rolling_loglikelihood(model: Any, tokenizer: Any, text: str, window: int) -> float:
    """Disjoint chunks of `window` tokens, each scored with as much preceding text as fits in one window
    (the first after the end-of-text token)."""
    tokens = tokenizer.encode(text)
    prefixed = [tokenizer.eos_token_id, *tokens]  # prefixed[i + 1] == tokens[i]
    total = 0.0
    for start in range(0, len(tokens), window):
        end = min(start + window, len(tokens))
        inputs = prefixed[max(0, end - window) : end]
        logp = _logprobs(model, inputs)
        scored = end - start
        total += sum(float(logp[len(inputs) - scored + i, tokens[start + i]]) for i in range(scored))
    return total


def _perplexities(model: Any, tokenizer: Any, texts: Sequence[str], window: int) -> dict[str, float]:
    ll = sum(_rolling_loglikelihood(model, tokenizer, t, window) for t in texts)
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    size = sum(len(t.encode("utf-8")) for t in texts)
    return {"word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / size),
            "bits_per_byte": -ll / size / math.log(2)}  # fmt: skip


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _check_record(record: dict[str, Any], folder: Path, member: Path) -> None:
    """The harness's numbers for toy_mc / toy_rolling equal the hand computation on the same member."""
    import transformers

    model = load_pruned(member, dtype="float32").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(member)
    lls = [_choice_loglikelihoods(model, tokenizer, q, c) for q, c, _ in QUESTIONS]
    acc = sum(_argmax(x) == label for x, (_, _, label) in zip(lls, QUESTIONS, strict=True))
    normed = [
        [ll / len(c) for ll, c in zip(x, choices, strict=True)]
        for x, (_, choices, _) in zip(lls, QUESTIONS, strict=True)
    ]
    acc_norm = sum(_argmax(x) == label for x, (_, _, label) in zip(normed, QUESTIONS, strict=True))
    got = record["results"]["toy_mc"]
    assert got["acc,none"] == pytest.approx(acc / len(QUESTIONS), abs=1e-12)
    assert got["acc_norm,none"] == pytest.approx(acc_norm / len(QUESTIONS), abs=1e-12)
    assert 0 < acc < len(QUESTIONS) or 0 < acc_norm < len(QUESTIONS), "a test that cannot tell right from wrong"
    samples = [json.loads(line) for line in (folder / harness.SAMPLES_FOLDER / "toy_mc.jsonl").read_text().splitlines()]
    for sample in samples:
        reported = [float(resp[0]) for resp in sample["filtered_resps"]]
        assert reported == pytest.approx(lls[sample["doc_id"]], rel=1e-5, abs=1e-4)
    expected = _perplexities(model, tokenizer, TEXTS, WINDOW)
    for metric, value in expected.items():
        assert record["results"]["toy_rolling"][f"{metric},none"] == pytest.approx(value, rel=1e-5)
    assert record["n-shot"]["toy_mc"] == 0 and record["versions"]["toy_mc"] == 1.0
    assert record["settings"]["max_length"] == WINDOW and record["kind"] == "ziplm member"


def _overrides(member: Path, tasks: Path, names: str = "[toy_mc,toy_rolling]") -> list[str]:
    return [f"checkpoint={member}", "eval=lm-eval", f"eval.tasks={names}", f"eval.include_path={tasks}",
            f"eval.max_length={WINDOW}", "eval.batch_size=4", "eval.log_samples=true", "logger=none"]  # fmt: skip


def _run_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overrides: list[str]) -> tuple[dict, Path]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    monkeypatch.setattr(evaluate_harness, "run_dir", lambda cfg: out)
    cfg = compose(overrides, command="eval")
    validate_config(cfg)
    evaluate_module.run_evaluate(cfg)
    return json.loads((out / "eval.json").read_text()), out


# ---- the CLI end to end, and every family in-process ---------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "", "HF_DATASETS_CACHE": str(tmp_path / "hf")}  # fmt: skip


def _cli(tmp_path: Path, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ziplm", "eval", *args, f"output_root={tmp_path / 'outputs'}"]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def test_cli_scores_a_pruned_llama_member_as_torch_does(tmp_path: Path, tasks: Path) -> None:
    """Removed attention, uneven KV groups: the real CLI, then every number recomputed by hand."""
    member = _member(tmp_path / "member", "llama")
    done = _cli(tmp_path, _overrides(member, tasks))
    assert done.returncode == 0, done.stderr[-3000:]
    (record_path,) = (tmp_path / "outputs").rglob("eval.json")
    record = json.loads(record_path.read_text())
    _check_record(record, record_path.parent, member)
    assert "|toy_mc" in done.stdout and "acc_norm" in done.stdout  # lm_eval's table is printed
    assert record["provenance"] and record["lm_eval_version"]


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_gpt2_and_opt_members_score_as_torch_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tasks: Path, family: str
) -> None:
    member = _member(tmp_path / "member", family)
    record, out = _run_in_process(tmp_path, monkeypatch, _overrides(member, tasks))
    _check_record(record, out, member)


def test_ziplm_task_is_the_configured_lm_tasks_text_scored_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eval.tasks=[ziplm_task]` (the default of eval=lm-eval): the task's evaluation rows as documents."""
    member = _member(tmp_path / "member", "gpt2")
    overrides = [f"checkpoint={member}", "eval=lm-eval", "task=tiny-lm", "task.max_eval_samples=5",
                 f"eval.max_length={WINDOW}", "logger=none"]  # fmt: skip
    record, out = _run_in_process(tmp_path, monkeypatch, overrides)
    assert record["tasks"] == [harness.ZIPLM_TASK]
    task = TaskSpec.from_mapping(to_dict(compose(["task=tiny-lm", "task.max_eval_samples=5"]).task))
    rows = load_splits(task)["validation"]["text"]
    documents = [json.loads(line)["text"] for line in (out / harness.TASKS_FOLDER / "ziplm_task.jsonl").open()]
    assert documents == [r for r in rows if r.strip()] and len(documents) == 5
    assert record["ziplm_task"] == {"task": "tiny-lm", "split": "validation", "documents": 5}
    import transformers

    model = load_pruned(member, dtype="float32").eval()
    expected = _perplexities(model, transformers.AutoTokenizer.from_pretrained(member), documents, WINDOW)
    for metric, value in expected.items():
        assert record["results"][harness.ZIPLM_TASK][f"{metric},none"] == pytest.approx(value, rel=1e-5)


# ---- bad input: one line, before the model is loaded ----------------------------------------------------


def test_the_mirrored_task_name_equals_the_harness_one() -> None:
    assert eval_checks.ZIPLM_TASK == harness.ZIPLM_TASK
    assert eval_checks.LM_EVAL_INSTALL == harness.INSTALL


BAD_VALUES = [
    (("eval.tasks=[]",), "eval.tasks must be a non-empty list"),
    (("eval.limit=-1",), "eval.limit must be an integer >= 1"),
    (("eval.num_fewshot=-2",), "eval.num_fewshot must be an integer >= 0"),
    (("eval.batch_size=0",), "eval.batch_size must be an integer >= 1"),
    (("eval.max_length=1",), "eval.max_length must be an integer >= 2"),
    (("eval.name=lmeval",), "eval.name must be one of task, lm-eval"),
    (("task=bbc-news",), r"eval.tasks=\[ziplm_task\] scores .*\(task.kind=lm\)"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES, ids=[o[0] for o, _ in BAD_VALUES])
def test_bad_values_are_refused_by_validation(overrides: tuple[str, ...], message: str) -> None:
    cfg = compose(["eval=lm-eval", "task=tiny-lm", "checkpoint=some/member", *overrides], command="eval")
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)


def test_a_missing_lm_eval_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = eval_checks.importlib.util.find_spec
    monkeypatch.setattr(eval_checks.importlib.util, "find_spec", lambda n, *a: None if n == "lm_eval" else real(n, *a))
    cfg = compose(["eval=lm-eval", "task=tiny-lm", "checkpoint=some/member"], command="eval")
    with pytest.raises(ImportError, match=r"needs lm_eval, not installed: pip install 'ziplm\[lmeval\]'"):
        validate_config(cfg)
    validate_config(compose(["eval=lm-eval", "task=tiny-lm"], command="run"))  # only `ziplm eval` needs it


def _bert_member(folder: Path) -> Path:
    spec = ModelSpec(name="b", family="bert", source="scratch", hidden_size=32, num_layers=2, num_heads=4,
                     intermediate_size=64, vocab_size=30522, max_position_embeddings=64)  # fmt: skip
    model = build_model(spec, "classification", num_labels=2)
    structure = Structure.dense(adapter_for(model).dims(model))
    return save_pruned(model, structure, folder)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("[toy_mcc]", r"unknown lm-eval task 'toy_mcc' \(did you mean toy_mc.*`lm-eval ls tasks`.*eval.include_path="),
        ("[toy_mc,bert]", "is a ziplm member of a BertForSequenceClassification, but a lm task needs a causal LM"),
    ],
    ids=["unknown-task", "bert-member"],
)
def test_unknown_tasks_and_non_causal_members_fail_before_the_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tasks: Path, names: str, message: str
) -> None:
    member = _bert_member(tmp_path / "bert") if "bert" in names else _member(tmp_path / "llama", "llama")

    def no_model(*_: object, **__: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(evaluate_harness, "load_checkpoint", no_model)
    with pytest.raises(ValueError, match=message):
        _run_in_process(tmp_path, monkeypatch, _overrides(member, tasks, names.replace(",bert", "")))


def test_the_cli_says_one_line_for_an_empty_task_list(tmp_path: Path) -> None:
    done = _cli(tmp_path, ["checkpoint=some/member", "eval=lm-eval", "eval.tasks=[]"])
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "error: ValueError: eval.tasks must be a non-empty list of lm-eval task names (`lm-eval ls tasks`) or "
        "ziplm_task, got []; e.g. eval.tasks=[hellaswag]"
    ]


@pytest.mark.slow  # five CLI processes, two of them indexing every lm_eval task
def test_the_cli_says_one_line_for_each_bad_input(tmp_path: Path, tasks: Path) -> None:
    """Empty task list, unknown task (with a close match and how to list tasks), a BERT member, lm_eval
    missing: exit 1, one `error:` line, no traceback, no model loaded (no eval.json, no samples)."""
    llama = _member(tmp_path / "llama", "llama")
    bert = _bert_member(tmp_path / "bert")
    cases = [
        ([f"checkpoint={llama}", "eval=lm-eval", "eval.tasks=[]"], "eval.tasks must be a non-empty list"),
        ([*_overrides(llama, tasks, "[toy_mcc]")], "unknown lm-eval task 'toy_mcc' (did you mean toy_mc"),
        ([*_overrides(llama, tasks, "[nope_task]")], "list the tasks with `lm-eval ls tasks`"),
        ([*_overrides(bert, tasks)], "is a ziplm member of a BertForSequenceClassification, but a lm task needs"),
    ]
    for args, message in cases:
        done = _cli(tmp_path, args)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 1 and len(errors) == 1 and message in errors[0], done.stderr[-3000:]
        assert "Traceback" not in done.stderr
    assert not list((tmp_path / "outputs").rglob("eval.json"))
    # lm_eval not installed: the same command, with lm_eval hidden from the import system.
    code = (
        "import importlib.util as u, sys\nfind = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'lm_eval' else find(name, *a)\n"
        "from ziplm.__main__ import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    args = ["eval", *_overrides(llama, tasks), f"output_root={tmp_path / 'outputs'}"]
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "error: ImportError: eval=lm-eval needs lm_eval, not installed: " + harness.INSTALL
    ], done.stderr[-3000:]
