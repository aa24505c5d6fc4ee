"""``python -m ziplm``: the command table, dispatch through Hydra, and its error paths."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ziplm.__main__ import _hydra_argv
from ziplm.config.paths import REPO_ROOT
from ziplm.pipelines import COMMANDS, Command


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m ziplm ARGS`` (or ``python -c CODE ARGS``) from the repository root."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": ""}
    head = ["-c", code] if code else ["-m", "ziplm"]
    return subprocess.run(
        [sys.executable, *head, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# Runs `ziplm` with the `run` command pointed at `print`, so dispatch is tested without a pipeline.
PRINT_RUN = textwrap.dedent(
    """
    import dataclasses, sys
    from ziplm import pipelines
    from ziplm.__main__ import main
    pipelines.COMMANDS["run"] = dataclasses.replace(pipelines.COMMANDS["run"], target="builtins:print")
    argv = list(sys.argv)
    main(sys.argv[1:])
    assert sys.argv == argv, "sys.argv restored"
    """
)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command(flag: str) -> None:
    result = _run(flag)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS.values():
        assert command.name in result.stdout and command.help in result.stdout
    assert "[ready]" in result.stdout


def test_help_imports_neither_torch_nor_hydra() -> None:
    code = "import sys; from ziplm.__main__ import main; main(['--help']); "
    code += "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'hydra', 'omegaconf'}))"
    result = _run(code=code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]")


def test_unknown_command_exits_2_with_the_list() -> None:
    result = _run("prnue")
    assert result.returncode == 2
    assert "unknown command 'prnue'" in result.stderr
    assert all(name in result.stderr for name in COMMANDS)


def test_bad_input_is_one_clear_line_without_traceback(tmp_path: Path) -> None:
    result = _run("run", "experiment=smoke", "search.targets=[]", f"output_root={tmp_path}")
    assert result.returncode == 1
    assert "error: ValueError: schedule 'oneshot' has an empty target list" in result.stderr
    assert "Traceback" not in result.stderr


NOT_READY_RUN = textwrap.dedent(
    """
    import dataclasses, sys, types
    from ziplm import pipelines
    from ziplm.__main__ import main
    def planned(cfg):
        raise pipelines.CommandNotReadyError("ziplm run is not implemented yet (issue 99: later)")
    sys.modules["planned_mod"] = types.SimpleNamespace(planned=planned)
    pipelines.COMMANDS["run"] = dataclasses.replace(pipelines.COMMANDS["run"], target="planned_mod:planned", issue=99)
    main(sys.argv[1:])
    """
)


def test_a_planned_command_exits_1_with_one_clear_line(tmp_path: Path) -> None:
    result = _run("run", "experiment=smoke", f"output_root={tmp_path}", code=NOT_READY_RUN)
    assert result.returncode == 1, result.stderr
    assert "error: ziplm run is not implemented yet (issue 99" in result.stderr
    assert "Traceback" not in result.stderr
    assert Command("x", "m:f", "h", issue=99).status == "planned (issue 99)"


def test_every_command_target_imports() -> None:
    for command in COMMANDS.values():
        assert callable(command.load()), command.name


@pytest.mark.parametrize(("args", "command"), [([], "run"), (["prune"], "prune")])
def test_cfg_job_prints_the_config_and_runs_nothing(tmp_path: Path, args: list[str], command: str) -> None:
    result = _run(*args, "experiment=smoke", "--cfg", "job", f"output_root={tmp_path}")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert (cfg["command"], cfg["name"], cfg["model"]["name"]) == (command, "smoke", "tiny-bert")
    assert not any(tmp_path.iterdir()), "--cfg job must not create a run directory"


def test_dispatch_passes_the_composed_config(tmp_path: Path) -> None:
    result = _run("run", "experiment=smoke", f"output_root={tmp_path}", code=PRINT_RUN)
    assert result.returncode == 0, result.stderr
    assert "'command': 'run'" in result.stdout and "'name': 'smoke'" in result.stdout
    (run_dir,) = (tmp_path / "run" / "smoke").iterdir()
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_multirun_passes_through(tmp_path: Path) -> None:
    result = _run("-m", "experiment=smoke", "hardware=cpu,cpu-latency", f"output_root={tmp_path}", code=PRINT_RUN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("'command': 'run'") == 2
    (sweep_dir,) = (tmp_path / "multirun" / "smoke").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]


def test_hydra_argv_puts_flags_first_and_command_last() -> None:
    argv = _hydra_argv(COMMANDS["eval"], ["a=1", "--cfg", "job", "~b", "-m", "+c=2", "command=x"])
    assert argv == ["ziplm eval", "--cfg", "job", "-m", "a=1", "~b", "+c=2", "command=x", "command=eval"]
