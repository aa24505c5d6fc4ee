"""Import boundaries: the core imports no framework; every layer of ziplm imports only the layers its row of
`ALLOWED` names (an acyclic table); no two modules import each other, directly or around a circle."""

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


# The settings classes the config layer registers with Hydra live in plain-Python modules of their layers
# (each re-exported from its old, torch-importing home), so composing and validating a config loads no torch.
SETTINGS_MODULES = (
    "ziplm.config.schema", "ziplm.config.settings", "ziplm.config.validate", "ziplm.core.settings",
    "ziplm.data.spec", "ziplm.latency.environment", "ziplm.models.spec", "ziplm.pruning.settings",
)  # fmt: skip
HEAVY = ("torch", "transformers", "datasets", "lightning", "pytorch_lightning", "torchmetrics", "wandb")


def test_the_config_layer_and_the_settings_modules_load_no_torch() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in SETTINGS_MODULES)
        + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
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


# --------------------------------------------------------------------------------------------------
# Layers: what each top-level part of ziplm may import from the others (every import counts, including
# those inside functions and under TYPE_CHECKING). `__main__` and `commands` are top-level modules.
ROOT = Path(ziplm.__file__).parent
LAYERS_BELOW_PIPELINES = (
    "commands", "compress", "config", "core", "data", "deploy", "eval", "latency", "lit", "models", "pruning", "report",
)  # fmt: skip
ALLOWED: dict[str, set[str]] = {
    "core": set(),  # pure torch + numpy
    "data": set(),  # tasks as data: splits, features, builtin corpora
    "commands": set(),  # the command table (strings only)
    # validation checks `command=` against the table; the schemas and RunSettings are the layers' own classes
    "config": {"commands", "core", "data", "latency", "models", "pruning"},
    "eval": {"data"},
    "models": {"core"},  # a BPE tokenizer is handed its corpus by the caller (see EXCEPTIONS)
    "compress": {"core", "models"},
    "deploy": {"core", "models"},  # core: the pooling maths an exported embedder is checked with
    "pruning": {"core", "models"},
    # latency -> deploy: the onnxruntime engine (engines.onnxruntime_call, imported lazily) must time the
    # very graph `ziplm export` ships, so it uses deploy's exporter rather than a second one.
    "latency": {"core", "models", "deploy"},
    "lit": {"core", "data", "eval"},
    "report": {"eval"},  # metric names/directions only (ziplm.eval.metric_info), never the metric libraries
    "pipelines": set(LAYERS_BELOW_PIPELINES),
    "__main__": {"commands", "config", "report"},  # pipelines are loaded by name (`Command.load`)
}
# Single imports outside the table, each with its reason; delete an entry once its import is gone.
EXCEPTIONS: dict[tuple[str, str], str] = {
    # stdlib-only: the entry point restarts a timing command under tuned malloc before importing anything
    ("__main__.py", "ziplm.latency.allocator"): "the console script re-executes itself under tuned glibc malloc",
    ("report/provenance.py", "ziplm.latency.allocator"): "provenance records the allocator a run was timed with",
}


def _layer(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else path.stem


def _module_name(path: Path) -> str:
    parts = ("ziplm", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _ziplm_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every ziplm import of `path`; ``from ziplm.a import b`` gives
    ``ziplm.a.b`` when b is a module, else ``ziplm.a``. Relative imports are resolved."""
    package = _module_name(path) if path.stem == "__init__" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub) else base))
    return [(line, name) for line, name in found if name == "ziplm" or name.startswith("ziplm.")]


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` (as a path a -> ... -> a), or None if a topological order exists."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_layer_table_is_acyclic_and_names_every_layer() -> None:
    layers = {_layer(p) for p in _sources()} - {"__init__"}
    assert set(ALLOWED) == layers, "every top-level package/module of ziplm needs a row in ALLOWED"
    assert all(deps <= layers for deps in ALLOWED.values())
    assert _cycle(ALLOWED) is None, f"the layer table has a circle: {' -> '.join(_cycle(ALLOWED) or [])}"


def test_every_import_follows_the_layer_table() -> None:
    bad = []
    used = set()
    for path in _sources():
        layer, rel = _layer(path), str(path.relative_to(ROOT))
        for line, name in _ziplm_imports(path):
            target = name.split(".")[1] if "." in name else "__init__"
            if target in (layer, "__init__") or target in ALLOWED.get(layer, set()):
                continue
            if (rel, name) in EXCEPTIONS:
                used.add((rel, name))
                continue
            bad.append(f"ziplm/{rel}:{line} imports {name} ({layer} may import only {sorted(ALLOWED[layer])})")
    assert bad == [], "imports outside the layer table:\n" + "\n".join(bad)
    assert used == set(EXCEPTIONS), f"stale EXCEPTIONS (that import is gone): {sorted(set(EXCEPTIONS) - used)}"


def test_no_import_cycle_between_modules() -> None:
    """Module-level graph, every import counted (a lazy import inside a function closes a circle too)."""
    graph = {_module_name(p): {name for _, name in _ziplm_imports(p)} - {_module_name(p)} for p in _sources()}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
