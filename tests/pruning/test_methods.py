"""The structure-selection registry: one `Method` per name, asked by every consumer; import arrows one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ziplm
from ziplm.config import validate
from ziplm.pruning.methods import METHODS, REGISTRY, Method, method

PRUNING = Path(ziplm.__file__).parent / "pruning"


def test_registry_names_and_what_each_method_needs() -> None:
    assert (
        METHODS
        == ("obs", "magnitude", "random", "fisher", "fisher-norescale", "layerdrop", "blockdrop")
        == validate.METHODS
    )
    assert all(isinstance(m, Method) and m.name == name for name, m in REGISTRY.items())
    assert [n for n in METHODS if method(n).selection == "solver"] == ["obs", "magnitude", "random"]
    assert [n for n in METHODS if method(n).labelled] == ["fisher", "fisher-norescale"]
    assert [n for n in METHODS if method(n).seeded] == ["random"]
    assert [n for n in METHODS if method(n).mask_tuning] == ["fisher"]
    assert [n for n in METHODS if not method(n).builds_database] == ["layerdrop", "blockdrop"]
    assert [method(n).layer_choice for n in ("layerdrop", "blockdrop")] == ["spread", "influence"]
    assert [n for n in METHODS if not method(n).calibrated] == ["layerdrop"]  # blockdrop scores blocks on them
    # Report titles as before the registry: "ZipLM" for OBS, "<name> baseline" for the others.
    assert [method(n).label for n in METHODS] == ["ZipLM", *(f"{n} baseline" for n in METHODS[1:])]


def test_solvers_exist_exactly_for_solver_methods() -> None:
    for name in METHODS:
        chosen = method(name)
        if chosen.selection == "solver":
            assert callable(chosen.make_solver(0))
        else:
            with pytest.raises(ValueError, match="no per-level solver"):
                chosen.make_solver(0)


def test_unknown_name_fails_once_listing_every_method() -> None:
    with pytest.raises(ValueError, match="unknown structure-selection method 'fischer'") as err:
        method("fischer")
    assert all(name in str(err.value) for name in METHODS)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_database_modules_import_one_way() -> None:
    """database_builder -> fisher -> levels_database -> methods -> baselines, never back."""
    order = ["database_builder", "fisher", "levels_database", "methods", "baselines"]
    for i, name in enumerate(order):
        above = {f"ziplm.pruning.{m}" for m in order[:i]}
        assert not _imports(PRUNING / f"{name}.py") & above, name
