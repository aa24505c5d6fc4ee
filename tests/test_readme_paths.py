"""Every user path of README.md and experiments/README.md is a test, through the real CLI.

Every ``ziplm …`` command written in those files (bash code blocks and table cells) has exactly one entry
in ``PATHS``, saying how it is tested by ``python -m ziplm`` (``HF_HUB_OFFLINE=1``, ``WANDB_MODE=offline``,
an empty Hugging Face cache, no fakes):

- ``run``: it runs here, offline, at tiny scale: the README's own arguments (placeholders such as
  ``<family/2x>`` filled with a member of the smoke family built once per module), then ``append``
  (tiny-scale / CPU overrides), then ``output_root`` / ``cache_dir``. It must exit 0 and write what it
  promises (``results.md`` and members that ``load_pruned`` reloads, ``eval.json``, ``model.onnx`` ...).
- ``hub``: it needs the Hub (weights or data). The README line composes (``--cfg job``); run with
  ``append`` (a CPU profile for GPU presets) it reaches the loader and exits 1 with one ``error:`` line
  saying that the weights or data cannot be reached offline and how to give local ones.
- ``compose``: it needs what no test machine has (a SLURM cluster): it only composes.

The README's "your own data" lines read small csv / SQuAD json / text files written into the working
folder. A README command without an entry, or an entry whose command left the README, fails
``test_every_readme_command_has_one_entry``. Slow entries (``pytest -m slow``): the MiniLM / BBC News main
job and its presets, the GPT-2 miniature and the LM-from-text run, the torch.compile and ONNX Runtime
engines, the sweeps but one, the joblib launcher, and second runs of a command the default run covers.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "experiments/README.md")


def ziplm(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """``python -m ziplm ARGS`` in `cwd`, offline, with an empty Hugging Face cache of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("ZIPLM_CACHE", "HYDRA_FULL_ERROR")}
    env |= {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "HF_HOME": str(cwd / "hf")}
    return subprocess.run(
        [sys.executable, "-m", "ziplm", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# --- the commands the READMEs show -----------------------------------------------------------------------


def _logical_lines(block: str) -> list[tuple[int, str]]:
    """(line offset, line) with backslash continuations joined."""
    lines, held, first = [], "", 0
    for i, line in enumerate(block.split("\n")):
        first = first if held else i
        if line.rstrip().endswith("\\"):
            held += line.rstrip()[:-1] + " "
            continue
        lines.append((first, held + line))
        held = ""
    return lines


@cache
def readme_commands() -> dict[str, tuple[str, ...]]:
    """Each ``ziplm …`` command (whitespace normalised) → where it is written, e.g. ``README.md:67``."""
    found: dict[str, list[str]] = defaultdict(list)
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
            start = text.count("\n", 0, block.start(1)) + 1
            for offset, line in _logical_lines(block.group(1)):
                code = re.sub(r"\s+#.*$", "", line).strip()  # a trailing comment
                if match := re.search(r"(?:^|&&\s*)(ziplm(?:\s.*)?)$", code):
                    found[" ".join(match.group(1).split())].append(f"{doc}:{start + offset}")
        for number, line in enumerate(text.splitlines(), 1):
            if line.lstrip().startswith("|"):
                for match in re.finditer(r"`(ziplm(?: [^`]*)?)`", line):
                    found[" ".join(match.group(1).split())].append(f"{doc}:{number}")
    return {command: tuple(where) for command, where in found.items()}


# --- how each one is tested --------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserPath:
    command: str  # as the README writes it
    how: str  # run | hub | compose
    append: tuple[str, ...] = ()
    fill: tuple[tuple[str, str], ...] = ()  # README placeholder → value ({member}, {sweep}, {work} formatted)
    check: str = "family"  # run: what it must have written (CHECKS)
    slow: bool = False
    own_outputs: bool = True  # append output_root=<its own folder> and the shared cache_dir


def run(command: str, *append: str, check: str = "family", slow: bool = False, fill: Any = None) -> UserPath:
    return UserPath(command, "run", append, tuple((fill or {}).items()), check, slow)


def hub(command: str, *append: str, fill: Any = None) -> UserPath:
    return UserPath(command, "hub", append, tuple((fill or {}).items()))


M, SWEEP, EMB = "{member}", "{sweep}", "{embedder}"
OWN_TEXT = "ziplm run experiment=minilm-embedding-family task.data_files.train=my.txt"
F2X, MEM = {"<family/2x>": M}, {"<member>": M}
DECODER = {"<member>": "{decoder}"}  # a member of `ziplm run experiment=smoke model=llama-mini task=tiny-lm`
# Smaller than `experiment=smoke` where it costs nothing to check: one target, two timing rounds per member.
FAST = ("search.targets=[1.5]", "search.speedup_rounds=2")
SMOKE = ("experiment=smoke", *FAST)  # the main job's choices that a README line leaves, at smoke scale
ON_MEMBER = ("task=tiny-cls", "hardware.batch_size=4", "hardware.seq_length=32", "search.speedup_rounds=2")
OBS = (*ON_MEMBER, "compression.calibration_samples=16")
SERVE = ("serve.requests=16", "serve.warmup=1", "serve.rounds=2", "serve.seq_length=16")
# The main job (MiniLM on BBC News) itself, shrunk: ~2 min on 2 cores.
MINILM = (
    *FAST, "task.max_train_samples=64", "task.max_eval_samples=32", "task.max_seq_length=32",
    "teacher.epochs=0.5", "pruner.calibration_samples=16", "search.spdy_random_starts=1",
    "search.spdy_local_steps=1", "search.spdy_loss_samples=16", "hardware.batch_size=4",
    "hardware.seq_length=32", "hardware.warmup=0", "hardware.repetitions=2", "hardware.max_seconds_per_entry=1",
    "trainer.batch_size=16", "trainer.eval_batch_size=32",
)  # fmt: skip
GPT2_MINI = (*MINILM, "task.max_eval_samples=4", "task.stride=32", "teacher.epochs=0.02",
             "distill.epochs_per_stage=0.02")  # fmt: skip
# tiny-gpt2's 50257-token head outweighs its layers (at most ~1.2x reachable): the offline GPT-2 miniature
LM = ("model=gpt2-mini", *SMOKE, "task.max_seq_length=64", "task.stride=64", "hardware.batch_size=4",
      "hardware.seq_length=32")  # fmt: skip
GPU = ("hardware=cpu", "trainer=cpu", "logger=none")  # what a GPU preset needs to reach the loader here
EXPORT = {"<member>": M, "<dir>": "{work}/exported"}

# fmt: off
PATHS: tuple[UserPath, ...] = (
    # README: quickstart, commands table, examples
    run("ziplm", *MINILM, slow=True),
    run("ziplm run", *SMOKE, slow=True),  # "as `ziplm run` does" (benchmarks table)
    run("ziplm eval checkpoint=<family/2x> task=…", check="eval", fill={**F2X, "task=…": "task=tiny-cls"}),
    run("ziplm report <dir>", check="report", fill={"<dir>": "outputs/run/smoke"}),
    run("ziplm report outputs logger=none", check="report"),
    run("ziplm report outputs/multirun/minilm-bbc-baselines/<time>", check="report",
        fill={"outputs/multirun/minilm-bbc-baselines/<time>": SWEEP}),
    run("ziplm report outputs/multirun/smoke/<time> report.publish=experiments/results/smoke", check="report",
        fill={"outputs/multirun/smoke/<time>": SWEEP, "experiments/results/smoke": "{work}/published"}),
    run("ziplm latency checkpoint=[<hf folder>,<family/2x>]", "experiment=smoke", "search.speedup_rounds=2",
        check="compare", fill={**F2X, "<hf folder>": "packaged:minilm"}),  # a plain HF folder (BertModel)
    run("ziplm serve-bench checkpoint=<hf folder>", *SERVE, check="serve", fill={"<hf folder>": "packaged:minilm"}),
    run("ziplm export checkpoint=<family/2x> [export.formats=[onnx,hf]]", check="export", slow=True,
        fill={**F2X, "[export.formats=[onnx,hf]]": "export.formats=[onnx,hf]"}),
    # needs an embedding member (minilm-embedding-family); the export itself is tested in tests/deploy
    run("ziplm export checkpoint=<family/2x> 'export.formats=[sentence-transformers]'", check="export", slow=True,
        fill={**F2X, "'export.formats=[sentence-transformers]'": "export.formats=[sentence-transformers]"}),
    run("ziplm export checkpoint=outputs/run/default/<time>/family/2x", check="export", slow=True,
        fill={"outputs/run/default/<time>/family/2x": M}),
    run("ziplm export checkpoint=<member> export.formats=[onnx,hf] export.output=<dir>", check="export", fill=EXPORT),
    run("ziplm compress checkpoint=<family/2x> compression=obs50-int8", *OBS, check="compress", fill=F2X),
    run("ziplm compress checkpoint=<member> compression=obs50-int8", *OBS, check="compress", slow=True, fill=MEM),
    run("ziplm compress", f"checkpoint={M}", *ON_MEMBER, check="compress", slow=True),  # configuration table
    run("ziplm serve-bench checkpoint=<family/2x>", *SERVE, check="serve", slow=True, fill=F2X),
    run("ziplm serve-bench checkpoint=<member> serve.concurrency=4 serve.requests=200", *SERVE, check="serve",
        fill=MEM),
    UserPath("ziplm run experiment=smoke", "run", own_outputs=False),  # builds the member the others use
    run("ziplm run schedule=gradual search.targets=[2,3,4]", *SMOKE, "search.targets=[1.5,2]"),
    hub("ziplm run model=bert-base task=squad hardware=a100 schedule=gradual", *GPU),
    hub("ziplm latency model=bert-base hardware=cpu-latency"),
    run("ziplm run -m pruner.damp=0.001,0.01,0.1", *SMOKE, slow=True),
    run("ziplm run --cfg job", check="config"),
    # README: your own data (files written by Runner), devices and precision
    run("ziplm run task=sst2 task.num_labels=5 'task.data_files={train: my.csv, validation: dev.csv}'", *SMOKE),
    run("ziplm run task=sst2 task.text_keys=[text] task.data_files.train=my.csv task.data_files.validation=dev.csv",
        *SMOKE),
    run("ziplm run task=squad 'task.data_files={train: train.json, validation: dev.json}'", *SMOKE,
        "task.max_seq_length=64", "task.doc_stride=16"),
    run("ziplm run model=gpt2 task=wikitext2 'task.data_files={train: train.txt, test: test.txt}'", *LM, slow=True),
    run("ziplm run experiment=smoke hardware=cpu-bf16 trainer.precision=bf16-mixed schedule=gradual", *FAST),
    hub("ziplm run model=bert-base task=squad hardware=v100 trainer=gpu schedule=gradual", *GPU),
    run("ziplm run experiment=smoke trainer=ddp-cpu", *FAST),
    # README: Llama-family and OPT decoders
    run("ziplm run experiment=smoke model=llama-mini task=tiny-lm", *FAST),
    hub("ziplm run model=llama-3-8b task=wikitext2 hardware=a100 pruner.calibration=layerwise", *GPU),
    hub("ziplm eval checkpoint=distilbert-base-uncased-finetuned-sst-2-english task=sst2"),
    # README: lm-evaluation-harness, on a member of the offline Llama miniature above
    hub("ziplm eval checkpoint=<member> eval=lm-eval 'eval.tasks=[hellaswag]' eval.num_fewshot=0",
        fill=DECODER),
    run("ziplm eval checkpoint=<member> eval=lm-eval task=wiki-excerpt", "task.max_eval_samples=2", check="eval",
        fill=DECODER),
    run("ziplm eval checkpoint=<member> eval=lm-eval 'eval.tasks=[my_task]' eval.include_path=my_tasks",
        check="eval", fill=DECODER),
    # Reproduce the paper (both READMEs)
    hub("ziplm run experiment=bert-base-squad-gradual", *GPU),
    hub("ziplm run -m experiment=bert-base-glue-gradual task=sst2,qnli,mnli,qqp", *GPU),
    hub("ziplm run experiment=bert-base-glue-gradual", *GPU),
    hub("ziplm run experiment=bert-large-squad", *GPU),
    hub("ziplm run experiment=gpt2-zipgpt2", *GPU),
    hub("ziplm eval checkpoint=<member> task=wikitext103", fill=DECODER),  # a causal-LM member: the data is what fails
    hub("ziplm run experiment=bert-base-oneshot", *GPU),
    run("ziplm run experiment=minilm-bbc-family", *MINILM, slow=True),
    run("ziplm run experiment=minilm-embedding-family", *MINILM, slow=True),
    run(OWN_TEXT, "model=tiny-bert", *MINILM),  # builds the embedding member the next line scores
    run("ziplm run experiment=minilm-embedding-family task.retrieval=bbc-headlines", "model=tiny-bert", *MINILM,
        "task.retrieval_max_queries=4"),  # the offline retrieval set, built from BBC News, scored on a tiny model
    run("ziplm eval checkpoint=<family/2x> task=embed-bbc", "model=tiny-bert", "task.max_eval_samples=32",
        "task.max_seq_length=32", check="eval", fill={"<family/2x>": EMB}),
    run("ziplm run -m experiment=minilm-bbc-baselines", *MINILM, "logger=none", slow=True),
    run("ziplm run experiment=minilm-bbc-students", *MINILM, slow=True),
    # needs the students' exported folders: the whole chain is tests/pipelines/test_students_chain.py
    UserPath("ziplm run experiment=minilm-bbc-vs-students", "compose"),
    run("ziplm run experiment=gpt2-mini-wiki", *GPT2_MINI, slow=True),
    run("ziplm run experiment=gpt2-mini-wiki pruner.method=layerdrop", *GPT2_MINI, slow=True),
    run("ziplm run experiment=llama-mini-wiki", *GPT2_MINI, slow=True),
    run("ziplm run experiment=llama-mini-wiki pruner.method=blockdrop", *GPT2_MINI, slow=True),
    # Sweeps and launchers
    run("ziplm run -m experiment=smoke seed=0,1,2", *FAST),  # the sweep the report above reads
    run("ziplm run -m hydra/launcher=joblib hydra.launcher.n_jobs=2 hardware.threads=1 experiment=smoke seed=0,1",
        *FAST, slow=True),
    UserPath("ziplm run -m hydra/launcher=submitit_slurm hydra.launcher.partition=<partition> "
             "experiment=bert-base-squad-gradual pruner.method=obs,magnitude",
             "compose", fill=(("<partition>", "gpu"),)),  # needs a SLURM cluster (sbatch) with GPUs
    # Deployment; experiments/README.md "Running"
    run("ziplm latency hardware=cpu-onnxruntime", "experiment=smoke", check="latency", slow=True),
    run("ziplm run hardware=cpu-compile", *SMOKE, slow=True),
    run("ziplm run experiment=smoke --cfg job", check="config"),
    run("ziplm run -m experiment=smoke pruner.damp=0.001,0.01,0.1", *FAST, slow=True),
)
# fmt: on
BY_COMMAND = {p.command: p for p in PATHS}


def test_every_readme_command_has_one_entry() -> None:
    documented = readme_commands()
    assert len(documented) >= 30, f"the extraction lost commands: {sorted(documented)}"
    doubled = [c for c, n in Counter(p.command for p in PATHS).items() if n > 1]
    assert not doubled, f"commands with more than one entry in PATHS: {doubled}"
    missing = {c: w for c, w in documented.items() if c not in BY_COMMAND}
    assert not missing, f"README commands without an entry in PATHS (add one: run / hub / compose): {missing}"
    stale = sorted(set(BY_COMMAND) - set(documented))
    assert not stale, f"PATHS entries no README shows any more: {stale}"


def test_extraction_reads_blocks_tables_and_continuations() -> None:
    documented = readme_commands()
    assert "ziplm" in documented, "the quickstart's `... && ziplm`"
    assert any(w.startswith("experiments/README.md") for w in documented["ziplm run experiment=smoke"])
    assert "ziplm eval checkpoint=<member> task=wikitext103" in documented, "a table cell"
    assert any("submitit_slurm" in c and c.endswith("pruner.method=obs,magnitude") for c in documented)
    assert not any("#" in c for c in documented), "trailing comments are not part of a command"


# --- running them ------------------------------------------------------------------------------------------


def write_data_files(folder: Path) -> None:
    """The local files of README's "your own data" lines: csv, SQuAD json (a list; json lines), plain text."""
    rows = [
        f"{'a great' if i % 2 else 'a dull'} film {i},{'loved' if i % 2 else 'hated'} it {i},{i % 2}" for i in range(96)
    ]
    (folder / "my.csv").write_text("\n".join(["sentence,text,label", *rows[:64]]) + "\n")
    (folder / "dev.csv").write_text("\n".join(["sentence,text,label", *rows[64:]]) + "\n")
    squad = []
    for i in range(64):
        name, city = ("Ada", "Bob", "Cyd", "Dee")[i % 4], ("Paris", "Rome", "Oslo", "Bern", "Riga")[i % 5]
        context = f"{name} was born in {city} and later moved to the coast to work as a baker, story {i}."
        answers = {"text": [city], "answer_start": [context.index(city)]}
        squad.append({"id": str(i), "title": name, "context": context, "question": f"Where was {name} born?",
                      "answers": answers})  # fmt: skip
    (folder / "train.json").write_text(json.dumps(squad[:48]))
    (folder / "dev.json").write_text("".join(json.dumps(row) + "\n" for row in squad[48:]))
    words = ("the", "river", "city", "king", "war", "film", "book", "of", "and", "was", "in", "a", "game")
    text = [" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(8 + i % 13)) + " ." for i in range(400)]
    (folder / "train.txt").write_text("\n".join(text[:320]) + "\n")
    (folder / "test.txt").write_text("\n".join(text[320:]) + "\n")
    # An lm-eval task of one's own (eval.include_path=my_tasks): multiple choice on local JSON lines.
    (folder / "my_tasks").mkdir()
    rows = [{"question": f"{w} is a", "choices": ["word", "number"], "label": 0} for w in words[:6]]
    (folder / "my_tasks" / "my_task.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "my_tasks" / "my_task.yaml").write_text(
        "task: my_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: my_tasks/my_task.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\n"
    )
    (folder / "my.txt").write_text("\n".join(f"{line} number {i}" for i, line in enumerate(text)) + "\n")


class Runner:
    """Runs README commands in one working folder; the smoke family and sweep they refer to are built once."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.results: dict[str, tuple[list[str], subprocess.CompletedProcess[str]]] = {}
        write_data_files(work)

    def out(self, path: UserPath) -> Path:
        return self.work / "runs" / str(PATHS.index(path)) if path.own_outputs else self.work / "outputs"

    def argv(self, path: UserPath) -> list[str]:
        values = {"member": self.member() if M in str(path) else "", "work": str(self.work)}
        values["decoder"] = self.decoder() if "{decoder}" in str(path) else ""
        values["sweep"] = str(self.sweep()) if SWEEP in str(path) else ""
        values["embedder"] = self.embedder() if EMB in str(path) else ""
        command = path.command
        for placeholder, value in path.fill:
            command = command.replace(placeholder, value.format(**values))
        args = shlex.split(command)[1:] + [a.format(**values) for a in path.append]
        if path.own_outputs:
            args += [f"output_root={self.out(path)}", "cache_dir=outputs/cache"]
        return args

    def result(self, command: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        if command not in self.results:
            argv = self.argv(BY_COMMAND[command])
            self.results[command] = argv, ziplm(argv, self.work)
        return self.results[command]

    def member(self) -> str:
        _, done = self.result("ziplm run experiment=smoke")
        assert done.returncode == 0, done.stderr[-3000:]
        (member,) = (self.work / "outputs" / "run" / "smoke").glob("*/family/2x")
        return str(member.relative_to(self.work))

    def decoder(self) -> str:
        """A member of the offline Llama miniature (the README's decoder line), for the lm-eval lines."""
        path = BY_COMMAND["ziplm run experiment=smoke model=llama-mini task=tiny-lm"]
        _, done = self.result(path.command)
        assert done.returncode == 0, done.stderr[-3000:]
        member = sorted((self.out(path) / "run" / "smoke").glob("*/family/*x"))[-1]
        return str(member.relative_to(self.work))

    def embedder(self) -> str:
        """A member of the label-free embedding family (README's own-text line), for ``ziplm eval``."""
        _, done = self.result(OWN_TEXT)
        assert done.returncode == 0, done.stderr[-3000:]
        (member,) = self.out(BY_COMMAND[OWN_TEXT]).glob("run/*/*/family/*x")
        return str(member)

    def sweep(self) -> Path:
        path = BY_COMMAND["ziplm run -m experiment=smoke seed=0,1,2"]
        _, done = self.result(path.command)
        assert done.returncode == 0, done.stderr[-3000:]
        (folder,) = (self.out(path) / "multirun" / "smoke").iterdir()
        return folder


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(tmp_path_factory.mktemp("readme"))


def _reload(member: Path) -> None:
    from ziplm.models import load_pruned

    assert sum(p.numel() for p in load_pruned(member).parameters()) > 0


def _check_family(runner: Runner, path: UserPath, argv: list[str], done: Any) -> None:
    out = runner.out(path)
    reports = sorted(out.rglob("results.md"))
    assert reports, f"no results.md under {out}"
    for report in reports:
        members = sorted(report.parent.glob("family/*x"))
        assert members, f"{report.parent} has no family member"
        for member in members:
            _reload(member)
    if "-m" in argv:  # the jobs its comma lists ask for (a preset's own sweeper params: at least one) + sweep.md
        lists = [a.split("=", 1)[1] for a in shlex.split(path.command) if "=" in a and "[" not in a]
        assert len(reports) >= math.prod(v.count(",") + 1 for v in lists) and list(out.rglob("sweep.md"))


def _check_config(runner: Runner, path: UserPath, argv: list[str], done: Any) -> None:
    cfg = yaml.safe_load(done.stdout)
    assert cfg["command"] == "run" and cfg["model"]["name"] and cfg["task"]["name"]
    assert not runner.out(path).exists(), "--cfg job must run nothing"


def _check_export(runner: Runner, path: UserPath, argv: list[str], done: Any) -> None:
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    folder = runner.work / options.get("export.output", f"{options['checkpoint']}/export")
    record = json.loads((folder / "export.json").read_text())
    assert "model.onnx" in record["files"] and all((folder / f).is_file() for f in record["files"])
    if "hf" in record["formats"]:
        _reload(folder / "hf")


def _check_report(runner: Runner, path: UserPath, argv: list[str], done: Any) -> None:
    folder = runner.work / next(a for a in argv if "=" not in a and not a.startswith("-") and a != "report")
    assert (folder / "sweep.md").is_file() and (folder / "sweep.csv").is_file()


def _written(name: str) -> Any:
    return lambda runner, path, argv, done: len(list(runner.out(path).rglob(name))) == 1 or pytest.fail(name)


CHECKS = {"family": _check_family, "config": _check_config, "export": _check_export, "report": _check_report}
CHECKS |= {"eval": _written("eval.json"), "compress": _written("compression.json")}
CHECKS |= {"serve": _written("serve_bench.json"), "latency": _written("latency_table.json")}
CHECKS |= {"compare": _written("latency_compare.json")}


def _param(path: UserPath) -> Any:
    return pytest.param(path, id=path.command, marks=[pytest.mark.slow] if path.slow else [])


@pytest.mark.parametrize("path", [_param(p) for p in PATHS if p.how == "run"])
def test_offline_command_runs_at_tiny_scale(runner: Runner, path: UserPath) -> None:
    if path.check == "report":
        runner.member()  # a run to report on
    argv, done = runner.result(path.command)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"ziplm {shlex.join(argv)}\n{done.stderr[-4000:]}"
    CHECKS[path.check](runner, path, argv, done)


def _compose_variants(argv: list[str]) -> list[list[str]]:
    """The README line as single-run ``--cfg`` calls: ``-m`` dropped, comma lists expanded."""
    args = [a for a in argv if a != "-m" and not a.startswith(("output_root=", "cache_dir="))]
    choices = [[a] if "," not in a or "{" in a else [a.split("=")[0] + "=" + v for v in a.split("=")[1].split(",")]
               for a in args]  # fmt: skip
    return [list(c) for c in itertools.product(*choices)]


@pytest.fixture(scope="module")
def hub_runs(runner: Runner) -> dict[str, Any]:
    """Every hub / compose path at once (two at a time: they only import and compose)."""
    jobs: dict[str, list[list[str]]] = {}
    for path in PATHS:
        if path.how in ("hub", "compose"):
            readme = runner.argv(UserPath(path.command, "run", fill=path.fill, own_outputs=False))
            jobs[path.command] = [[v[0], "--cfg", "all", *v[1:]] for v in _compose_variants(readme)]
            if path.how == "hub":
                jobs[path.command].append(runner.argv(path))
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {c: [pool.submit(ziplm, argv, runner.work) for argv in runs] for c, runs in jobs.items()}
        return {c: [(argv, f.result()) for argv, f in zip(jobs[c], fs, strict=True)] for c, fs in futures.items()}


@pytest.mark.parametrize("path", [_param(p) for p in PATHS if p.how in ("hub", "compose")])
def test_hub_command_composes_and_fails_with_one_clear_line(hub_runs: dict[str, Any], path: UserPath) -> None:
    runs = hub_runs[path.command]
    compose_runs = runs[:-1] if path.how == "hub" else runs
    for argv, done in compose_runs:
        assert done.returncode == 0, f"ziplm {shlex.join(argv)} does not compose:\n{done.stderr[-3000:]}"
        cfg = yaml.safe_load(done.stdout)
        assert cfg["command"] == argv[0] and cfg["name"]
        if "hydra/launcher=submitit_slurm" in argv:
            assert cfg["hydra"]["launcher"]["_target_"].endswith("SlurmLauncher")
    if path.how == "compose":
        return
    argv, done = runs[-1]
    where = f"ziplm {shlex.join(argv)}\n{done.stderr[-3000:]}"
    assert done.returncode == 1 and "Traceback" not in done.stderr, where
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors and (len(errors) == 1 or "-m" in argv), where
    for line in errors:
        assert "cannot be reached offline" in line, where
        assert "=<local folder>" in line or "task.data_files=" in line, where
    if "-m" not in argv:
        assert done.stderr.strip() == errors[0], f"more than the one line on stderr:\n{where}"
