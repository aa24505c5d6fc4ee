"""conf/hydra/: the launcher and callback options compose, list exactly the plugins' keys, and drive them."""

from __future__ import annotations

import dataclasses
import os
import stat
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ziplm.config.paths import CONF_DIR
from ziplm.config.schema import register_schemas

joblib_config = pytest.importorskip("hydra_plugins.hydra_joblib_launcher.config")
submitit_config = pytest.importorskip("hydra_plugins.hydra_submitit_launcher.config")


def _compose(*overrides: str) -> DictConfig:
    """The composed config *with* its hydra node, as a multirun job sees it."""
    register_schemas()
    GlobalHydra.instance().clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our files must not trip Hydra warnings beyond the filtered one
        warnings.filterwarnings("ignore", message=r"(?s).*'hydra/launcher/.*is validated against ConfigStore")
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                "config", overrides=["command=run", "experiment=smoke", *overrides], return_hydra_config=True
            )


@pytest.mark.parametrize(
    ("option", "schema"),
    [("joblib", "JobLibLauncherConf"), ("submitit_slurm", "SlurmQueueConf")],
)
def test_launcher_files_list_exactly_the_plugin_keys(option: str, schema: str) -> None:
    module = joblib_config if option == "joblib" else submitit_config
    plugin_keys = {f.name for f in dataclasses.fields(getattr(module, schema))}
    ours = OmegaConf.load(CONF_DIR / "hydra" / "launcher" / f"{option}.yaml")
    assert set(ours.keys()) == plugin_keys  # shadowing the plugin's option: nothing left out, no typo
    launcher = _compose(f"hydra/launcher={option}").hydra.launcher
    assert launcher._target_ == getattr(module, schema)._target_


def test_joblib_launcher_instantiates_with_our_defaults() -> None:
    cfg = _compose("hydra/launcher=joblib", "hydra.launcher.n_jobs=3")
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "JoblibLauncher"
    assert (launcher.joblib["n_jobs"], launcher.joblib["prefer"]) == (3, "processes")


def test_submitit_slurm_makes_a_valid_sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit itself validates every parameter and writes the sbatch file (a stub `srun` stands in for SLURM)."""
    submitit = pytest.importorskip("submitit")
    srun = tmp_path / "bin" / "srun"
    srun.parent.mkdir()
    srun.write_text("#!/bin/sh\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{srun.parent}{os.pathsep}{os.environ['PATH']}")
    cfg = _compose("hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu-a100", f"output_root={tmp_path}")
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)  # resolves ${hydra.sweep.dir} / ${hydra.job.name} in the params
    try:
        params = dict(instantiate(cfg.hydra.launcher).params)
    finally:
        HydraConfig.instance().cfg = None
    assert params["submitit_folder"].startswith(f"{tmp_path}/multirun/smoke/")
    # The plugin's own translation (SlurmLauncher.launch): base keys as they are, the rest slurm_-prefixed.
    base = set(OmegaConf.structured(submitit_config.BaseQueueConf).keys())
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=str(tmp_path / "submitit"), slurm_max_num_timeout=params["max_num_timeout"]
    )
    skip = {"submitit_folder", "max_num_timeout"}
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in skip})
    script = executor._executor._make_submission_file_text("python -m ziplm run", "uid")
    for line in ("--partition=gpu-a100", "--gpus-per-node=1", "--time=1440", "--cpus-per-task=8", "--mem=64GB",
                 "--nodes=1", "--ntasks-per-node=1", "--job-name=ziplm"):  # fmt: skip
        assert f"#SBATCH {line}\n" in script


def test_sweep_report_callback_option() -> None:
    callbacks = _compose("hydra/callbacks=sweep_report").hydra.callbacks
    assert callbacks.sweep_report._target_ == "ziplm.report.callbacks.SweepReportCallback"
    callback = instantiate(callbacks.sweep_report)
    assert type(callback).__name__ == "SweepReportCallback" and callback.wandb is True
