"""`kvserve bench serve`: send a workload to an endpoint on a schedule and measure it.

The run is bounded three ways: by the workload's size (`num_prompts`), by `duration_s`
(no request is sent after it; those in flight finish within the request timeout) and
by Ctrl-C, which cancels what is in flight and reports what was measured so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from tqdm import tqdm

from kvserve.bench.arrivals import arrival_offsets
from kvserve.bench.client import Target, new_client, stream_request
from kvserve.bench.datasets import DatasetConfig, SampleRequest, load_samples
from kvserve.bench.metrics import Summary, summarize
from kvserve.bench.record import RequestRecord
from kvserve.bench.report import format_table, request_rows, result_document, write_json
from kvserve.bench.tokens import TokenCounter, pick_counter

T = TypeVar("T")


@dataclass
class LoadConfig:
    """When requests are sent and how many may be in flight; validated when built."""

    request_rate: float = math.inf  # requests/s on average; inf = all at time zero
    burstiness: float = 1.0  # gamma shape of the gaps: 1 = Poisson, < 1 burstier
    max_concurrency: int | None = None  # requests in flight at most; None = no limit
    duration_s: float | None = None  # send nothing after this many seconds; None = no limit
    seed: int = 0  # seed of the arrival times
    progress: bool = True  # a progress bar on stderr (when it is a terminal)

    def __post_init__(self) -> None:
        if not self.request_rate > 0:
            raise ValueError(f"request rate must be positive or inf, got {self.request_rate}")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness must be positive, got {self.burstiness}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max concurrency must be at least 1, got {self.max_concurrency}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration must be positive, got {self.duration_s}")


@dataclass
class RunResult:
    """Every request a run sent, and whether Ctrl-C (or the stop event) cut it short."""

    records: list[RequestRecord]
    t0: float  # perf_counter seconds when the run started sending
    interrupted: bool

    @property
    def duration_s(self) -> float:
        """First send to the last request's end (cancelled requests end at the interruption)."""
        return max((r.end or r.start for r in self.records), default=self.t0) - self.t0


class _Run:
    """The state one run shares between its dispatcher and its request tasks."""

    def __init__(self, target: Target, load: LoadConfig, stop: asyncio.Event, bar: tqdm) -> None:
        self.target, self.stop, self.bar = target, stop, bar
        self.records: list[RequestRecord] = []
        self.tasks: list[asyncio.Task] = []
        self.limit = asyncio.Semaphore(load.max_concurrency) if load.max_concurrency else contextlib.nullcontext()
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + load.duration_s if load.duration_s else math.inf

    def closed(self) -> bool:
        return self.stop.is_set() or time.perf_counter() >= self.deadline

    async def send(self, client, index: int, sample: SampleRequest) -> None:
        async with self.limit:
            if self.closed():
                return  # never sent: the run ended while this one waited for a slot
            record = RequestRecord(index, time.perf_counter(), tenant=sample.tenant, prompt_len=sample.prompt_len,
                                   output_len=sample.output_len)
            self.records.append(record)
            try:
                await stream_request(client, self.target, sample, record)
            except asyncio.CancelledError:
                record.error, record.error_message = "cancelled", "the run was interrupted"
                raise
            finally:
                self.bar.update(1)

    async def wait_until(self, when: float) -> None:
        """Sleep until perf_counter `when`, the deadline or the stop event, whichever is first."""
        delay = min(when, self.deadline) - time.perf_counter()
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), delay)

    async def cancel_on_stop(self) -> None:
        await self.stop.wait()
        for task in self.tasks:
            task.cancel()


