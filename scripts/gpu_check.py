"""GPU check for kvserve's Triton kernels: correctness against torch references, then timings.

    python scripts/gpu_check.py [--skip-timing] [--variants]

Every kernel runs on fresh random inputs and is compared with its torch reference
(attention: the torch backend on float32 copies of the inputs). Errors are
||out - ref|| / ||ref||, the worst sequence of a batch; NaN never passes. Outputs are
poisoned with NaN before each run, so an unwritten row fails. Attention steps run under
torch.cuda.set_sync_debug_mode("error"): a host sync inside forward() fails the check.

Timings are triton.testing.do_bench medians: decode attention against the bytes it must
read over the measured copy bandwidth, prefill against torch SDPA (flash) and the matmul
rate, fused ops against their torch references. A table is printed last; with $OUT set,
the full results are also written to $OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import triton  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from kvserve import ops  # noqa: E402
from kvserve.attention import triton_kernels as K  # noqa: E402
from kvserve.attention.backend import AttentionMetadata, write_kv  # noqa: E402
from kvserve.attention.torch_backend import TorchAttentionBackend  # noqa: E402
from kvserve.attention.triton_backend import TritonAttentionBackend  # noqa: E402
from kvserve.attention.triton_kernels.prefill import prefill_config  # noqa: E402
from kvserve.ops.activation import silu_and_mul_torch, silu_and_mul_triton  # noqa: E402
from kvserve.ops.norm import rms_norm_torch, rms_norm_triton  # noqa: E402
from kvserve.ops.rotary import build_cos_sin_cache, rotary_torch_, rotary_triton_  # noqa: E402

DEV = "cuda"
TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-4}
CHECKS: list[dict] = []
TIMES: list[dict] = []


# ---------------------------------------------------------------- inputs

def make_step(seqs, num_heads, num_kv_heads, head_dim, block_size, dtype, spare_blocks=4):
    """Random cache with each sequence's cached prefix, this step's q/k/v and metadata.

    seqs: list of (cached_len, query_len); blocks are scattered (random permutation).
    """
    blocks = [triton.cdiv(c + q, block_size) for c, q in seqs]
    num_blocks = sum(blocks) + spare_blocks
    perm = torch.randperm(num_blocks, device=DEV).to(torch.int32)
    tables = torch.zeros(len(seqs), max(blocks), dtype=torch.int32, device=DEV)
    slots, start = [], 0
    for i, ((cached, q_len), n) in enumerate(zip(seqs, blocks)):
        tables[i, :n] = perm[start:start + n]
        start += n
        pos = torch.arange(cached, cached + q_len, device=DEV)
        slots.append(tables[i, pos // block_size].long() * block_size + pos % block_size)
    cache = torch.randn(2, num_blocks, block_size, num_kv_heads, head_dim, device=DEV, dtype=dtype)
    tokens = sum(q for _, q in seqs)
    q = torch.randn(tokens, num_heads, head_dim, device=DEV, dtype=dtype)
    k = torch.randn(tokens, num_kv_heads, head_dim, device=DEV, dtype=dtype)
    v = torch.randn(tokens, num_kv_heads, head_dim, device=DEV, dtype=dtype)
    q_lens, seq_lens = [q for _, q in seqs], [c + q for c, q in seqs]
    meta = AttentionMetadata(
        slot_mapping=torch.cat(slots),
        query_start_loc=torch.tensor([0] + q_lens, device=DEV).cumsum(0).to(torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEV),
        block_tables=tables, query_lens_cpu=q_lens, seq_lens_cpu=seq_lens,
        max_query_len=max(q_lens), max_seq_len=max(seq_lens),
    )
    return q, k, v, cache, meta


def poison_allocator(like: torch.Tensor) -> None:
    """Leave a NaN-filled block of like's size in the caching allocator, for the next empty_like."""
    torch.full_like(like, float("nan"))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    if out.isnan().any():
        return float("nan")
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def worst_seq_err(out, ref, meta) -> float:
    qsl = [0] + list(torch.tensor(meta.query_lens_cpu).cumsum(0).tolist())
    return max(rel_err(out[a:b], ref[a:b]) for a, b in zip(qsl, qsl[1:]))


