"""How a result was made: code commit (and whether the tree was dirty), package versions, the command
line and the machine. Written as ``provenance.json`` into every run folder when the run starts, quoted
at the foot of ``results.md`` and logged to W&B with the run's config, so a number can be traced back
to the code and the machine that produced it."""

from __future__ import annotations

import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ziplm.latency.allocator import current_allocator

PROVENANCE_FILE = "provenance.json"
PACKAGES = ("ziplm", "torch", "transformers", "lightning", "datasets", "hydra-core", "torchmetrics", "wandb")
_REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=_REPO, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _accelerator() -> str | None:
    torch = sys.modules.get("torch")  # never imported just for this: `ziplm --cfg job` stays light
    if torch is None or not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def provenance(command: Sequence[str]) -> dict[str, Any]:
    """What made this run: commit, dirty flag, versions, command line (`command`: the ziplm arguments)."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "commit": commit,
        "dirty": bool(status) if status is not None else None,
        "command": shlex.join(["ziplm", *command]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "machine": {
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "accelerator": _accelerator(),
            "allocator": current_allocator(),  # how its timings were made (glibc default/tuned, jemalloc, ...)
        },
    }


def write_provenance(folder: Path, command: Sequence[str]) -> dict[str, Any]:
    """Write ``provenance.json`` into `folder` (created if needed) and return what it says."""
    record = provenance(command)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_provenance(folder: Path) -> dict[str, Any] | None:
    path = folder / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def provenance_line(record: dict[str, Any] | None) -> str:
    """One line for a report's notes."""
    if not record:
        return "made by: unknown (no provenance.json)"
    commit = (record.get("commit") or "no git checkout")[:12]
    commit += " (uncommitted changes)" if record.get("dirty") else ""
    versions = record.get("versions", {})
    machine = record.get("machine", {})
    return (
        f"made by: commit {commit}; ziplm {versions.get('ziplm')}, torch {versions.get('torch')}, "
        f"transformers {versions.get('transformers')}, lightning {versions.get('lightning')}; "
        f"{machine.get('processor')} × {machine.get('cpus')} CPUs"
        + (f", {machine['accelerator']}" if machine.get("accelerator") else "")
        + f"; command: {record.get('command')}"
    )