async def run_load(target: Target, samples: list[SampleRequest], load: LoadConfig, stop: asyncio.Event | None = None) -> RunResult:
    """Send `samples` on the arrival schedule of `load` and record every request sent."""
    stop = stop or asyncio.Event()
    offsets = arrival_offsets(len(samples), load.request_rate, load.burstiness, load.seed)
    with tqdm(total=len(samples), unit="req", disable=None if load.progress else True, file=sys.stderr, leave=True) as bar:
        run = _Run(target, load, stop, bar)
        watcher = asyncio.create_task(run.cancel_on_stop())
        async with new_client(load.max_concurrency) as client:
            for index, (sample, offset) in enumerate(zip(samples, offsets)):
                await run.wait_until(run.t0 + offset)
                if run.closed():
                    break
                run.tasks.append(asyncio.create_task(run.send(client, index, sample)))
            await asyncio.gather(*run.tasks, return_exceptions=True)
        watcher.cancel()
    return RunResult(sorted(run.records, key=lambda r: r.index), run.t0, stop.is_set())


def run_until_interrupted(make: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run `make(stop)` in a fresh event loop; the first Ctrl-C sets `stop`, a second one aborts."""

    async def main() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C raises KeyboardInterrupt
            print("\ninterrupted: cancelling requests in flight, reporting what was measured", file=sys.stderr)

        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return await make(stop)
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


@dataclass
class OutputConfig:
    """Where the figures go and which SLO goodput is judged on."""

    result_file: str | None = None  # JSON result path; None = bench-results/<kind>-<time>.json
    plot: bool = False  # also write PNGs beside the result file
    slo: dict[str, float] = field(default_factory=dict)  # goodput thresholds (seconds); empty = none

    def path(self, kind: str) -> Path:
        return Path(self.result_file or f"bench-results/{kind}-{time.strftime('%Y%m%d-%H%M%S')}.json")


@dataclass
class BenchSpec:
    """Everything one `kvserve bench serve` (or one rate of a sweep) needs."""

    target: Target
    dataset: DatasetConfig
    load: LoadConfig
    output: OutputConfig
    tokenizer: str | None = None  # local tokenizer directory that sizes the prompts

    def __post_init__(self) -> None:
        if self.dataset.name == "token-ids" and self.target.endpoint != "/v1/completions":
            raise ValueError("the token-ids dataset sends token-id prompts, which only /v1/completions takes")

    def settings(self, counter: TokenCounter) -> dict:
        """The settings for the result file (the API key itself is never written)."""
        target = {k: v for k, v in asdict(self.target).items() if k != "api_key"}
        target["api_key_set"] = bool(self.target.api_key)
        return {"target": target, "dataset": asdict(self.dataset), "load": asdict(self.load),
                "slo": self.output.slo, "token_counter": counter.name}


def prepare(spec: BenchSpec) -> tuple[TokenCounter, list[SampleRequest]]:
    """The token counter and the workload (sized by the counter)."""
    counter = pick_counter(spec.tokenizer, spec.target.base_url, spec.target.model, spec.target.headers)
    return counter, load_samples(spec.dataset, counter)


def exit_code(summary: Summary, interrupted: bool) -> int:
    """130 after Ctrl-C, 1 when no request succeeded, else 0."""
    return 130 if interrupted else (0 if summary.succeeded else 1)


def serve_command(spec: BenchSpec) -> int:
    """Run the benchmark, print the table, write the JSON (and PNGs); returns the exit code."""
    counter, samples = prepare(spec)
    result = run_until_interrupted(lambda stop: run_load(spec.target, samples, spec.load, stop))
    summary = summarize(result.records, result.duration_s, spec.output.slo)
    title = "serving benchmark (interrupted: partial figures)" if result.interrupted else "serving benchmark"
    print(format_table(summary, title))
    path = spec.output.path("serve")
    document = result_document(spec.settings(counter), interrupted=result.interrupted, summary=asdict(summary),
                               requests=request_rows(result.records))
    print(f"result: {write_json(path, document)}")
    if spec.output.plot:
        from kvserve.bench import plot  # matplotlib only when asked for

        stem = path.with_suffix("")
        title = plot.run_title(spec.target.model, len(samples), [spec.load.request_rate], spec.load.max_concurrency)
        print(f"plot: {plot.latency_cdfs(result.records, f'{stem}-latency-cdf.png', title)}")
        print(f"plot: {plot.tokens_per_second(result.records, result.t0, f'{stem}-tokens-per-s.png', title=title)}")
    return exit_code(summary, result.interrupted)
