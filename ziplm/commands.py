"""The ``ziplm <command>`` table: each command's name, help line and pipeline target.

Targets are ``"module:function"`` strings imported on first use, so ``ziplm --help``, config validation
(which checks ``command=``) and this module import neither torch nor Hydra. It imports nothing from ziplm:
the CLI, ``ziplm.config`` and ``ziplm.pipelines`` all read it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

INVOCATION: list[str] = []
"""The ``ziplm`` arguments of this process (command name first), as typed: set by the CLI, read by a
multi-process run to start its other ranks with the same command."""


class CommandNotReadyError(RuntimeError):
    """A command whose pipeline is not built yet; the CLI prints it as one line and exits 1."""


@dataclass(frozen=True)
class Command:
    """One CLI command.

    Attributes:
        name: what the user types (``ziplm <name>``).
        target: ``"package.module:function"``; the function takes the composed config.
        help: one line for ``ziplm --help``.
        issue: the issue that builds it, or ``None`` once it works.
    """

    name: str
    target: str
    help: str
    issue: int | None = None

    @property
    def status(self) -> str:
        return "ready" if self.issue is None else f"planned (issue {self.issue})"

    def load(self) -> Callable[[Any], Any]:
        """Import the target function (lazily: this may import torch)."""
        module_name, _, function_name = self.target.partition(":")
        function: Callable[[Any], Any] = getattr(importlib.import_module(module_name), function_name)
        return function


_SMOKE = "ziplm.pipelines.smoke:run_smoke"
_PRUNE = "ziplm.pipelines.prune:run_prune"

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("run", _PRUNE, "the main job: prune a model into a speedup family (default command)"),
        Command("prune", _PRUNE, "build the ZipLM family for the configured targets (same as run)"),
        Command("latency", "ziplm.pipelines.latency:run_latency", "measure the latency table of an environment"),
        Command(
            "eval",
            "ziplm.pipelines.evaluate:run_evaluate",
            "evaluate a member or any fine-tuned HF checkpoint: checkpoint=<folder|hub id>",
        ),
        Command("report", "ziplm.pipelines.report:run_report", "one table + Pareto plots from runs: report <dir>"),
        Command("export", "ziplm.pipelines.export:run_export", "export a member (ONNX, HF folder): checkpoint=<dir>"),
        Command("compress", "ziplm.pipelines.compress:run_compress", "unstructured pruning + INT8 of a member"),
        Command("serve-bench", "ziplm.pipelines.serve_bench:run_serve_bench", "p50/p95/p99 + throughput vs dense"),
        Command("smoke", _SMOKE, "surgery + save/load check of the configured model (seconds)"),
    )
}
DEFAULT_COMMAND = "run"


def format_command_table() -> str:
    """The command table shown by ``ziplm --help``."""
    width = max(len(name) for name in COMMANDS)
    rows = [f"  {c.name:<{width}}  {c.help}  [{c.status}]" for c in COMMANDS.values()]
    return "\n".join(rows)
