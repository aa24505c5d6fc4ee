"""RunSettings: the composed config as the layers' own typed classes (nothing below the pipelines reads DictConfig)."""

from __future__ import annotations

import dataclasses

from ziplm.config.paths import compose
from ziplm.config.schema import GROUP_SCHEMAS
from ziplm.config.settings import RunSettings, TeacherSettings
from ziplm.core.distill import DistillSettings, DistillWeights
from ziplm.data.spec import TaskSpec
from ziplm.latency.measure import Environment
from ziplm.models.build import ModelSpec
from ziplm.pruning.levels_database import DatabaseSettings, PrunerSettings
from ziplm.pruning.targets import SearchSettings


def test_smoke_settings_are_the_layers_classes() -> None:
    s = RunSettings.from_config(compose(["experiment=smoke"]))
    assert isinstance(s.model, ModelSpec) and isinstance(s.task, TaskSpec) and isinstance(s.hardware, Environment)
    assert isinstance(s.pruner, PrunerSettings) and isinstance(s.search, SearchSettings)
    assert isinstance(s.distill, DistillSettings) and isinstance(s.teacher, TeacherSettings)
    assert (s.schedule, s.member_dtype, s.hardware_name, s.name, s.seed) == ("oneshot", "float32", "cpu", "smoke", 0)
    assert s.task.text_keys == tuple(s.task.text_keys) and s.search.targets == [1.5, 2.0]
    assert s.pruner.calibration_samples == 32 and s.hardware.batch_size == 32
    assert s.distill.weights == DistillWeights(task=0.0, logit=1.0, token=1.0, temperature=2.0)
    assert s.database == DatabaseSettings(damp=0.01, ffn_group_size=1, ffn_grid_ratio=0.9, ffn_round_to=1, seed=0)
    assert isinstance(s.trainer, dict) and isinstance(s.logger, dict)


def test_gradual_schedule_sets_the_other_groups_and_the_command_line_wins() -> None:
    s = RunSettings.from_config(compose(["schedule=gradual"]))
    assert (s.schedule, s.search.targets, s.distill.epochs_per_stage) == ("gradual", [2, 3, 4, 5, 6, 8, 10, 12, 15], 2)
    assert (s.pruner.calibration_samples, s.distill.learning_rate) == (1024, 5e-5)
    overrides = ["experiment=minilm-bbc-family", "schedule=gradual", "distill.epochs_per_stage=1"]
    s = RunSettings.from_config(compose(overrides))
    assert (s.schedule, s.search.targets, s.distill.epochs_per_stage) == ("gradual", [1.5, 2.0, 3.0, 4.0], 1)


def test_each_group_schema_has_exactly_its_layer_class_fields() -> None:
    pairs = {"model": ModelSpec, "task": TaskSpec, "hardware": Environment}
    for group, cls in pairs.items():
        schema = [f.name for f in dataclasses.fields(GROUP_SCHEMAS[group])]
        assert [n for n in schema if n != "name" or group != "hardware"] == [f.name for f in dataclasses.fields(cls)]
    for group, cls in {"pruner": PrunerSettings, "search": SearchSettings, "distill": DistillSettings}.items():
        assert GROUP_SCHEMAS[group] is cls
    assert GROUP_SCHEMAS["teacher"] is TeacherSettings


def test_derived_schemas_survive_pickling_into_launcher_workers() -> None:
    """joblib and submitit pickle the ConfigStore into their workers: each derived schema must unpickle as
    itself, not as the layer class it was derived from (which once broke `-m hydra/launcher=joblib`)."""
    import pickle

    for group in ("model", "task", "hardware"):
        schema = GROUP_SCHEMAS[group]
        assert pickle.loads(pickle.dumps(schema)) is schema, group
