"""kvserve against llama.cpp on the CPU: batch-1 greedy decode of the embedded model, one run.

    python scripts/compare_llamacpp.py                                  # bf16, 2 threads
    python scripts/compare_llamacpp.py --dtype bfloat16 --quantization int4 --threads 2 --rounds 3

The peer is llama-cpp-python loading the very GGUF file the embedded SmolLM2-135M-Instruct
is converted from (Q4_1), with the same thread count. Both engines get the same prompt
token ids (the chat template over --prompt, through kvserve's tokenizer), decode greedily
--new-tokens tokens at batch 1 (no EOS stop), and are timed the same way: TTFT from
submission to the first token, decode tok/s over the tokens after it. Rounds alternate
kvserve and llama.cpp, after one unmeasured warm-up each, so that drift on a shared machine
hits both; the medians and their ratio are printed, with the load average around the run.

llama-cpp-python is a benchmark peer, not a dependency: it compiles llama.cpp from source
(~7-15 minutes on 2 cores). Without it the script says how to install it and exits 2.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

INSTALL_HINT = ("llama_cpp is not importable: install the peer with\n"
                "    nice -n 19 pip install llama-cpp-python\n"
                "(it builds llama.cpp from source, ~7-15 minutes on 2 cores), then run this again.")


def timed_tokens(stream, count: int) -> tuple[list[int], float, float]:
    """(ids, seconds to the first, seconds from the first to the last) of `count` ids drawn
    from `stream`, a generator started at the call."""
    start = time.perf_counter()
    ids, first = [], 0.0
    for token in stream:
        ids.append(token)
        if len(ids) == 1:
            first = time.perf_counter()
        if len(ids) == count:
            break
    return ids, first - start, time.perf_counter() - first


def kvserve_stream(core, prompt: list[int], count: int):
    from kvserve.engine.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    name = f"cmp-{time.monotonic_ns()}"
    core.add_request(EngineRequest(name, prompt, SamplingParams(temperature=0.0, max_tokens=count, ignore_eos=True)))
    try:
        while core.has_unfinished_requests():
            for out in core.step():
                yield from out.new_token_ids
    finally:  # the caller stops at its count: finish the request's last step
        while core.has_unfinished_requests():
            core.step()


def llamacpp_stream(llm, prompt: list[int]):
    llm.reset()  # no reuse of the last round's prompt: each TTFT computes the whole prompt
    # temp 0: llama.cpp's greedy sampler; no repeat penalty, like kvserve's defaults
    return llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True)


def build_kvserve(args):
    from kvserve.config import EngineConfig
    from kvserve.engine.engine_core import EngineCore

    return EngineCore(EngineConfig.from_flat(dtype=args.dtype, quantization=args.quantization, threads=args.threads,
                                             kv_cache_gib=0.05, max_model_len=1024,
                                             enable_prefix_caching=False))


def prompt_ids(core, text: str) -> list[int]:
    from kvserve.tokenizer import load_tokenizer

    tok = load_tokenizer(core.tokenizer_path)
    return list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dtype", default="bfloat16", help="kvserve's dtype (float32, bfloat16, auto)")
    p.add_argument("--quantization", choices=["int8", "int4"], default=None, help="kvserve's weight-only quantization")
    p.add_argument("--threads", type=int, default=2, help="CPU threads, the same for both engines")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--prompt", default="Explain in a few sentences why the sky is blue and why sunsets are red.")
    args = p.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    from kvserve.default_model import gguf_path

    core = build_kvserve(args)
    llm = llama_cpp.Llama(model_path=str(gguf_path()), n_threads=args.threads, n_threads_batch=args.threads,
                          n_ctx=1024, n_batch=512, verbose=False)
    prompt = prompt_ids(core, args.prompt)
    engines = {"kvserve": lambda count: kvserve_stream(core, prompt, count),
               "llama.cpp": lambda count: llamacpp_stream(llm, prompt)}
    for make in engines.values():
        timed_tokens(make(8), 8)  # warm-up
    load_before = os.getloadavg()
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    outputs: dict[str, list[int]] = {}
    for _ in range(args.rounds):
        for name, make in engines.items():
            ids, ttft, rest = timed_tokens(make(args.new_tokens), args.new_tokens)
            figures[name].append((ttft, (len(ids) - 1) / rest))
            outputs[name] = ids
    print(f"{len(prompt)} prompt tokens, {args.new_tokens} new, batch 1, {args.threads} threads, "
          f"{args.rounds} rounds; load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"kvserve: --dtype {args.dtype}" + (f" --quantization {args.quantization}" if args.quantization else "")
          + f"; llama.cpp: llama-cpp-python {llama_cpp.__version__}, {gguf_path().name}")
    medians = {}
    for name, rows in figures.items():
        ttft, rate = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        medians[name] = (ttft, rate)
        each = ", ".join(f"{r[1]:.1f}" for r in rows)
        print(f"{name:<10} decode {rate:7.1f} tok/s (rounds: {each})   TTFT {1000 * ttft:7.1f} ms")
    (k_ttft, k_rate), (l_ttft, l_rate) = medians["kvserve"], medians["llama.cpp"]
    same = next((i for i, (a, b) in enumerate(zip(outputs["kvserve"], outputs["llama.cpp"])) if a != b),
                min(len(outputs["kvserve"]), len(outputs["llama.cpp"])))
    print(f"ratio kvserve / llama.cpp: decode {k_rate / l_rate:.2f}x, TTFT {k_ttft / l_ttft:.2f}x; "
          f"greedy outputs agree on the first {same} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
