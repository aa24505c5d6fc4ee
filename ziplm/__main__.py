"""``python -m ziplm <command> [hydra overrides]`` and the ``ziplm`` console script.

The first argument picks a command from :data:`ziplm.commands.COMMANDS` (none: ``run``). Everything
after it goes to Hydra unchanged (overrides, ``-m/--multirun``, ``--cfg job``, ``--help``) plus
``command=<name>``, and the command's pipeline function receives the composed config.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ziplm.commands import COMMANDS, DEFAULT_COMMAND, INVOCATION, Command, CommandNotReadyError, format_command_table

USAGE = "usage: ziplm [<command>] [key=value ...] [-m|--multirun] [--cfg job] [--help]"
EPILOG = """\
With no command, `ziplm` runs `run`. After a command, arguments are Hydra's:
  ziplm run experiment=smoke              run a preset from experiments/
  ziplm run experiment=smoke --cfg job    print the composed config, run nothing
  ziplm run -m pruner.damp=0.001,0.01     a sweep, written under outputs/multirun/
  ziplm report outputs/multirun/smoke     sweep.md, sweep.csv and Pareto plots of every run there
  ziplm run --help                        config groups and their options
Set HYDRA_FULL_ERROR=1 for full tracebacks."""


def _is_override(arg: str) -> bool:
    """``key=value``, ``+key=value`` or ``~key``: a Hydra override rather than a flag or its value."""
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def _hydra_argv(command: Command, args: list[str]) -> list[str]:
    """Hydra's argv: flags (with their values) first, then the overrides, then ``command=<name>``.

    Hydra's argparse accepts overrides only as one unbroken run of positionals
    (``a=1 --cfg job b=2`` is an error there); regrouping them lets flags go anywhere, and putting
    ``command=<name>`` last makes it win over a stray user ``command=``.
    """
    from ziplm.config.migrate import rewrite_overrides

    flags = [arg for arg in args if not _is_override(arg)]
    overrides, notes = rewrite_overrides([arg for arg in args if _is_override(arg)])
    for line in notes:  # old schedule.<key> spellings (the schedule group was split up)
        print(line, file=sys.stderr)
    return [f"ziplm {command.name}", *flags, *overrides, f"command={command.name}"]


@contextlib.contextmanager
def _old_keys_as_one_line() -> Iterator[None]:
    """An old ``schedule.<key>`` in a YAML preset fails composing: say in one line where it went.

    Hydra prints composition errors itself (inside ``run_and_report``), so its reporter is wrapped for
    the call; every other error is left to it unchanged.
    """
    from hydra._internal import utils as hydra_utils
    from hydra.errors import ConfigCompositionException

    from ziplm.config.migrate import compose_error_hint

    original = hydra_utils.run_and_report

    def run_and_report(func: Any) -> Any:
        def checked() -> Any:
            try:
                return func()
            except ConfigCompositionException as err:
                hint = compose_error_hint(f"{err}\n{err.__cause__}")
                if hint is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: {hint}", file=sys.stderr)
                raise SystemExit(1) from None

        return original(checked)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def _report_args(args: list[str]) -> list[str]:
    """``ziplm report <dir> ...``: a first positional that is no override or flag is ``report.dir=<dir>``."""
    if args and not args[0].startswith("-") and not _is_override(args[0]):
        return [f"report.dir={args[0]}", *args[1:]]
    return args


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _record_failed_job(err: Exception) -> None:
    """A sweep job that raised: ``FAILED`` (error + traceback) in its folder, one line on stderr, no abort.

    Hydra would stop the sweep (SystemExit) or skip the end-of-sweep callbacks (exceptions); recording
    the failure instead lets the other jobs run and the sweep report list this one with its reason.
    """
    from hydra.core.hydra_config import HydraConfig

    from ziplm.report.sweep import write_failure

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    marker = write_failure(job_dir, err)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        print(marker.read_text(), file=sys.stderr)
    print(f"error: sweep job {job_dir} failed: {type(err).__name__}: {err} (see {marker}); continuing", file=sys.stderr)


def _sweep_exit_code() -> int:
    """1 when the sweep that just ended (as seen by SweepReportCallback) had failed or incomplete jobs."""
    callbacks = sys.modules.get("ziplm.report.callbacks")
    outcome = callbacks.pop_last_outcome() if callbacks is not None else None
    if outcome is None or not outcome.failed:
        return 0
    listing = "".join(f"\n  {line}" for line in outcome.failed)
    print(f"ziplm: {len(outcome.failed)} of {outcome.jobs} sweep jobs failed:{listing}", file=sys.stderr)
    print(f"report: {outcome.report}", file=sys.stderr)
    return 1


def _run_with_hydra(command: Command, args: list[str]) -> int:
    import hydra  # imported here so that `ziplm --help` stays instant
    from omegaconf import DictConfig

    from ziplm.config.paths import CONF_DIR, check_config_tree
    from ziplm.config.schema import register_schemas
    from ziplm.config.validate import validate_config

    check_config_tree()
    register_schemas()

    def dispatch(cfg: DictConfig) -> Any:
        # Every value is checked (milliseconds) before the command is even imported: a bad one fails in the
        # first seconds, as one line, instead of after the data, the teacher or a latency table.
        if _in_multirun():
            try:
                validate_config(cfg)
                return command.load()(cfg)
            except Exception as err:  # one failing job must not end the sweep (single runs still exit 1)
                _record_failed_job(err)
                return None
        try:
            validate_config(cfg)
            return command.load()(cfg)
        except CommandNotReadyError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None  # SystemExit passes through Hydra's error reporting
        except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
            # Bad input (config values, data, files, missing packages) is reported as one clear line;
            # HYDRA_FULL_ERROR=1 shows the traceback instead.
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            raise SystemExit(1) from None

    entry = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(dispatch)
    saved_argv = sys.argv
    sys.argv = _hydra_argv(command, _report_args(args) if command.name == "report" else args)
    try:
        with warnings.catch_warnings():
            # conf/hydra/launcher/*.yaml shadow the launcher plugins' options on purpose, listing every key;
            # Hydra still validates them against the plugin schema but warns that this matching is deprecated.
            warnings.filterwarnings("ignore", message=r"(?s).*'hydra/launcher/.*is validated against ConfigStore")
            with _old_keys_as_one_line():
                entry()
    finally:
        sys.argv = saved_argv
    return _sweep_exit_code()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ziplm`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(f"{USAGE}\n\nZipLM: inference-aware structured pruning. Commands:\n{format_command_table()}")
        print(f"\n{EPILOG}")
        return 0
    name = DEFAULT_COMMAND if not args or args[0].startswith("-") or _is_override(args[0]) else args[0]
    if name not in COMMANDS:
        print(f"ziplm: unknown command '{name}'\n{USAGE}\n\ncommands:", file=sys.stderr)
        print(format_command_table(), file=sys.stderr)
        return 2
    rest = args[1:] if args and args[0] == name else args
    INVOCATION[:] = [name, *rest]
    return _run_with_hydra(COMMANDS[name], rest)


def entry() -> None:
    """The ``ziplm`` console script and ``python -m ziplm``: `main`, restarted first under tuned malloc if needed.

    glibc reads ``GLIBC_TUNABLES`` only at process start, so a timing command run without an allocator
    choice re-executes itself once with :data:`ziplm.latency.allocator.TUNED_GLIBC` (see that module);
    `main` never does, so tests can call it in-process.
    """
    from ziplm.latency.allocator import interpreter_options, reexec_args_for_allocator

    args = sys.argv[1:]
    env = reexec_args_for_allocator(args, os.environ)
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        options = interpreter_options(getattr(sys, "orig_argv", []))  # e.g. keep `python -u`
        os.execve(sys.executable, [sys.executable, *options, "-m", "ziplm", *args], env)
    sys.exit(main())


if __name__ == "__main__":
    entry()
