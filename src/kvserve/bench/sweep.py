"""`kvserve bench sweep`: the serving benchmark at several request rates, one line per rate.

Each rate gets a fresh workload (the dataset seed plus the rate's position), so that a
server's prefix cache does not carry one rate's prompts into the next.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, replace

from kvserve.bench.datasets import load_samples
from kvserve.bench.metrics import Summary, summarize
from kvserve.bench.report import SWEEP_HEADER, result_document, sweep_line, write_json
from kvserve.bench.serve import BenchSpec, run_load, run_until_interrupted
from kvserve.bench.tokens import TokenCounter, pick_counter


async def run_sweep(spec: BenchSpec, counter: TokenCounter, rates: list[float], stop: asyncio.Event) -> tuple[list[tuple[float, Summary]], bool]:
    """Run every rate in turn, printing its line as it ends; stops early on `stop`."""
    rows: list[tuple[float, Summary]] = []
    print(SWEEP_HEADER, flush=True)
    for i, rate in enumerate(rates):
        samples = load_samples(replace(spec.dataset, seed=spec.dataset.seed + i), counter)
        result = await run_load(spec.target, samples, replace(spec.load, request_rate=rate), stop)
        rows.append((rate, summarize(result.records, result.duration_s, spec.output.slo)))
        print(sweep_line(*rows[-1]) + ("  (interrupted)" if result.interrupted else ""), flush=True)
        if result.interrupted:
            return rows, True
    return rows, False


def sweep_command(spec: BenchSpec, rates: list[float]) -> int:
    """Sweep `rates`, write one JSON with a summary per rate (and the plot); returns the exit code."""
    counter = pick_counter(spec.tokenizer, spec.target.base_url, spec.target.model, spec.target.headers)
    rows, interrupted = run_until_interrupted(lambda stop: run_sweep(spec, counter, rates, stop))
    path = spec.output.path("sweep")
    runs = [{"request_rate": rate, "summary": asdict(summary)} for rate, summary in rows]
    print(f"result: {write_json(path, result_document(spec.settings(counter), interrupted=interrupted, runs=runs))}")
    if spec.output.plot and rows:
        from kvserve.bench import plot

        title = plot.run_title(spec.target.model, spec.dataset.num_prompts, [r for r, _ in rows],
                               spec.load.max_concurrency)
        png = path.with_suffix("").as_posix() + "-throughput-latency.png"
        print(f"plot: {plot.throughput_latency(rows, png, title)}")
    if interrupted:
        return 130
    return 0 if all(summary.succeeded for _, summary in rows) else 1
