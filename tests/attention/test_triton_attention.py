"""Triton attention kernels and backend against the torch reference backend.

On a CPU-only machine the kernels run in Triton's interpreter (TRITON_INTERPRET=1, see
tests/ops/triton_interpret.py), so shapes are tiny. On a GPU they compile.
"""

from __future__ import annotations

import pytest
import torch
from tests.ops import triton_interpret

DEVICE = triton_interpret.setup()

from kvserve.attention import triton_kernels as kernels  # noqa: E402
from kvserve.attention.backend import AttentionMetadata  # noqa: E402
from kvserve.attention.torch_backend import TorchAttentionBackend  # noqa: E402
from kvserve.attention.triton_backend import TritonAttentionBackend  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def make_step(seqs, num_heads=4, num_kv_heads=2, head_dim=32, block_size=16, dtype=torch.float32, seed=0):
    """A random cache holding each sequence's cached prefix, and this step's q/k/v + metadata.

    seqs: list of (cached_len, query_len). Blocks are handed out in a shuffled order, so
    that a wrong block-table lookup cannot pass.
    """
    g = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-(c + q) // block_size) for c, q in seqs]
    num_blocks = sum(blocks_per_seq) + 3
    perm = torch.randperm(num_blocks, generator=g)
    shape = (2, num_blocks, block_size, num_kv_heads, head_dim)
    kv_cache = torch.randn(shape, generator=g).to(dtype)
    tables = torch.zeros(len(seqs), max(blocks_per_seq), dtype=torch.int32)
    slots, start = [], 0
    for i, ((cached, q_len), n) in enumerate(zip(seqs, blocks_per_seq)):
        tables[i, :n] = perm[start:start + n]
        start += n
        for pos in range(cached, cached + q_len):
            slots.append(int(tables[i, pos // block_size]) * block_size + pos % block_size)
    num_tokens = sum(q for _, q in seqs)
    q, k, v = (torch.randn(num_tokens, h, head_dim, generator=g).to(dtype)
               for h in (num_heads, num_kv_heads, num_kv_heads))
    q_lens = [q_len for _, q_len in seqs]
    seq_lens = [c + q_len for c, q_len in seqs]
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=DEVICE),
        query_start_loc=torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0).to(torch.int32).to(DEVICE),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=DEVICE),
        block_tables=tables.to(DEVICE),
        query_lens_cpu=q_lens,
        seq_lens_cpu=seq_lens,
        max_query_len=max(q_lens),
        max_seq_len=max(seq_lens),
    )
    return [t.to(DEVICE) for t in (q, k, v, kv_cache)] + [meta]


def rel_err(out, ref):
    assert not out.isnan().any()
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def check_backend(seqs, num_sms=132, **shape):
    q, k, v, kv_cache, meta = make_step(seqs, **shape)
    ref_cache = kv_cache.clone()
    ref = TorchAttentionBackend().forward(q, k, v, ref_cache, meta, 0.3)
    out = TritonAttentionBackend(num_sms=num_sms).forward(q, k, v, kv_cache, meta, 0.3)
    assert torch.equal(kv_cache, ref_cache), "K/V written to the wrong slots"
    assert rel_err(out, ref) < TOL[q.dtype]


def test_decode_batch_with_splits_and_gqa():
    # few SMs -> several splits per sequence; lengths cross block and split boundaries
    check_backend([(40, 1), (0, 1), (700, 1), (15, 1)], num_sms=4, num_heads=8, num_kv_heads=2)  # 2 splits


def test_prefill_fresh_prefix_hit_and_chunk_continuation():
    # fresh prompt; prefix hit of 2 full blocks; chunk continuing mid-block
    check_backend([(0, 70), (32, 20), (45, 3)], num_heads=4, num_kv_heads=4)


def test_mixed_prefill_and_decode_batch():
    check_backend([(20, 1), (0, 37), (600, 1), (16, 9)], num_sms=4, num_heads=6, num_kv_heads=2)  # 2 splits


def test_speculative_verification_batch():
    # k + 1 = 5 queries after a cached context (causal within the new tokens, crossing a
    # block edge), next to plain decodes and a request with fewer drafts
    check_backend([(37, 5), (20, 1), (123, 5), (14, 3), (600, 1)], num_sms=4, num_heads=4, num_kv_heads=2)


@pytest.mark.parametrize("head_dim,num_heads,num_kv_heads,block_size", [
    (64, 2, 2, 16), (64, 4, 2, 32), (128, 4, 1, 16), (128, 8, 1, 32),  # GQA ratios 1, 2, 4, 8
])
def test_shape_grid_mixed_batch(head_dim, num_heads, num_kv_heads, block_size):
    check_backend([(37, 1), (block_size, block_size + 3)], num_sms=1,
                  head_dim=head_dim, num_heads=num_heads, num_kv_heads=num_kv_heads, block_size=block_size)


