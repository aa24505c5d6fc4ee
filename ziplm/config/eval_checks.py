"""Checks of the ``eval`` group (``ziplm eval``): what the checkpoint is scored on.

Split from ``ziplm.config.validate`` (at its size limit); like it, imports neither torch nor lm_eval, so a
bad value or a missing package fails in the first second, before any checkpoint is read. Whether each
task name exists needs lm_eval's task index (seconds): ``ziplm.eval.harness.check_tasks`` asks it, still
before the model is loaded.
"""

from __future__ import annotations

import importlib.util
from typing import Any

EVAL_MODES = ("task", "lm-eval")
ZIPLM_TASK = "ziplm_task"  # ziplm.eval.harness.ZIPLM_TASK (tests/eval/test_lm_eval_harness.py keeps them equal)
LM_EVAL_INSTALL = "pip install 'ziplm[lmeval]' (or pip install 'lm_eval>=0.4.8' accelerate)"


def check_eval(g: Any, command: str, task_kind: str | None) -> None:
    """`g` is validate's ``_Group("eval", values)``; its ``fail`` raises the one-line message.

    Values are checked for every command (as the other groups are); that lm_eval is installed and that
    ``ziplm_task`` has an LM task to read only for ``ziplm eval eval=lm-eval``, the one run that needs them.
    """
    mode = g.choice("name", EVAL_MODES, "lm-eval", note=" (task: score task=; lm-eval: lm-evaluation-harness)")
    if mode != "lm-eval":
        return
    tasks = g.values.get("tasks")
    if not isinstance(tasks, list | tuple) or not tasks or not all(isinstance(t, str) and t.strip() for t in tasks):
        g.fail("tasks", "a non-empty list of lm-eval task names (`lm-eval ls tasks`) or ziplm_task", "[hellaswag]")
    paths = g.values.get("include_path")
    if paths is not None and not isinstance(paths, str) and not _strings(paths):
        g.fail("include_path", "null, a folder of task YAMLs or a list of folders", "my_tasks/")
    g.integer("num_fewshot", 0, 5, optional=True, note=" (null = each task's default)")
    g.integer("limit", 1, 100, optional=True, note=" (null = every document)")
    g.integer("batch_size", 1, 8)
    g.integer("max_length", 2, 2048, optional=True, note=" (null = the model's max_position_embeddings)")
    seed = g.integer("seed", 0, 1234, optional=True, note=" (null = lm_eval's default seeds)")
    if seed is not None and seed > 2**32 - 1:
        g.fail("seed", f"an integer in [0, {2**32 - 1}] or null", 1234)
    if command != "eval":
        return
    missing = [name for name in ("lm_eval", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:  # lm_eval's HFLM imports accelerate, which lm_eval itself does not require
        raise ImportError(f"eval=lm-eval needs {' and '.join(missing)}, not installed: {LM_EVAL_INSTALL}")
    if ZIPLM_TASK in tasks and task_kind != "lm":
        raise ValueError(
            f"eval.tasks=[{ZIPLM_TASK}] scores the evaluation text of the configured task, which must be a "
            f"language-modelling task (task.kind=lm), got task.kind={task_kind}; e.g. task=wiki-excerpt"
        )


def _strings(values: Any) -> bool:
    return isinstance(values, list | tuple) and all(isinstance(v, str) and v for v in values)
