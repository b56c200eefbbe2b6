"""`kvserve bench serve | sweep | offline`: the benchmark commands.

Only argparse lives here; the benchmark modules are imported when a command runs, so
that `kvserve --help` stays fast and the serving client never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys


def _rate(text: str) -> float:
    return math.inf if text.strip().lower() in ("inf", "infinity") else float(text)


def _add_target_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("target")
    g.add_argument("--base-url", default="http://127.0.0.1:8000", help="server root (loopback unless --allow-host)")
    g.add_argument("--model", default=None,
                   help="the `model` field of every request (default: the model the server serves, from /v1/models)")
    g.add_argument("--endpoint", default="/v1/completions", choices=["/v1/completions", "/v1/chat/completions"],
                   help="API to load: text completions (prompts sent as they are) or chat (through the chat template)")
    g.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="bearer token (default: $OPENAI_API_KEY)")
    g.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                   help="a non-loopback host this run may load (repeatable)")
    g.add_argument("--ignore-eos", action="store_true", help="ask for exactly max_tokens (vLLM/kvserve extension)")
    g.add_argument("--temperature", type=float, default=0.0, help="sampling temperature of every request (0 = greedy)")
    g.add_argument("--request-timeout", type=float, default=300.0, help="seconds one request may take")
    g.add_argument("--tokenizer", default=None, help="local tokenizer directory that sizes prompts "
                   "(default: the server's /tokenize, else one token per word)")


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload")
    g.add_argument("--dataset", default="random", choices=["random", "sharegpt", "prefix", "token-ids"],
                   help="where prompts come from: random tokens, a ShareGPT file, tenants sharing system prompts, "
                        "or an offline workload's token ids")
    g.add_argument("--dataset-path", default=None, help="ShareGPT-format JSON file (--dataset sharegpt)")
    g.add_argument("--num-prompts", type=int, default=None,
                   help="requests to send at most, per rate in a sweep (default: 100; token-ids: the whole workload)")
    g.add_argument("--input-len", type=int, default=256, help="random: prompt tokens")
    g.add_argument("--output-len", type=int, default=128, help="random, prefix: max_tokens per request")
    g.add_argument("--range-ratio", type=float, default=0.0, help="random: lengths vary by +-this fraction")
    g.add_argument("--sharegpt-output-len", type=int, default=0, help="sharegpt: fixed max_tokens (0 = the answer's)")
    g.add_argument("--num-tenants", type=int, default=4, help="prefix: tenants with their own system prompt")
    g.add_argument("--prefix-len", type=int, default=512, help="prefix: tokens of each system prompt")
    g.add_argument("--question-len", type=int, default=64, help="prefix: tokens of each question")
    g.add_argument("--offline-workload", default="throughput", metavar="NAME",
                   help="token-ids: the `kvserve bench offline --workload` to send (default: throughput)")
    g.add_argument("--vocab-size", type=int, default=None,
                   help="token-ids: the served model's vocabulary size (151936 for --arch qwen3-0.6b)")
    g.add_argument("--seed", type=int, default=0, help="seed of the prompts and of the arrival times")


def _add_load_args(p: argparse.ArgumentParser, sweep: bool) -> None:
    g = p.add_argument_group("load")
    if sweep:
        g.add_argument("--request-rates", required=True, help="comma-separated requests/s, e.g. 1,2,4,inf")
    else:
        g.add_argument("--request-rate", type=_rate, default=math.inf, help="requests/s (Poisson-like) or inf")
    g.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps: 1 = Poisson, <1 burstier")
    g.add_argument("--max-concurrency", type=int, default=None, help="requests in flight at most")
    g.add_argument("--duration", type=float, default=None, help="seconds after which nothing more is sent")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--slo", default="", help="goodput thresholds in seconds, e.g. ttft=0.5,tpot=0.05")
    g.add_argument("--result-file", default=None, help="JSON result (default: bench-results/<command>-<time>.json)")
    g.add_argument("--plot", action="store_true", help="also write PNG figures beside the result file")


def spec_from_args(args: argparse.Namespace, rate: float | None = None):
    """The BenchSpec the parsed flags describe (`rate` overrides --request-rate, for sweeps)."""
    from kvserve.bench.client import Target
    from kvserve.bench.datasets import DatasetConfig
    from kvserve.bench.metrics import parse_slo
    from kvserve.bench.serve import BenchSpec, LoadConfig, OutputConfig

    from kvserve.bench.client import check_host

    check_host(args.base_url, tuple(args.allow_host))  # before any request, even the /v1/models one
    target = Target(
        base_url=args.base_url, model=args.model or served_model(args.base_url, args.api_key), endpoint=args.endpoint, api_key=args.api_key,
        allowed_hosts=tuple(args.allow_host), ignore_eos=args.ignore_eos, temperature=args.temperature,
        timeout_s=args.request_timeout,
    )
    dataset = DatasetConfig(
        name=args.dataset, num_prompts=args.num_prompts, input_len=args.input_len, output_len=args.output_len,
        range_ratio=args.range_ratio, seed=args.seed, path=args.dataset_path, num_tenants=args.num_tenants,
        prefix_len=args.prefix_len, question_len=args.question_len, sharegpt_output_len=args.sharegpt_output_len,
        offline_workload=args.offline_workload, vocab_size=args.vocab_size,
    )
    load = LoadConfig(
        request_rate=args.request_rate if rate is None else rate, burstiness=args.burstiness,
        max_concurrency=args.max_concurrency, duration_s=args.duration, seed=args.seed,
        progress=not args.no_progress,
    )
    output = OutputConfig(result_file=args.result_file, plot=args.plot, slo=parse_slo(args.slo))
    return BenchSpec(target, dataset, load, output, tokenizer=args.tokenizer)


def served_model(base_url: str, api_key: str | None) -> str:
    """The first model the server lists at /v1/models; ValueError when it cannot be asked."""
    import httpx

    url = base_url.rstrip("/").removesuffix("/v1") + "/v1/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=10.0)
        response.raise_for_status()
        return response.json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"no --model given and {url} did not say which model it serves ({exc}); "
                         "pass --model NAME") from None


def _run_serve(args: argparse.Namespace) -> int:
    from kvserve.bench.serve import serve_command

    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        return _usage_error(exc)
    return serve_command(spec)


def _run_sweep(args: argparse.Namespace) -> int:
    from kvserve.bench.sweep import sweep_command

    try:
        rates = [_rate(r) for r in args.request_rates.split(",") if r.strip()]
        if not rates:
            raise ValueError("--request-rates needs at least one rate")
        spec = spec_from_args(args, rates[0])
    except ValueError as exc:
        return _usage_error(exc)
    return sweep_command(spec, rates)


def _usage_error(exc: Exception) -> int:
    print(f"kvserve bench: error: {exc}", file=sys.stderr)
    return 2


def _add_offline(bench_sub) -> None:
    """`kvserve bench offline`, when this version has kvserve.bench.offline.

    The module (engine, torch) is imported only when the command runs: its flags are
    parsed then by the parser that `kvserve.bench.offline.register` builds.
    """
    if importlib.util.find_spec("kvserve.bench.offline") is None:
        return
    # no prefix chars: every flag after `offline` is kept verbatim for the real parser
    offline = bench_sub.add_parser("offline", add_help=False, prefix_chars="\0",
                                   help="engine throughput on a named workload, in process")
    offline.add_argument("offline_args", nargs="*")
    offline.set_defaults(func=_run_offline)


def _run_offline(args: argparse.Namespace) -> int:
    return _run_lazy("offline", args.offline_args)


def _add_quality(bench_sub) -> None:
    """`kvserve bench quality` (kvserve.bench.quality, imported when it runs, as offline)."""
    quality = bench_sub.add_parser("quality", add_help=False, prefix_chars="\0",
                                   help="perplexity, logits and greedy agreement of weight formats")
    quality.add_argument("quality_args", nargs="*")
    quality.set_defaults(func=lambda args: _run_lazy("quality", args.quality_args))


def _run_lazy(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f"kvserve.bench.{name}")
    parser = argparse.ArgumentParser(prog="kvserve bench")
    module.register(parser.add_subparsers())
    real = parser.parse_args([name, *argv])
    return int(real.func(real) or 0)


def register(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="serving and offline benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK")
    bench.set_defaults(func=lambda args: bench.print_help() or 2)
    serve = bench_sub.add_parser("serve", help="load an OpenAI-compatible endpoint and measure it")
    sweep = bench_sub.add_parser("sweep", help="`bench serve` at several request rates, one line per rate")
    for parser, is_sweep in ((serve, False), (sweep, True)):
        _add_target_args(parser)
        _add_dataset_args(parser)
        _add_load_args(parser, is_sweep)
        _add_output_args(parser)
    serve.set_defaults(func=_run_serve)
    sweep.set_defaults(func=_run_sweep)
    _add_offline(bench_sub)
    _add_quality(bench_sub)
