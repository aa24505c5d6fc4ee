"""Placeholders for commands whose pipelines are not built yet.

Each raises :class:`CommandNotReadyError` naming the issue that builds it; replace the entry in
``COMMANDS`` with the real function when it lands, and delete its stub here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from ziplm.pipelines import CommandNotReadyError

if TYPE_CHECKING:
    from omegaconf import DictConfig

ISSUE_TITLES: dict[int, str] = {
    6: "reproduce the paper's comparisons: presets, sweeps, baselines, reports",
    7: "deployment and compound compression: exports, CPU engines, INT8",
}


def _not_ready(command: str, issue: int, also_needs: str = "") -> NoReturn:
    suffix = f"; it also needs {also_needs}" if also_needs else ""
    raise CommandNotReadyError(f"ziplm {command} is not implemented yet (issue {issue}: {ISSUE_TITLES[issue]}){suffix}")


def report(cfg: DictConfig) -> NoReturn:
    _not_ready("report", 6)


def export(cfg: DictConfig) -> NoReturn:
    _not_ready("export", 7)


def serve_bench(cfg: DictConfig) -> NoReturn:
    _not_ready("serve-bench", 7)