def record(name: str, shape: str, err: float, tol: float) -> None:
    ok = err == err and err <= tol  # NaN never passes
    CHECKS.append(dict(check=name, shape=shape, err=err, tol=tol, ok=ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name:28s} {shape:56s} err {err:.2e} (tol {tol:.0e})", flush=True)


# ---------------------------------------------------------------- correctness

def check_backend(label, seqs, num_heads, num_kv_heads, head_dim, block_size, dtype):
    q, k, v, cache, meta = make_step(seqs, num_heads, num_kv_heads, head_dim, block_size, dtype)
    ref_cache = cache.float()
    ref = TorchAttentionBackend().forward(q.float(), k.float(), v.float(), ref_cache, meta, head_dim ** -0.5)
    expected_cache = cache.clone()
    write_kv(k, v, expected_cache, meta.slot_mapping)
    backend = TritonAttentionBackend()
    poison_allocator(q)
    torch.cuda.set_sync_debug_mode("error")
    out = backend.forward(q, k, v, cache, meta, head_dim ** -0.5)
    torch.cuda.set_sync_debug_mode("default")
    shape = f"H{num_heads}/{num_kv_heads} D{head_dim} bs{block_size} {str(dtype)[6:]} B{len(seqs)} max{meta.max_seq_len}"
    record(f"store_kv ({label})", shape, 0.0 if torch.equal(cache, expected_cache) else float("inf"), 0.0)
    record(f"attention {label}", shape, worst_seq_err(out, ref, meta), TOL[dtype])


def batches(block_size):
    """(label, seqs) for the shape grid: decode, prefill (fresh, prefix hit, chunk), mixed."""
    decode = [(c, 1) for c in (0, 1, 15, 16, 17, 100, 1000, 2999)]
    prefill = [(0, 300), (2 * block_size, 200), (1007, 129), (5, 1)]
    mixed = [(40, 1), (0, 77), (512, 1), (3 * block_size, 64), (2000, 1), (999, 33)]
    return [("decode", decode), ("prefill", prefill), ("mixed", mixed)]


def check_attention_grid():
    for head_dim in (64, 128):
        for num_kv_heads in (16, 8, 4, 2):  # GQA ratios 1, 2, 4, 8 with 16 query heads
            for block_size in (16, 32):
                for label, seqs in batches(block_size):
                    check_backend(label, seqs, 16, num_kv_heads, head_dim, block_size, torch.bfloat16)
    for dtype in (torch.float16, torch.float32):
        check_backend("mixed", batches(16)[2][1], 32, 8, 128, 16, dtype)
    check_backend("decode 32k", [(32767, 1), (20000, 1)], 32, 8, 128, 16, torch.bfloat16)
    check_backend("chunk @32k", [(32768 - 512, 512), (31000, 1)], 32, 8, 128, 16, torch.bfloat16)
    check_backend("prefill 8k", [(0, 8192)], 32, 8, 128, 16, torch.bfloat16)


def check_decode_step_graph():
    """decode_step with padded rows, eagerly and replayed from a CUDA graph."""
    q, k, v, cache, meta = make_step([(300, 1), (4000, 1), (0, 1), (0, 1)], 32, 8, 128, 16, torch.bfloat16)
    seq_lens, slots = meta.seq_lens.clone(), meta.slot_mapping.clone()
    seq_lens[2:], slots[2:] = 0, -1  # two padding rows
    backend = TritonAttentionBackend()
    splits = backend.num_splits(4, 8, 32768)
    ref_meta = AttentionMetadata(meta.slot_mapping[:2], meta.query_start_loc[:3], meta.seq_lens[:2],
                                 meta.block_tables[:2], [1, 1], meta.seq_lens_cpu[:2], 1, 4001)
    ref = TorchAttentionBackend().forward(q[:2].float(), k[:2].float(), v[:2].float(), cache.float(), ref_meta,
                                          128 ** -0.5)
    expected_cache = cache.clone()
    write_kv(k[:2], v[:2], expected_cache, slots[:2])
    args = (q, k, v, cache, slots, meta.block_tables, seq_lens, 128 ** -0.5, splits)
    eager = backend.decode_step(*args)
    graph_out = torch.full_like(q, float("nan"))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_out.copy_(backend.decode_step(*args))
    graph.replay()
    shape = f"B4 (2 padded) splits {splits}"
    record("decode_step eager", shape, rel_err(eager[:2], ref), TOL[torch.bfloat16])
    record("decode_step graph replay", shape, rel_err(graph_out[:2], ref), TOL[torch.bfloat16])
    zero_ok = torch.equal(eager[2:], torch.zeros_like(eager[2:])) and torch.equal(graph_out[2:], eager[2:])
    record("padded rows -> zeros", shape, 0.0 if zero_ok else float("inf"), 0.0)
    record("store_kv padded slots skipped", shape, 0.0 if torch.equal(cache, expected_cache) else float("inf"), 0.0)


def check_ops():
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        tol = TOL[dtype] / 4
        x, res = torch.randn(1000, 4096, device=DEV, dtype=dtype), torch.randn(1000, 4096, device=DEV, dtype=dtype)
        w = (1 + 0.1 * torch.randn(4096, device=DEV)).to(dtype)
        out, new_res = rms_norm_triton(x, w, 1e-6, residual=res)
        ref, ref_res = rms_norm_torch(x, w, 1e-6, residual=res)
        record("rms_norm+residual", f"[1000, 4096] {dtype}", max(rel_err(out, ref), rel_err(new_res, ref_res)), tol)
        out, _ = rms_norm_triton(x[:, :1000], w[:1000], 1e-6)  # strided rows, masked tail
        record("rms_norm", f"[1000, 1000] strided {dtype}", rel_err(out, rms_norm_torch(x[:, :1000], w[:1000], 1e-6)[0]), tol)
        check_rotary(dtype, tol)
        gate_up = 3 * torch.randn(1000, 2 * 14336, device=DEV, dtype=dtype)
        record("silu_and_mul", f"[1000, 28672] {dtype}", rel_err(silu_and_mul_triton(gate_up), silu_and_mul_torch(gate_up)),
               tol)


def check_rotary(dtype, tol):
    for head_dim, rot in ((128, 128), (64, 64), (128, 64)):
        qkv = torch.randn(1000, 48 * head_dim, device=DEV, dtype=dtype)
        q, k = qkv[:, :32 * head_dim].view(1000, 32, head_dim), qkv[:, 32 * head_dim:40 * head_dim].view(1000, 8, head_dim)
        positions = torch.randint(0, 32768, (1000,), device=DEV)
        inv_freq = 1.0 / 500000.0 ** (torch.arange(0, rot, 2, device=DEV).float() / rot)
        cache = build_cos_sin_cache(inv_freq, 32768)
        expected = qkv.clone()
        eq, ek = expected[:, :32 * head_dim].view(1000, 32, head_dim), expected[:, 32 * head_dim:40 * head_dim].view(
            1000, 8, head_dim)
        rotary_torch_(eq, ek, positions, cache)
        rotary_triton_(q, k, positions, cache)
        record("rotary (in place)", f"D{head_dim} rot{rot} strided qkv {dtype}", rel_err(qkv, expected), tol)


def check_dispatch():
    x = torch.randn(4, 64, device=DEV, dtype=torch.bfloat16)
    out, _ = ops.rms_norm(x, torch.ones(64, device=DEV, dtype=torch.bfloat16), 1e-6)
    record("ops dispatch (cuda)", "rms_norm", rel_err(out, rms_norm_torch(x, torch.ones_like(x[0]), 1e-6)[0]), 1e-2)


# ---------------------------------------------------------------- timing

def bench(fn) -> float:
    """Median milliseconds."""
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def copy_bandwidth() -> float:
    """Bytes/s of a 2 GiB device-to-device copy, counting bytes read plus bytes written."""
    src = torch.randn(2 ** 28, device=DEV)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() * 4 / (ms * 1e-3)


def matmul_rate() -> float:
    a, b = (torch.randn(8192, 8192, device=DEV, dtype=torch.bfloat16) for _ in range(2))
    return 2 * 8192 ** 3 / (bench(lambda: a @ b) * 1e-3)


def timed(kind, name, shape, ms, floor_ms=None, peer_ms=None, peer=""):
    row = dict(kind=kind, name=name, shape=shape, ms=ms, floor_ms=floor_ms, peer_ms=peer_ms, peer=peer)
    TIMES.append(row)
    print(f"time {kind:8s} {name:34s} {shape:40s} {ms * 1e3:9.1f} us", flush=True)


DECODE_CASES = [  # (label, batch, context, heads, kv_heads)
    ("llama3-8b B1 32k", 1, 32768, 32, 8),
    ("llama3-8b B16 8k", 16, 8192, 32, 8),
    ("llama3-8b B64 2k", 64, 2048, 32, 8),
    ("llama3-8b B256 1k", 256, 1024, 32, 8),
    ("qwen3-0.6b B256 600", 256, 600, 16, 8),
]
DECODE_VARIANTS = [dict(block_n=64, num_warps=4, num_stages=3), dict(block_n=64, num_warps=4, num_stages=2),
                   dict(block_n=128, num_warps=8, num_stages=3)]


def time_decode(bandwidth, variants):
    """Default tiles at the default split count, x2, x4 and 1 split; CUDA-graph replay; other tiles."""
    for label, batch, ctx, heads, kv_heads in DECODE_CASES:
        q, k, v, cache, meta = make_step([(ctx - 1, 1)] * batch, heads, kv_heads, 128, 16, torch.bfloat16, 0)
        floor = batch * ctx * kv_heads * 128 * 2 * 2 / bandwidth * 1e3
        default = TritonAttentionBackend().num_splits(batch, kv_heads, ctx)
        splits = sorted({1, default} | ({2 * default, 4 * default} if variants else set()))
        configs = [(s, DECODE_VARIANTS[0]) for s in splits if triton.cdiv(ctx, s) >= 64]
        configs += [(default, c) for c in (variants or [])[1:]]
        for s, cfg in configs:
            def fn(s=s, cfg=cfg):
                return K.decode_attention(q, cache, meta.block_tables, meta.seq_lens, 0.088, num_splits=s, **cfg)
            mark = " (default)" if (s, cfg) == (default, DECODE_VARIANTS[0]) else ""
            timed("decode", f"splits={s} {fmt(cfg)}{mark}", label, bench(fn), floor_ms=floor)
        timed("decode", f"splits={default} default, graph replay", label, graph_ms(
            lambda: K.decode_attention(q, cache, meta.block_tables, meta.seq_lens, 0.088, num_splits=default)),
            floor_ms=floor)


def graph_ms(fn) -> float:
    """Median ms of fn replayed from a CUDA graph (no launch overhead)."""
    fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench(graph.replay)


def fmt(cfg: dict) -> str:
    short = dict(block_m="m", block_n="n", num_warps="w", num_stages="s")
    return " ".join(f"{short[k]}{v}" for k, v in cfg.items())


PREFILL_VARIANTS = [None,  # prefill_config's choice
                    dict(block_m=128, block_n=128, num_warps=8, num_stages=3),
                    dict(block_m=128, block_n=64, num_warps=8, num_stages=2),
                    dict(block_m=128, block_n=64, num_warps=8, num_stages=3),
                    dict(block_m=64, block_n=64, num_warps=4, num_stages=3),
                    dict(block_m=64, block_n=128, num_warps=4, num_stages=2)]


def time_prefill(matmul, variants):
    cases = [("llama3-8b 1x8192", [(0, 8192)], 32, 8), ("llama3-8b chunk 2k@6k", [(6144, 2048)], 32, 8),
             ("qwen3-0.6b 16x1024", [(0, 1024)] * 16, 16, 8), ("D64 H32/8 1x8192", [(0, 8192)], 32, 8)]
    for label, seqs, heads, kv_heads in cases:
        head_dim = 64 if "D64" in label else 128
        q, k, v, cache, meta = make_step(seqs, heads, kv_heads, head_dim, 16, torch.bfloat16, 0)
        flops = sum(4 * heads * head_dim * ql * (c + (ql + 1) / 2) for c, ql in seqs)
        peer_ms = sdpa_flash_ms(seqs, heads, kv_heads, head_dim)
        for cfg in (variants if variants else PREFILL_VARIANTS[:1]):
            def fn(cfg=cfg or {}):
                return K.prefill_attention(q, cache, meta.block_tables, meta.seq_lens, meta.query_start_loc,
                                           meta.max_query_len, head_dim ** -0.5, **cfg)
            try:
                ms = bench(fn)
            except Exception as e:  # a variant may not fit the shared memory
                print(f"variant {cfg} failed: {str(e)[:120]}")
                continue
            name = fmt(cfg) if cfg else "default " + fmt(prefill_config(head_dim, torch.bfloat16))
            timed("prefill", name, label, ms, floor_ms=flops / matmul * 1e3, peer_ms=peer_ms,
                  peer="sdpa flash" if peer_ms else "")


def sdpa_flash_ms(seqs, heads, kv_heads, head_dim):
    """Torch SDPA flash on the same work, contiguous K/V; only for fresh prompts (is_causal)."""
    if any(c for c, _ in seqs):
        return None
    ql = seqs[0][1]
    q = torch.randn(len(seqs), heads, ql, head_dim, device=DEV, dtype=torch.bfloat16)
    k, v = (torch.randn(len(seqs), heads, ql, head_dim, device=DEV, dtype=torch.bfloat16) for _ in range(2))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))


