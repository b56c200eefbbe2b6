"""What constrained decoding costs: output tokens/s of a batch under a JSON schema against the
same batch unconstrained, in one process on one engine, and the time to get a matcher for a
grammar that is already compiled.

Both sides generate exactly `--max-tokens` tokens per request (EOS ignored; the schema asks for
a long array, so the grammar never ends early). Rounds interleave the two sides and the best of
each is kept, so that a burst of load from elsewhere on a shared machine hits both alike.
Prints one JSON line:

    python scripts/structured_overhead.py [--model DIR] [--batch 64] [--max-tokens 64] [--rounds 3] [--profile]

With `--profile`, one more round of each side runs with the step's phases timed (host ms per
step: schedule, prepare inputs, forward, masks (advance, fill, wait for the job, upload),
apply mask, sample, process outputs, ...; on a GPU also the device's ms of the mask upload,
the mask's apply and the sampling, `[gpu]` rows; see kvserve.bench.step_phases), printed as
a table after the JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

from kvserve.bench.step_phases import StepPhases
from kvserve.entrypoints.llm import LLM
from kvserve.sampling_params import SamplingParams
from kvserve.structured import grammars
from kvserve.structured.compiler import GrammarCompiler, load_ll_tokenizer
from kvserve.structured.spec import StructuredOutputs

# records of nested objects, enums, bounded numbers and optional fields, many of them
SCHEMA = {"type": "array", "minItems": 1000, "items": {
    "type": "object", "additionalProperties": False, "required": ["name", "age", "color", "address"],
    "properties": {
        "name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "color": {"enum": ["red", "green", "blue"]}, "score": {"type": "number"},
        "address": {"type": "object", "additionalProperties": False, "required": ["city"],
                    "properties": {"city": {"type": "string", "maxLength": 20}, "zip": {"type": "string",
                                                                                          "pattern": "^[0-9]{5}$"}}},
    }}}
PROMPT = "<|im_start|>user\nList people as JSON.<|im_end|>\n<|im_start|>assistant\n"


def tokens_per_second(llm: LLM, params: SamplingParams, batch: int) -> float:
    begun = time.perf_counter()
    outputs = llm.generate([PROMPT] * batch, params, use_tqdm=False)
    seconds = time.perf_counter() - begun
    return sum(len(o.outputs[0].token_ids) for o in outputs) / seconds


def cached_compile_ms(model_dir: str, grammar: str, calls: int = 1000) -> float:
    compiler = GrammarCompiler(load_ll_tokenizer(model_dir))
    compiler.matcher(grammar)  # the one compile
    begun = time.perf_counter()
    for _ in range(calls):
        compiler.matcher(grammar)
    return (time.perf_counter() - begun) / calls * 1e3


def profiled(llm: LLM, params: SamplingParams, batch: int) -> dict[str, float]:
    phases = StepPhases()
    with phases.timing(llm.engine.core.runner.model):
        tokens_per_second(llm, params, batch)
    return phases.per_step_ms()


def phase_table(sides: dict[str, dict[str, float]]) -> str:
    labels = list(dict.fromkeys(label for side in sides.values() for label in side))
    rows = [f"{'ms per step':<28}" + "".join(f"{name:>16}" for name in sides)]
    for label in sorted(labels, key=lambda k: (k.startswith("[gpu]"), k == "step", k == "other", k.startswith("[bg]"))):
        rows.append(f"{label:<28}" + "".join(f"{side.get(label, 0.0):16.3f}" for side in sides.values()))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the embedded SmolLM2-135M)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="then time each phase of a step (host ms per step)")
    args = parser.parse_args()
    grammar = grammars.json_schema(SCHEMA)
    plain = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    constrained = plain.clone(structured=StructuredOutputs(grammar))
    llm = LLM(args.model, max_num_seqs=args.batch, max_model_len=512, kv_cache_gib=0.5)
    try:
        tokens_per_second(llm, constrained, 2)  # warm up both paths (tokenizer bridge, first compile)
        best = {"unconstrained": 0.0, "constrained": 0.0}
        for _ in range(args.rounds):
            best["unconstrained"] = max(best["unconstrained"], tokens_per_second(llm, plain, args.batch))
            best["constrained"] = max(best["constrained"], tokens_per_second(llm, constrained, args.batch))
        model_dir = str(llm.get_tokenizer().name_or_path)
        sides = {"unconstrained": profiled(llm, plain, args.batch),
                 "constrained": profiled(llm, constrained, args.batch)} if args.profile else None
    finally:
        llm.shutdown()
    print(json.dumps({
        "batch": args.batch, "max_tokens": args.max_tokens, "rounds": args.rounds,
        "unconstrained_tok_s": round(best["unconstrained"], 1), "constrained_tok_s": round(best["constrained"], 1),
        "constrained_over_unconstrained": round(best["constrained"] / best["unconstrained"], 3),
        "cached_compile_ms": round(cached_compile_ms(model_dir, grammar), 4),
    }))
    if sides:
        print(phase_table(sides))


if __name__ == "__main__":
    main()
