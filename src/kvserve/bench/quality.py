"""`kvserve bench quality`: what a weight format costs in quality, against a reference format.

One command, one model, several formats (unquantized and the `--quantization` methods),
each loaded in turn through the public `LLM` API:

    kvserve bench quality --methods none,int8,int4,fp8

For each it reports
- perplexity on a fixed public-domain text kept in the package (the first chapter's
  opening of *Alice's Adventures in Wonderland*, Lewis Carroll, 1865), teacher-forced in
  windows of `--window` tokens;
- the cosine similarity of its logits to the reference's, position by position (mean and
  worst);
- greedy agreement over a fixed prompt set: the share of generated tokens before the
  first difference from the reference's, and the share of prompts answered identically.

The first method listed is the reference. A method may name its own dtype after a colon
(`none:float32,int8,int4`: a float32 reference for bfloat16 quantized formats).

With `--kv-cache-dtype fp8`, every method but the reference runs on an FP8 KV cache (its
rows say `kv fp8`): `--methods none:float32,none:float32 --kv-cache-dtype fp8` is the
cost of the cache alone. The perplexity windows are prefills that read their keys and
values back from the cache, so they pay that cost as generation does.

Everything is deterministic (greedy, fixed text and prompts), so the figures depend on
the model and the formats, not the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from importlib import resources

import torch
import torch.nn.functional as F

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a hash table is in two sentences.",
    "List three primary colors.",
    "How do I reverse a list in Python?",
    "Why is the sky blue?",
    "Give me a short tip for better sleep.",
    "Translate 'good morning' into Spanish.",
    "What is 17 times 23?",
    "Name a famous painting by Leonardo da Vinci.",
    "Summarize the plot of Romeo and Juliet in one sentence.",
    "What does a CPU do?",
    "Suggest a name for a friendly robot.",
    "What is the boiling point of water at sea level?",
    "Write a one-line motivational quote.",
    "Describe a cat to someone who has never seen one.",
]
METHODS = ("none", "int8", "int4", "fp8")


@dataclass
class Result:
    method: str
    perplexity: float
    perplexity_change_pct: float  # against the reference
    logits_cosine_mean: float
    logits_cosine_min: float
    greedy_token_agreement: float  # generated tokens before the first difference / all generated
    greedy_identical: float  # prompts answered token for token as the reference did


def text_ids(tokenizer) -> list[int]:
    text = (resources.files("kvserve.bench") / "data" / "alice.txt").read_text()
    return tokenizer.encode(text)


@torch.inference_mode()
def window_logits(runner, ids: list[int], window: int) -> list[torch.Tensor]:
    """Float32 logits [n, vocab] of each window of `ids`, each window a fresh prompt."""
    out = []
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor(ids[start:start + window], dtype=torch.int64)
        if chunk.numel() < 2:
            break
        hidden = runner.prefill_forward(chunk, [chunk.numel()])
        out.append(runner.model.compute_logits(hidden).float().cpu())
    return out


def perplexity(logits: list[torch.Tensor], ids: list[int]) -> float:
    """Of `ids` under the logits of its consecutive windows (each window's last row predicts nothing)."""
    nll, count, start = 0.0, 0, 0
    for rows in logits:
        targets = torch.tensor(ids[start + 1:start + rows.shape[0]], dtype=torch.int64)
        nll += F.cross_entropy(rows[:targets.numel()], targets, reduction="sum").item()
        count += targets.numel()
        start += rows.shape[0]
    return math.exp(nll / count)


def cosines(logits: list[torch.Tensor], reference: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([F.cosine_similarity(a, b, dim=-1) for a, b in zip(logits, reference)])


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> tuple[float, float]:
    same, total, identical = 0, 0, 0
    for got, want in zip(tokens, reference):
        prefix = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        same += prefix
        total += len(want)
        identical += got == want
    return same / max(1, total), identical / max(1, len(reference))


def evaluate(spec: str, args: argparse.Namespace, kv_cache_dtype: str = "auto"):
    """(ids of the text, window logits, greedy tokens) of one format, `METHOD[:DTYPE]`."""
    from kvserve import LLM, SamplingParams

    method, _, dtype = spec.partition(":")
    settings = dict(dtype=dtype or args.dtype, threads=args.threads, enforce_eager=True, kv_cache_dtype=kv_cache_dtype)
    if method != "none":
        settings["quantization"] = method
    with LLM(model=args.model, **settings) as llm:
        ids = text_ids(llm.get_tokenizer())
        window = min(args.window, llm.engine.max_model_len)  # a window is one prompt
        logits = window_logits(llm.engine.core.runner, ids, window)
        params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
        outputs = llm.chat([[{"role": "user", "content": p}] for p in PROMPTS], params, use_tqdm=False)
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
    return ids, logits, tokens


def run(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted({m.partition(":")[0] for m in methods} - set(METHODS))
    if unknown or not methods:
        print(f"kvserve bench quality: error: --methods takes {', '.join(METHODS)} (got {args.methods!r})",
              file=sys.stderr)
        return 2
    if args.model is None:
        from kvserve.default_model import default_model_dir

        args.model = str(default_model_dir())
    results: list[Result] = []
    reference = None
    for method in methods:
        kv = "auto" if reference is None else args.kv_cache_dtype
        ids, logits, tokens = evaluate(method, args, kv)
        ppl = perplexity(logits, ids)
        if reference is None:
            reference = (ppl, logits, tokens)
        cos = cosines(logits, reference[1])
        token_share, identical = agreement(tokens, reference[2])
        label = method if kv == "auto" else f"{method} kv {kv}"
        results.append(Result(label, ppl, (ppl / reference[0] - 1) * 100, cos.mean().item(), cos.min().item(),
                              token_share, identical))
        print_row(results[-1], header=len(results) == 1)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"model": args.model, "dtype": args.dtype, "reference": methods[0],
                       "kv_cache_dtype": args.kv_cache_dtype,
                       "text_tokens": len(ids), "prompts": len(PROMPTS), "max_tokens": args.max_tokens,
                       "results": [asdict(r) for r in results]}, f, indent=2)
    return 0


def print_row(r: Result, header: bool) -> None:
    if header:
        print(f"{'method':20s} {'perplexity':>10s} {'change':>8s} {'cos mean':>9s} {'cos min':>8s} "
              f"{'greedy tokens':>13s} {'identical':>9s}")
    print(f"{r.method:20s} {r.perplexity:10.3f} {r.perplexity_change_pct:+7.2f}% {r.logits_cosine_mean:9.4f} "
          f"{r.logits_cosine_min:8.4f} {r.greedy_token_agreement:12.1%} {r.greedy_identical:9.1%}", flush=True)


def register(subparsers) -> None:
    p = subparsers.add_parser("quality", help="perplexity, logits and greedy agreement of weight formats",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a Hugging Face model directory (default: the embedded model)")
    p.add_argument("--methods", default="none,int8,int4",
                   help=f"comma-separated METHOD[:DTYPE], the first is the reference; methods: {', '.join(METHODS)} "
                        "(default: none,int8,int4)")
    p.add_argument("--dtype", default="bfloat16", help="activations and unquantized weights (default: bfloat16)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8", "fp8_e4m3"],
                   help="KV cache of every method but the reference: fp8 = E4M3 (default: auto, the model's dtype)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--window", type=int, default=512, help="tokens per perplexity window (default: 512)")
    p.add_argument("--max-tokens", type=int, default=32, help="greedy tokens per prompt (default: 32)")
    p.add_argument("--output-json", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run)
