"""A typed view of one whole run: the composed Hydra config as the layers' own dataclasses.

`RunSettings.from_config` is the one place a ``DictConfig`` becomes typed settings; the pipelines hand
these objects down, so nothing below them reads a ``DictConfig``. Each group's class lives in the layer
that owns it (``ModelSpec`` in ``ziplm.models``, ``PrunerSettings`` in ``ziplm.pruning`` ...), and
``ziplm.config.schema`` registers the same classes with Hydra.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ziplm.config.baselines import Baseline, for_task, parse_baselines
from ziplm.core.settings import DistillSettings
from ziplm.data.spec import TaskSpec
from ziplm.latency.environment import Environment
from ziplm.models.spec import ModelSpec
from ziplm.pruning.settings import DatabaseSettings, PrunerSettings, SearchSettings


@dataclass
class TeacherSettings:
    """The ``teacher`` config group (``conf/teacher/*.yaml``): fine-tuning of the dense teacher.

    Declared here rather than in ``ziplm.pipelines.teacher`` (which re-exports it) because the config
    layer sits below the pipelines: importing the pipeline module from here would close an import cycle.
    The result is cached by recipe and skipped when cached.
    """

    epochs: float = 1.0  # 0 = the model as it is
    learning_rate: float = 1e-4


@dataclass(frozen=True)
class RunSettings:
    """Every group of a composed ``ziplm`` config as the typed object its layer takes."""

    model: ModelSpec
    task: TaskSpec
    hardware: Environment
    hardware_name: str
    pruner: PrunerSettings
    search: SearchSettings
    distill: DistillSettings
    teacher: TeacherSettings
    schedule: str  # oneshot | gradual
    member_dtype: str
    seed: int
    name: str
    cache_dir: str
    output_root: str
    trainer: dict[str, Any] = field(default_factory=dict)  # raw for now (the trainer group is being reworked)
    logger: dict[str, Any] = field(default_factory=dict)
    baselines: tuple[Baseline, ...] = ()  # published checkpoints measured in this run's harness

    @property
    def database(self) -> DatabaseSettings:
        """What a levels database (and the latency table's grids) is built with."""
        return DatabaseSettings.from_pruner(self.pruner, self.seed)

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunSettings:
        """The typed view of a composed config (values resolved; task lists become the spec's tuples)."""
        hardware = _plain(cfg.hardware)
        hardware_name = str(hardware.pop("name", ""))
        return cls(
            model=_build(ModelSpec, cfg.model),
            task=TaskSpec.from_mapping(_plain(cfg.task)),
            hardware=_build(Environment, hardware),
            hardware_name=hardware_name,
            pruner=_build(PrunerSettings, cfg.pruner),
            search=_build(SearchSettings, cfg.search),
            distill=_build(DistillSettings, cfg.distill),
            teacher=_build(TeacherSettings, cfg.teacher),
            schedule=str(cfg.schedule.name),
            member_dtype=str(cfg.schedule.member_dtype),
            seed=int(cfg.seed),
            name=str(cfg.name),
            cache_dir=str(cfg.cache_dir),
            output_root=str(cfg.output_root),
            trainer=_plain(cfg.trainer) if cfg.get("trainer") is not None else {},
            logger=_plain(cfg.logger) if cfg.get("logger") is not None else {},
            baselines=for_task(  # a task sweep's preset lists each task's checkpoints; a run measures its own
                parse_baselines(OmegaConf.to_container(cfg.baselines, resolve=True) if "baselines" in cfg else []),
                str(cfg.task.name),
            ),
        )


def _plain(node: Any) -> dict[str, Any]:
    """A config node (or mapping) as a plain, resolved ``dict``."""
    container = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def _build(cls: Any, node: Any) -> Any:
    """``cls`` from the node's values (keys that are not fields, like a Hydra ``defaults`` entry, are left out)."""
    values = _plain(node)
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})
