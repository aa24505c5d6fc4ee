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
    3: "structured OBS and the levels database",
    4: "latency tables and the speedup search",
    5: "the prune / eval pipeline",
    6: "reports: results tables and plots",
    7: "export and serving benchmark",
}


def _not_ready(command: str, issue: int, also_needs: str = "") -> NoReturn:
    suffix = f"; it also needs {also_needs}" if also_needs else ""
    raise CommandNotReadyError(f"ziplm {command} is not implemented yet (issue {issue}: {ISSUE_TITLES[issue]}){suffix}")


def prune(cfg: DictConfig) -> NoReturn:
    _not_ready("prune", 5, also_needs=f"issue 3 ({ISSUE_TITLES[3]}) and issue 4 ({ISSUE_TITLES[4]})")


def latency(cfg: DictConfig) -> NoReturn:
    _not_ready("latency", 4)


def evaluate(cfg: DictConfig) -> NoReturn:
    _not_ready("eval", 5)


def report(cfg: DictConfig) -> NoReturn:
    _not_ready("report", 6)


def export(cfg: DictConfig) -> NoReturn:
    _not_ready("export", 7)


def serve_bench(cfg: DictConfig) -> NoReturn:
    _not_ready("serve-bench", 7)
