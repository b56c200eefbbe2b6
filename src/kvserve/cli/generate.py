"""`kvserve generate "prompt" ...`: offline generation from the command line."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate text for one or more prompts (offline)",
                              description="Generate text offline; with no --model, uses the embedded SmolLM2-135M-Instruct.")
    p.add_argument("prompts", nargs="+", help="prompt text (one completion each)")
    p.add_argument("--no-chat", dest="chat", action="store_false",
                   help="send the prompt as plain text instead of a user message through the chat template")
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens at most (default: 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: 0)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="sample only from the most likely tokens whose probabilities add up to this (default: 1, all)")
    p.add_argument("--top-k", type=int, default=0,
                   help="sample only from this many most likely tokens (default: 0, all)")
    p.add_argument("--sampling-seed", type=int, default=None, help="seed of the requests' sampling")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    from kvserve.cli.engine_args import add_engine_args

    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kvserve.cli.engine_args import engine_config_from_args
    from kvserve.config import ConfigError, DeviceUnavailableError
    from kvserve.entrypoints.llm import LLM
    from kvserve.models.loader import ModelLoadError
    from kvserve.sampling_params import SamplingParams

    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                                top_k=args.top_k, seed=args.sampling_seed, stop=args.stop)
        config = engine_config_from_args(args)
        llm = LLM.from_config(config)
        if args.chat:
            outputs = llm.chat([[{"role": "user", "content": p}] for p in args.prompts], params)
        else:
            outputs = llm.generate(args.prompts, params)
    except (ConfigError, ModelLoadError, ValueError) as exc:
        print(f"kvserve generate: error: {exc}", file=sys.stderr)
        return 2
    except DeviceUnavailableError as exc:
        print(f"kvserve generate: error: {exc}", file=sys.stderr)
        return 1
    print_answers([out.outputs[0].text for out in outputs])
    return 0


def print_answers(answers: list[str]) -> None:
    """One answer as it is; several, each under a numbered rule so that they cannot run together."""
    if len(answers) == 1:
        print(answers[0])
        return
    for number, answer in enumerate(answers, 1):
        print(f"{'' if number == 1 else chr(10)}--- answer {number} of {len(answers)} ---")
        print(answer)
