"""The core is pure torch + numpy: it must not depend on the framework shells around it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ziplm

FORBIDDEN = {"lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb", "transformers"}
CORE = Path(ziplm.__file__).parent / "core"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_sources_import_no_framework() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert files, "ziplm/core has no sources"
    offenders = {str(f.relative_to(CORE)): sorted(_imported_roots(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_the_core_loads_no_framework() -> None:
    """Catches indirect imports too (a core module importing a helper that imports transformers)."""
    modules = sorted(f"ziplm.core.{f.stem}" for f in CORE.glob("*.py") if f.stem != "__init__")
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reports_do_not_load_the_metric_libraries() -> None:
    """`ziplm report` only needs to know how metrics are reported, not how they are computed (torchmetrics
    alone took ~12 s to import on the development machine)."""
    code = (
        "import sys, ziplm.pipelines.report, ziplm.report.sweep\n"
        "from ziplm.report.sweep import _metric_info\n"
        "assert _metric_info('perplexity') == ('perplexity', False)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchmetrics'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