def time_ops(bandwidth):
    n, hidden, inter = 8192, 4096, 14336
    x, res = (torch.randn(n, hidden, device=DEV, dtype=torch.bfloat16) for _ in range(2))
    w = torch.randn(hidden, device=DEV, dtype=torch.bfloat16)
    floor = 4 * n * hidden * 2 / bandwidth * 1e3
    timed("op", "rms_norm+residual triton", f"[{n}, {hidden}]", bench(lambda: rms_norm_triton(x, w, 1e-6, res)), floor,
          bench(lambda: rms_norm_torch(x, w, 1e-6, res)), "torch eager")
    qkv = torch.randn(n, 48 * 128, device=DEV, dtype=torch.bfloat16)
    q, k = qkv[:, :4096].view(n, 32, 128), qkv[:, 4096:5120].view(n, 8, 128)
    positions = torch.randint(0, 8192, (n,), device=DEV)
    cache = build_cos_sin_cache(1.0 / 500000.0 ** (torch.arange(0, 128, 2, device=DEV).float() / 128), 8192)
    floor = 2 * n * 40 * 128 * 2 / bandwidth * 1e3
    timed("op", "rotary triton", f"q[{n},32,128] k[{n},8,128]", bench(lambda: rotary_triton_(q, k, positions, cache)),
          floor, bench(lambda: rotary_torch_(q, k, positions, cache)), "torch eager")
    gate_up = torch.randn(n, 2 * inter, device=DEV, dtype=torch.bfloat16)
    floor = 3 * n * inter * 2 / bandwidth * 1e3
    timed("op", "silu_and_mul triton", f"[{n}, {2 * inter}]", bench(lambda: silu_and_mul_triton(gate_up)), floor,
          bench(lambda: silu_and_mul_torch(gate_up)), "torch eager")
    kv = torch.randn(2, n, 8, 128, device=DEV, dtype=torch.bfloat16)
    kv_cache = torch.empty(2, n // 16 + 1, 16, 8, 128, device=DEV, dtype=torch.bfloat16)
    slots = torch.randperm(n, device=DEV)
    floor = 4 * n * 8 * 128 * 2 / bandwidth * 1e3
    timed("op", "store_kv triton", f"T{n} Hkv8 D128", bench(lambda: K.store_kv(kv[0], kv[1], kv_cache, slots)), floor,
          bench(lambda: write_kv(kv[0], kv[1], kv_cache, slots)), "index_copy_")


# ---------------------------------------------------------------- report

def print_tables(env):
    failed = [c for c in CHECKS if not c["ok"]]
    print(f"\n== {env['device']}  {env['date']}  torch {env['torch']}  triton {env['triton']}")
    print(f"== copy {env['copy_TBps']:.2f} TB/s (read+write), bf16 matmul {env['matmul_TFLOPs']:.0f} TFLOP/s")
    print(f"== checks: {len(CHECKS) - len(failed)}/{len(CHECKS)} passed; worst err by kind:")
    worst: dict[str, float] = {}
    for c in CHECKS:
        kind = c["check"].split(" ")[0]
        worst[kind] = max(worst.get(kind, 0.0), c["err"]) if c["err"] == c["err"] else float("nan")
    print("   " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    for c in failed:
        print(f"   FAIL {c['check']} {c['shape']} err {c['err']:.2e}")
    print(f"{'kind':8s} {'case':28s} {'variant':34s} {'us':>8s} {'floor us':>9s} {'of floor':>8s} {'peer us':>8s}")
    for t in TIMES:
        floor = f"{t['floor_ms'] * 1e3:9.1f} {t['floor_ms'] / t['ms']:7.0%}" if t["floor_ms"] else " " * 17
        peer = f"{t['peer_ms'] * 1e3:8.1f} {t['peer']}" if t["peer_ms"] else ""
        print(f"{t['kind']:8s} {t['shape'][:28]:28s} {t['name'][:34]:34s} {t['ms'] * 1e3:8.1f} {floor} {peer}")
    return not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--variants", action="store_true", help="time every tile-size variant, not only the defaults")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check needs a CUDA GPU")
        return 2
    torch.manual_seed(0)
    env = dict(device=torch.cuda.get_device_name(), date=datetime.date.today().isoformat(), torch=torch.__version__,
               triton=triton.__version__, copy_TBps=copy_bandwidth() / 1e12, matmul_TFLOPs=matmul_rate() / 1e12)
    check_attention_grid()
    check_decode_step_graph()
    check_ops()
    check_dispatch()
    if not args.skip_timing:
        time_decode(env["copy_TBps"] * 1e12, DECODE_VARIANTS if args.variants else None)
        time_prefill(env["matmul_TFLOPs"] * 1e12, PREFILL_VARIANTS if args.variants else None)
        time_ops(env["copy_TBps"] * 1e12)
    ok = print_tables(env)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(dict(env=env, checks=CHECKS, times=TIMES), indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
