"""`Environment`: the inference environment a latency table is measured in (``conf/hardware/*.yaml``).

Plain Python at import time, so the config layer (schema registration, validation) loads it without torch;
`Environment.validate` and `Environment.apply` import torch when called. ``ziplm.latency.measure``
re-exports everything here.
"""

from __future__ import annotations

from dataclasses import dataclass

# Timing dtypes by name; ``ziplm.latency.measure.DTYPES`` maps each to its torch dtype.
DTYPE_NAMES = ("float32", "float16", "bfloat16")
# eager: the module as is; compile: torch.compile (TorchInductor); onnxruntime: our ONNX export in an InferenceSession.
ENGINES = ("eager", "compile", "onnxruntime")


@dataclass(frozen=True)
class Environment:
    """An inference environment: latency tables and measured speedups are only valid inside one.

    Typed view of ``conf/hardware/*.yaml`` and its Hydra schema (which adds the profile's ``name``, a label
    that is no part of the timing).
    """

    device: str = "cpu"  # cpu | cuda
    dtype: str = "float32"  # float32 | float16 | bfloat16
    batch_size: int = 1
    seq_length: int = 128
    threads: int | None = None  # CPU threads (torch.set_num_threads); None = torch's default
    engine: str = "eager"  # eager | compile | onnxruntime
    warmup: int = 5
    repetitions: int = 20  # minimum timed repetitions; more are taken until the median is stable
    max_seconds_per_entry: float = 10.0

    def validate(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {sorted(DTYPE_NAMES)}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine {self.engine!r} is not supported; choose one of {ENGINES} (hardware.engine=...)")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"unknown device {self.device!r}; use cpu or cuda[:N]")
        if self.device.startswith("cuda") and not _cuda_available():
            raise ValueError(f"hardware profile asks for device {self.device!r} but no CUDA device is visible")
        if self.device == "cpu" and self.dtype == "float16":
            raise ValueError("float16 on CPU is not a deployment environment; use float32 or bfloat16")
        if self.batch_size < 1 or self.seq_length < 1:
            raise ValueError(f"batch_size and seq_length must be >= 1, got {self.batch_size}, {self.seq_length}")
        from ziplm.latency.engines import engine_problem  # imports torch

        problem = engine_problem(self.engine, self.device, self.dtype)
        if problem is not None:
            raise ValueError(problem)

    def apply(self) -> None:
        """Set process-wide state the timings depend on (CPU threads)."""
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
