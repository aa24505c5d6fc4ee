"""The memory allocator as part of the timing environment: what this process runs with, when ``ziplm``
restarts itself under tuned glibc malloc, and that latency tables and provenance record it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_BERT
from ziplm import __main__ as cli
from ziplm.commands import COMMANDS, DEFAULT_COMMAND
from ziplm.config.paths import REPO_ROOT
from ziplm.core.latency import LatencyTable
from ziplm.latency import measure
from ziplm.latency.allocator import (
    REEXEC_MARKER,
    TIMING_COMMANDS,
    TUNED_GLIBC,
    current_allocator,
    interpreter_options,
    reexec_args_for_allocator,
)
from ziplm.latency.cache import cache_path
from ziplm.latency.measure import Environment, environment_fingerprint
from ziplm.models import build_model
from ziplm.report.provenance import provenance

ON_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
TIMING = ["latency", "experiment=smoke"]


# --- current_allocator ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "libc", "expected"),
    [
        ({}, "glibc", "glibc-default"),
        ({"GLIBC_TUNABLES": ""}, "glibc", "glibc-default"),
        ({"GLIBC_TUNABLES": TUNED_GLIBC}, "glibc", "glibc-tuned"),
        ({"GLIBC_TUNABLES": ":".join(reversed(TUNED_GLIBC.split(":")))}, "glibc", "glibc-tuned"),  # any order
        (
            {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4294967295"},
            "glibc",
            "glibc-custom:glibc.malloc.mmap_threshold=4294967295",
        ),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "glibc", "glibc-custom:glibc.malloc.arena_max=2"),
        (
            {"GLIBC_TUNABLES": TUNED_GLIBC.replace("4294967295", "65536", 1)},
            "glibc",
            "glibc-custom:glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=4294967295",
        ),
        (  # the tuned pair plus another setting is a different regime, not "glibc-tuned"
            {"GLIBC_TUNABLES": TUNED_GLIBC + ":glibc.malloc.arena_max=2"},
            "glibc",
            "glibc-custom:glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=4294967295:"
            "glibc.malloc.trim_threshold=4294967295",
        ),
        ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, "glibc", "jemalloc"),
        ({"LD_PRELOAD": "libtcmalloc_minimal.so.4", "GLIBC_TUNABLES": TUNED_GLIBC}, "glibc", "tcmalloc"),
        ({"LD_PRELOAD": "/opt/libgomp.so"}, "glibc", "glibc-default"),  # preloads that are no malloc
        ({}, "", "system"),  # macOS, musl, Windows
        ({"GLIBC_TUNABLES": TUNED_GLIBC}, "", "system"),  # glibc's tunables mean nothing there
    ],
)
def test_current_allocator_reads_the_environment(environ: dict[str, str], libc: str, expected: str) -> None:
    assert current_allocator(environ, libc=libc) == expected


def test_current_allocator_defaults_to_this_process() -> None:
    assert current_allocator() == current_allocator(os.environ)
    if not ON_GLIBC:
        assert current_allocator() == "system"


# --- reexec_args_for_allocator ------------------------------------------------------------------------


def test_a_timing_command_without_an_allocator_choice_restarts_under_tuned_glibc() -> None:
    environ = {"PATH": "/usr/bin", "LD_PRELOAD": "/opt/libgomp.so"}
    env = reexec_args_for_allocator(TIMING, environ, libc="glibc")
    assert env == {**environ, "GLIBC_TUNABLES": TUNED_GLIBC, REEXEC_MARKER: "1"}
    assert current_allocator(env, libc="glibc") == "glibc-tuned"
    assert reexec_args_for_allocator(TIMING, env, libc="glibc") is None  # the restarted process runs as is
    assert environ == {"PATH": "/usr/bin", "LD_PRELOAD": "/opt/libgomp.so"}  # not modified


@pytest.mark.parametrize(
    "environ",
    [
        {REEXEC_MARKER: "1"},  # already restarted: never loop
        {"ZIPLM_ALLOCATOR": "system"},  # the user's opt-out
        {"ZIPLM_ALLOCATOR": "default"},
        {"ZIPLM_ALLOCATOR": " System "},
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},  # the user's own tunables
        {"GLIBC_TUNABLES": TUNED_GLIBC},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},  # the user's own allocator
        {"LD_PRELOAD": "libtcmalloc.so.4"},
    ],
)
def test_a_choice_already_made_is_respected(environ: dict[str, str]) -> None:
    assert reexec_args_for_allocator(TIMING, environ, libc="glibc") is None


def test_no_restart_off_glibc() -> None:
    assert reexec_args_for_allocator(TIMING, {}, libc="") is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["-h"],
        ["run", "--help"],
        ["latency", "experiment=smoke", "-h"],
        ["report", "outputs/multirun/smoke"],
        ["export", "checkpoint=x"],
        ["smoke"],
        ["eval", "checkpoint=x"],
        ["prnue"],  # unknown: main prints the command list
    ],
)
def test_commands_that_time_nothing_are_not_restarted(argv: list[str]) -> None:
    assert reexec_args_for_allocator(argv, {}, libc="glibc") is None


@pytest.mark.parametrize(
    "argv",
    [[], ["experiment=smoke"], ["-m", "seed=0,1"], ["run"], ["prune"], ["latency"], ["serve-bench"], ["compress"]],
)
def test_timing_commands_are_restarted(argv: list[str]) -> None:
    assert reexec_args_for_allocator(argv, {}, libc="glibc") is not None


def test_the_timing_commands_are_commands_and_include_the_default() -> None:
    assert set(COMMANDS) >= TIMING_COMMANDS
    assert DEFAULT_COMMAND in TIMING_COMMANDS  # `_command` in allocator.py names it without importing the table


# --- the entry point ----------------------------------------------------------------------------------


class _Execed(Exception):
    pass


def test_entry_execs_itself_under_tuned_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def execve(path: str, args: list[str], env: dict[str, str]) -> None:
        seen.update(path=path, args=args, env=env)
        raise _Execed

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(sys, "argv", ["ziplm", *TIMING])
    monkeypatch.setattr(sys, "orig_argv", [sys.executable, "-u", "-X", "dev", "-m", "ziplm", *TIMING])
    monkeypatch.setattr(
        "ziplm.latency.allocator.reexec_args_for_allocator",
        lambda argv, environ: {"GLIBC_TUNABLES": TUNED_GLIBC, REEXEC_MARKER: "1"} if argv == TIMING else None,
    )
    with pytest.raises(_Execed):
        cli.entry()
    assert seen["path"] == sys.executable
    assert seen["args"] == [sys.executable, "-u", "-X", "dev", "-m", "ziplm", *TIMING]  # interpreter flags kept
    assert seen["env"] == {"GLIBC_TUNABLES": TUNED_GLIBC, REEXEC_MARKER: "1"}


def test_entry_runs_main_when_no_restart_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail("no exec expected"))
    monkeypatch.setattr(sys, "argv", ["ziplm", "--help"])
    with pytest.raises(SystemExit) as done:
        cli.entry()
    assert done.value.code == 0


# --- recorded: latency fingerprint and provenance -----------------------------------------------------


def test_a_table_from_another_allocator_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(TINY_BERT, "base")
    env = Environment(batch_size=2, seq_length=8)
    tuned = environment_fingerprint(env, model, [4, 0], [64, 0])
    assert tuned["allocator"] == current_allocator()
    monkeypatch.setattr(measure, "current_allocator", lambda: "jemalloc")
    other = environment_fingerprint(env, model, [4, 0], [64, 0])
    assert other["allocator"] == "jemalloc"
    assert cache_path("c", tuned) != cache_path("c", other)  # the cache measures a table of its own
    table = LatencyTable(environment=tuned, base_time=1.0, attention={4: 0.1, 0: 0.0}, ffn={64: 0.2, 0: 0.0})
    assert table.environment_differences(other) == [f'allocator: table="{tuned["allocator"]}" run="jemalloc"']


def test_provenance_records_the_allocator() -> None:
    assert provenance(["run"])["machine"]["allocator"] == current_allocator()


def _latency_allocator(tmp_path: Path, **extra: str) -> str:
    """``python -m ziplm latency`` (smoke, cheap) in a clean environment + `extra`: its table's allocator."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("ZIPLM_")}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", WANDB_MODE="offline", HYDRA_FULL_ERROR="", **extra)
    args = ["latency", "experiment=smoke", "hardware.repetitions=2", "hardware.warmup=0",
            "hardware.max_seconds_per_entry=0.1", f"output_root={tmp_path}"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "ziplm", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    # A busy CPU can make the tiny model's table fail its self-check after it is written; the fingerprint
    # is what is asserted here, and it is in the written table either way.
    assert done.returncode == 0 or "latency table is inconsistent" in done.stderr, done.stderr[-3000:]
    (written,) = (tmp_path / "latency" / "smoke").glob("*/latency_table.json")
    allocator: str = json.loads(written.read_text())["environment"]["allocator"]
    return allocator


@pytest.mark.skipif(not ON_GLIBC, reason="the tuned regime is glibc's")
def test_ziplm_times_under_tuned_glibc_by_default(tmp_path: Path) -> None:
    assert _latency_allocator(tmp_path) == "glibc-tuned"


@pytest.mark.skipif(not ON_GLIBC, reason="the tuned regime is glibc's")
def test_ziplm_allocator_system_times_under_glibc_defaults(tmp_path: Path) -> None:
    assert _latency_allocator(tmp_path, ZIPLM_ALLOCATOR="system") == "glibc-default"


@pytest.mark.parametrize(
    ("orig_argv", "expected"),
    [
        (["python", "-u", "-m", "ziplm", "run"], ["-u"]),
        (["python", "-X", "importtime", "-W", "error", "-m", "ziplm"], ["-X", "importtime", "-W", "error"]),
        (["/venv/bin/python", "/venv/bin/ziplm", "run", "-m"], []),  # console script: its args are not options
        (["python", "-c", "import ziplm"], []),
        ([], []),
    ],
)
def test_interpreter_options_stop_at_the_program(orig_argv: list[str], expected: list[str]) -> None:
    assert interpreter_options(orig_argv) == expected
