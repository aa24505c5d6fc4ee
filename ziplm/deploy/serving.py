"""A serving benchmark: per-request latency percentiles and throughput under concurrent clients.

The server is one worker thread draining a FIFO queue, running one forward pass at a time under
``torch.inference_mode()``. Why one worker and not a thread pool: a forward pass already uses every
intra-op thread torch has (``torch.set_num_threads``), so running several at once only oversubscribes
the cores and makes latencies depend on the OS scheduler; a single-model server without dynamic
batching behaves like this queue, and its latency under load (queueing + compute, measured by the
client from enqueue to result) is exactly what a user of the model sees.

Fairness: the models are benchmarked *interleaved* — the requests of each model are split into
rounds and the rounds alternate (A B, B A, A B, …), so slow drift of a shared machine (thermal state,
other jobs) hits every model alike instead of whichever happened to run last. Each round's p50 and
throughput are kept, and `paired_speedups` takes the median over rounds of per-round ratios: on a
shared CPU the load swings within seconds (per-round p50 was seen to move 4x here), and a ratio of
back-to-back rounds cancels most of it. Every round starts with an empty queue, so its first
`concurrency` requests wait less than in steady state; this biases both models alike.
"""

from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ziplm.models.adapter import STRUCTURE_CONFIG_KEY


