"""ziplm.data and ziplm.eval take typed arguments: they never see Hydra, OmegaConf or Lightning."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ziplm

FORBIDDEN = {"hydra", "omegaconf", "lightning", "pytorch_lightning", "wandb"}
PACKAGE = Path(ziplm.__file__).parent


@pytest.mark.parametrize("layer", ["data", "eval"])
def test_layer_imports_no_config_or_trainer_framework(layer: str) -> None:
    offenders = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
        if roots & FORBIDDEN:
            offenders[path.name] = sorted(roots & FORBIDDEN)
    assert offenders == {}
