"""Wall time per phase of a run, printed as it goes and kept for the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console()


class Phases:
    """``with phases("name"):`` times a phase; `after` callbacks run when a phase ends (the teacher guard
    checks the dense model after every phase)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.after: list[Callable[[str], None]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        console.print(f"[dim]{name}: {self.seconds[name]:.1f} s[/dim]")
        for callback in self.after:
            callback(name)