@dataclass(frozen=True)
class ServeSettings:
    """How the benchmark loads each model.

    Attributes:
        concurrency: client threads sending requests back to back (requests in flight at once).
        requests: timed requests per model (split across `rounds`).
        batch_size: sequences per request.
        seq_length: tokens per sequence.
        warmup: untimed requests per model through its server before the first round.
        threads: torch intra-op threads for the whole benchmark; None keeps torch's setting.
        rounds: interleaved rounds per model (at most `requests`).
        seed: seed of the random token ids.
    """

    concurrency: int = 4
    requests: int = 200
    batch_size: int = 1
    seq_length: int = 128
    warmup: int = 10
    threads: int | None = None
    rounds: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("concurrency", "requests", "batch_size", "seq_length", "rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"serve {name} must be an integer >= 1, got {value!r}; set e.g. serve.{name}=4")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"serve warmup must be an integer >= 0, got {self.warmup!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be None (torch's default) or an integer >= 1, got {self.threads!r}")

    def round_sizes(self) -> list[int]:
        """Requests per round: `requests` split as evenly as possible over min(rounds, requests) rounds."""
        rounds = min(self.rounds, self.requests)
        base, extra = divmod(self.requests, rounds)
        return [base + (1 if i < extra else 0) for i in range(rounds)]


@dataclass(frozen=True)
class ServeResult:
    """One model's figures; latencies are per request, from enqueue to result, in milliseconds.

    The ``round_*`` tuples hold each interleaved round's own p50 and throughput, so that a comparison
    can pair a model's round with the other model's adjacent round (robust to machine drift).
    """

    name: str
    requests: int
    concurrency: int
    batch_size: int
    seq_length: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    requests_per_s: float
    sequences_per_s: float
    wall_s: float  # sum over rounds of first enqueue to last result of this model
    round_p50_ms: tuple[float, ...] = field(repr=False)
    round_requests_per_s: tuple[float, ...] = field(repr=False)
    latencies_ms: tuple[float, ...] = field(repr=False)

    @classmethod
    def from_rounds(
        cls, name: str, rounds: Sequence[tuple[Sequence[float], float]], settings: ServeSettings
    ) -> ServeResult:
        """Summarise raw (per-request seconds, wall seconds) of each round; numpy's linear percentiles."""
        if not rounds or any(not times or wall <= 0 for times, wall in rounds):
            raise ValueError(f"{name}: every round needs at least one latency and a positive wall time")
        ms = np.asarray([t for times, _ in rounds for t in times], dtype=np.float64) * 1e3
        wall_s = float(sum(wall for _, wall in rounds))
        p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
        return cls(
            name=name,
            requests=len(ms),
            concurrency=settings.concurrency,
            batch_size=settings.batch_size,
            seq_length=settings.seq_length,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            mean_ms=float(ms.mean()),
            requests_per_s=len(ms) / wall_s,
            sequences_per_s=len(ms) * settings.batch_size / wall_s,
            wall_s=wall_s,
            round_p50_ms=tuple(float(np.percentile(np.asarray(t) * 1e3, 50)) for t, _ in rounds),
            round_requests_per_s=tuple(len(t) / wall for t, wall in rounds),
            latencies_ms=tuple(float(v) for v in ms),
        )

    def to_dict(self, latencies: bool = True) -> dict[str, Any]:
        """JSON-ready record; `latencies=False` drops the raw per-request list."""
        record = asdict(self)
        for key in ("round_p50_ms", "round_requests_per_s", "latencies_ms"):
            record[key] = list(record[key])
        if not latencies:
            record.pop("latencies_ms")
        return record


def paired_speedups(baseline: ServeResult, other: ServeResult) -> dict[str, float]:
    """Speedup of `other` over `baseline`: median over rounds of per-round ratios, and pooled ratios.

    Rounds of the two models run back to back, so their ratio cancels drift that the pooled figures
    (whole-run p50 and throughput) carry when the machine's load changes during the run.
    """
    if len(baseline.round_p50_ms) != len(other.round_p50_ms):
        raise ValueError(f"{baseline.name} and {other.name} were not measured in the same rounds")
    p50 = [b / o for b, o in zip(baseline.round_p50_ms, other.round_p50_ms, strict=True)]
    thr = [o / b for b, o in zip(baseline.round_requests_per_s, other.round_requests_per_s, strict=True)]
    return {
        "p50": float(np.median(p50)),
        "throughput": float(np.median(thr)),
        "p50_pooled": baseline.p50_ms / other.p50_ms,
        "throughput_pooled": other.requests_per_s / baseline.requests_per_s,
    }


@dataclass
class _Request:
    inputs: Mapping[str, torch.Tensor]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class _Server:
    """One model behind a FIFO queue and a single worker thread (see the module docstring for why).

    The worker lives for the whole benchmark: OpenMP thread teams belong to the thread that first
    runs a parallel region, so a fresh worker per round would pay their start-up inside timed requests.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.device = _device_of(model)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._worker = threading.Thread(target=self._loop, name="ziplm-serve-worker", daemon=True)
        self._worker.start()

    def submit(self, inputs: Mapping[str, torch.Tensor]) -> _Request:
        request = _Request(inputs)
        self._queue.put(request)
        return request

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join()

    def _loop(self) -> None:
        while (request := self._queue.get()) is not None:
            try:
                with torch.inference_mode():  # thread-local: entered in the worker itself
                    self.model(**request.inputs)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
            except BaseException as err:  # reported to the client; the server keeps serving
                request.error = err
            finally:
                request.done.set()


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _vocab_size(name: str, model: nn.Module) -> int:
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not isinstance(vocab, int) or vocab < 1:
        raise ValueError(f"model {name!r} has no config.vocab_size; serve_benchmark needs an HF-style model")
    return vocab


def check_positions(name: str, model: nn.Module, seq_length: int, setting: str = "serve.seq_length") -> None:
    """A model that accepts fewer positions than the sequences it is given would fail mid-run: say so first."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and seq_length > limit:
        raise ValueError(
            f"seq_length {seq_length} is longer than model {name!r} accepts ({limit} positions); "
            f"set {setting} <= {limit}"
        )


def _make_inputs(
    count: int, vocab: int, settings: ServeSettings, device: torch.device, generator: torch.Generator
) -> list[dict[str, torch.Tensor]]:
    """`count` requests of random ids (batch_size x seq_length) with all-ones attention masks."""
    shape = (settings.batch_size, settings.seq_length)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, vocab, shape, generator=generator).to(device)
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return batches


def _warm_up(name: str, server: _Server, batches: Sequence[Mapping[str, torch.Tensor]]) -> None:
    """Untimed requests, one at a time, through the server's own worker (its thread pools, its caches)."""
    for inputs in batches:
        request = server.submit(inputs)
        request.done.wait()
        if request.error is not None:
            raise RuntimeError(f"model {name!r} failed on a warm-up request: {request.error!r}") from request.error


def _run_round(
    name: str, server: _Server, batches: Sequence[Mapping[str, torch.Tensor]], concurrency: int
) -> tuple[list[float], float]:
    """Clients send `batches` back to back; returns each request's seconds and the round's wall time."""
    latencies = [0.0] * len(batches)
    errors: list[BaseException] = []
    lock = threading.Lock()
    next_index = iter(range(len(batches)))

    def client() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None or errors:
                return
            start = time.perf_counter()
            request = server.submit(batches[i])
            request.done.wait()
            latencies[i] = time.perf_counter() - start
            if request.error is not None:
                errors.append(request.error)
                return

    clients = [threading.Thread(target=client, daemon=True) for _ in range(min(concurrency, len(batches)))]
    started = time.perf_counter()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"model {name!r} failed on a request: {errors[0]!r}") from errors[0]
    return latencies, wall


def serve_benchmark(models: Mapping[str, nn.Module], settings: ServeSettings) -> list[ServeResult]:
    """Benchmark every model under the same concurrent load, interleaved by rounds; one result each.

    Each model gets its own server (queue + worker); per round, `concurrency` clients send that
    round's share of requests to one model at a time, so models never compete for the cores.
    """
    if not models:
        raise ValueError("serve_benchmark needs at least one model, got none")
    names = list(models)
    vocabs = {name: _vocab_size(name, model) for name, model in models.items()}
    for name, model in models.items():
        check_positions(name, model, settings.seq_length)
        model.eval()
    previous_threads = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    servers = {name: _Server(model) for name, model in models.items()}
    generator = torch.Generator().manual_seed(settings.seed)
    rounds: dict[str, list[tuple[list[float], float]]] = {name: [] for name in names}
    try:
        for name, server in servers.items():
            _warm_up(name, server, _make_inputs(settings.warmup, vocabs[name], settings, server.device, generator))
        for r, size in enumerate(settings.round_sizes()):
            for name in names if r % 2 == 0 else reversed(names):
                server = servers[name]
                batches = _make_inputs(size, vocabs[name], settings, server.device, generator)
                rounds[name].append(_run_round(name, server, batches, settings.concurrency))
    finally:
        for server in servers.values():
            server.close()
        torch.set_num_threads(previous_threads)
    return [ServeResult.from_rounds(name, rounds[name], settings) for name in names]


def dense_architecture(member: nn.Module) -> nn.Module:
    """The member's dense twin: same HF class and config without the ziplm structure, random weights.

    Latency does not depend on weight values (dense fp32 kernels do the same work for any numbers),
    so this stands in for the dense model when its weights are not at hand. Weights are initialised
    normally (not left uninitialised) so that no denormal garbage can slow the kernels down.
    """
    config = getattr(member, "config", None)
    if config is None:
        raise ValueError(f"{type(member).__name__} has no HF config; cannot rebuild its dense architecture")
    config = copy.deepcopy(config)
    setattr(config, STRUCTURE_CONFIG_KEY, None)
    dense = type(member)(config)
    return dense.to(_device_of(member)).eval()