@pytest.mark.parametrize("head_dim", [8, 80, 96, 100])  # padded to 16 / 128: masked features
def test_head_sizes_that_are_not_a_power_of_two(head_dim):
    # a mixed batch (decode, chunk continuation, fresh prompt), then decodes over 2 splits (merge kernel)
    check_backend([(300, 1), (16, 19), (0, 5)], num_sms=1, head_dim=head_dim, num_heads=4, num_kv_heads=2)
    check_backend([(600, 1), (9, 1)], num_sms=1, head_dim=head_dim, num_heads=2, num_kv_heads=1)  # 2 splits


def test_head_size_past_the_kernels_is_refused_with_its_value():
    q, k, v, kv_cache, meta = make_step([(0, 3)], head_dim=320)
    with pytest.raises(ValueError, match="head sizes 1..256, got 320"):
        TritonAttentionBackend().forward(q, k, v, kv_cache, meta, 0.3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_mixed_batch(dtype):
    check_backend([(33, 1), (10, 30)], dtype=dtype, num_heads=8, num_kv_heads=1, head_dim=64, block_size=32)


def test_store_kv_skips_padding_slots_and_reads_strided_k():
    q, k, v, kv_cache, meta = make_step([(0, 5)], num_kv_heads=2, head_dim=32)
    qkv = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], dim=1)  # fused projection output
    k_view = qkv[:, 128:192].view(5, 2, 32)  # strided view, as the model will pass it
    slots = meta.slot_mapping.clone()
    slots[2] = -1
    before = kv_cache.clone()
    kernels.store_kv(k_view, v, kv_cache, slots)
    flat = kv_cache.view(2, -1, 2, 32)
    keep = [i for i in range(5) if i != 2]
    assert torch.equal(flat[0, slots[keep]], k[keep]) and torch.equal(flat[1, slots[keep]], v[keep])
    unwritten = torch.ones(flat.shape[1], dtype=torch.bool, device=DEVICE)
    unwritten[slots[keep]] = False
    assert torch.equal(flat[:, unwritten], before.view(2, -1, 2, 32)[:, unwritten])


def test_decode_step_padded_rows_give_zeros():
    q, k, v, kv_cache, meta = make_step([(23, 1), (50, 1), (0, 1)], num_heads=4, num_kv_heads=2)
    seq_lens, slots = meta.seq_lens.clone(), meta.slot_mapping.clone()
    seq_lens[2], slots[2] = 0, -1  # row 2 pads the batch up to a captured graph size
    before = kv_cache.clone()
    out = TritonAttentionBackend().decode_step(q, k, v, kv_cache, slots, meta.block_tables, seq_lens, 0.3,
                                               num_splits=4)
    ref_meta = AttentionMetadata(meta.slot_mapping[:2], meta.query_start_loc[:3], meta.seq_lens[:2],
                                 meta.block_tables[:2], [1, 1], meta.seq_lens_cpu[:2], 1, 51)
    ref = TorchAttentionBackend().forward(q[:2], k[:2], v[:2], before, ref_meta, 0.3)
    assert rel_err(out[:2], ref) < TOL[torch.float32]
    assert torch.equal(out[2], torch.zeros_like(out[2]))
    assert torch.equal(kv_cache, before), "padding row wrote into the cache"


@pytest.mark.parametrize("num_splits", [1, 2, 8, 64])
def test_decode_split_count_does_not_change_result(num_splits):
    q, k, v, kv_cache, meta = make_step([(100, 1), (7, 1)], num_heads=4, num_kv_heads=1)
    kernels.store_kv(k, v, kv_cache, meta.slot_mapping)
    out = kernels.decode_attention(q, kv_cache, meta.block_tables, meta.seq_lens, 0.3, num_splits=num_splits)
    ref = kernels.decode_attention(q, kv_cache, meta.block_tables, meta.seq_lens, 0.3, num_splits=1)
    assert rel_err(out, ref) < 1e-6


def test_num_decode_splits_fills_the_gpu_but_not_beyond_the_context():
    assert kernels.num_decode_splits(1, 8, 32768, num_sms=132) == 64  # 512 programs
    assert kernels.num_decode_splits(16, 8, 8192, num_sms=132) == 4
    assert kernels.num_decode_splits(1, 8, 300, num_sms=132) == 2  # >= 256 tokens a split
    assert kernels.num_decode_splits(64, 8, 32768, num_sms=132) == 1
    assert kernels.num_decode_splits(0, 8, 0, num_sms=132) == 1
