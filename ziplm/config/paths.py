"""Where the config tree lives, and a compose helper for tests and notebooks.

``conf/experiment`` is a link to the top-level ``experiments/`` folder, so experiment presets are the
``experiment`` config group without a search-path plugin.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"
EXPERIMENTS_DIR = REPO_ROOT / "experiments"


def check_config_tree() -> None:
    """Fail with a clear message when the package is installed without its config tree."""
    if not (CONF_DIR / "config.yaml").is_file():
        raise FileNotFoundError(
            f"ziplm's Hydra config tree was not found at {CONF_DIR}. Install from a checkout with "
            "`pip install -e .` so that conf/ and experiments/ stay beside the package."
        )


def compose(overrides: list[str] | None = None, command: str = "run") -> DictConfig:
    """Compose the real config (as the CLI would) without running anything.

    Args:
        overrides: Hydra overrides, e.g. ``["model=tiny-bert", "+experiment=smoke"]``.
        command: the command name recorded in the config.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ziplm.config.schema import register_schemas

    check_config_tree()
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            config_name="config",
            overrides=[f"command={command}", *(overrides or [])],
            return_hydra_config=False,
        )


def task_options() -> list[str]:
    """The ``task=`` options (``conf/task/*.yaml``): what a baseline's ``task`` may name."""
    return sorted(path.stem for path in (CONF_DIR / "task").glob("*.yaml"))
