"""Old ``schedule.<key>`` spellings: rewritten on the command line with a note, one error line in YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ziplm.__main__ import _hydra_argv
from ziplm.commands import COMMANDS
from ziplm.config.migrate import MOVED, compose_error_hint, rewrite_override, rewrite_overrides
from ziplm.config.paths import REPO_ROOT, compose

# A value each old key accepts (and validates), so old and new spellings can be composed side by side.
VALUES = {
    "method": "magnitude", "damp": "0.02", "calibration_samples": "64", "ffn_group_size": "2",
    "ffn_grid_ratio": "0.8", "ffn_round_to": "2", "targets": "[1.5,2.5]", "spdy_random_starts": "3",
    "spdy_local_steps": "4", "spdy_loss_samples": "8", "speedup_rounds": "5", "speedup_tolerance": "0.05",
    "speedup_corrections": "1", "epochs_per_stage": "1", "learning_rate": "1e-4", "distill_task": "0.5",
    "distill_logit": "0.5", "distill_token": "0.25", "distill_temperature": "3.0", "teacher_epochs": "2",
    "teacher_learning_rate": "2e-5",
}  # fmt: skip


def test_every_old_key_has_a_new_place_and_a_test_value() -> None:
    assert set(MOVED) == set(VALUES)
    assert {new.split(".")[0] for new in MOVED.values()} == {"pruner", "search", "distill", "teacher"}


@pytest.mark.parametrize("key", sorted(MOVED))
def test_every_old_key_is_rewritten_and_composes_like_the_new_one(key: str) -> None:
    old = f"schedule.{key}={VALUES[key]}"
    new, note = rewrite_override(old)
    assert new == f"{MOVED[key]}={VALUES[key]}"
    assert note == f"note: schedule.{key} is now {MOVED[key]} (rewritten; use the new name)"
    rewritten = OmegaConf.to_container(compose(["experiment=smoke", new]), resolve=True)
    direct = OmegaConf.to_container(compose(["experiment=smoke", f"{MOVED[key]}={VALUES[key]}"]), resolve=True)
    assert rewritten == direct
    group, _, field = MOVED[key].partition(".")
    assert rewritten != OmegaConf.to_container(compose(["experiment=smoke"]), resolve=True)  # it took effect
    assert field in direct[group]  # type: ignore[index]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("+schedule.damp=0.1", "+pruner.damp=0.1"),
        ("++schedule.distill_logit=2", "++distill.logit=2"),
        ("~schedule.teacher_epochs", "~teacher.epochs"),
        ("schedule.damp=0.001,0.01", "pruner.damp=0.001,0.01"),  # a sweep keeps its values
        ("schedule.method=obs,magnitude", "pruner.method=obs,magnitude"),
    ],
)
def test_prefixes_and_sweep_values_are_kept(arg: str, expected: str) -> None:
    assert rewrite_override(arg)[0] == expected


@pytest.mark.parametrize("arg", ["schedule=gradual", "schedule.name=gradual", "schedule.member_dtype=bfloat16",
                                 "pruner.damp=0.1", "task.name=schedule.damp", "-m", "--cfg"])  # fmt: skip
def test_current_keys_and_flags_pass_unchanged(arg: str) -> None:
    assert rewrite_override(arg) == (arg, None)


def test_the_cli_argv_is_rewritten_with_one_note_per_rewrite(capsys: pytest.CaptureFixture[str]) -> None:
    argv = _hydra_argv(COMMANDS["run"], ["-m", "schedule.damp=0.001,0.01", "schedule=gradual", "schedule.targets=[2]"])
    assert argv[1:] == ["-m", "pruner.damp=0.001,0.01", "schedule=gradual", "search.targets=[2]", "command=run"]
    assert capsys.readouterr().err.splitlines() == [
        "note: schedule.damp is now pruner.damp (rewritten; use the new name)",
        "note: schedule.targets is now search.targets (rewritten; use the new name)",
    ]
    assert rewrite_overrides(["a=1"]) == (["a=1"], [])


def test_compose_error_hint_names_the_new_place() -> None:
    hint = compose_error_hint("Error merging 'experiment/x'\nKey 'distill_logit' not in 'ScheduleConfig'")
    assert hint is not None and "schedule.distill_logit" in hint and "distill.logit" in hint
    assert compose_error_hint("Key 'hiden_size' not in 'ModelSchema'") is None
    assert compose_error_hint("Key 'nonsense' not in 'ScheduleConfig'") is None


def _cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "ziplm", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_cli_rewrites_old_overrides_and_composes_the_new_keys() -> None:
    result = _cli("run", "experiment=smoke", "schedule.damp=0.02", "schedule.teacher_epochs=3", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "note: schedule.damp is now pruner.damp (rewritten; use the new name)" in result.stderr
    assert "note: schedule.teacher_epochs is now teacher.epochs (rewritten; use the new name)" in result.stderr
    cfg = OmegaConf.create(result.stdout)
    assert (cfg.pruner.damp, cfg.teacher.epochs) == (0.02, 3.0)


def test_an_old_key_in_a_yaml_preset_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nschedule:\n  damp: 0.02\n")
    result = _cli("run", "--config-dir", str(tmp_path), "experiment=mine", "--cfg", "job")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: schedule.damp is no longer a schedule setting: it is now pruner.damp")
