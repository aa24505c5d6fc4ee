"""``python -m ziplm <command> [hydra overrides]`` and the ``ziplm`` console script.

The first argument picks a command from :data:`ziplm.pipelines.COMMANDS` (none: ``run``). Everything
after it goes to Hydra unchanged (overrides, ``-m/--multirun``, ``--cfg job``, ``--help``) plus
``command=<name>``, and the command's pipeline function receives the composed config.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from ziplm.pipelines import COMMANDS, DEFAULT_COMMAND, Command, CommandNotReadyError, format_command_table

USAGE = "usage: ziplm [<command>] [key=value ...] [-m|--multirun] [--cfg job] [--help]"
EPILOG = """\
With no command, `ziplm` runs `run`. After a command, arguments are Hydra's:
  ziplm run experiment=smoke              run a preset from experiments/
  ziplm run experiment=smoke --cfg job    print the composed config, run nothing
  ziplm run -m schedule.damp=0.001,0.01   a sweep, written under outputs/multirun/
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
    flags = [arg for arg in args if not _is_override(arg)]
    overrides = [arg for arg in args if _is_override(arg)]
    return [f"ziplm {command.name}", *flags, *overrides, f"command={command.name}"]


def _run_with_hydra(command: Command, args: list[str]) -> None:
    import hydra  # imported here so that `ziplm --help` stays instant
    from omegaconf import DictConfig

    from ziplm.config.paths import CONF_DIR, check_config_tree
    from ziplm.config.schema import register_schemas

    check_config_tree()
    register_schemas()

    def dispatch(cfg: DictConfig) -> Any:
        try:
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
    sys.argv = _hydra_argv(command, args)
    try:
        entry()
    finally:
        sys.argv = saved_argv


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
    _run_with_hydra(COMMANDS[name], args[1:] if args and args[0] == name else args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
