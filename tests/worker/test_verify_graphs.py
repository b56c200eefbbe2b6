"""Verification steps padded to a CUDA graph's shape, on the CPU: the ladder of captured
sizes, the runner's padded inputs (slot -1, empty padding sequences, the logits rows the
sampler reads) and the attention kernel over such a step in Triton's interpreter, which
must give the real rows exactly what an unpadded step gives. Capture and replay need a
GPU: tests/gpu/test_spec_decode_gpu.py."""

import numpy as np
import pytest
import torch
from tests.ops import triton_interpret

DEVICE = triton_interpret.setup()

from kvserve import LLM, SamplingParams  # noqa: E402
from kvserve.attention.backend import AttentionMetadata  # noqa: E402
from kvserve.attention.torch_backend import TorchAttentionBackend  # noqa: E402
from kvserve.attention.triton_backend import TritonAttentionBackend  # noqa: E402
from kvserve.engine.scheduler_output import NewRequestData, SchedulerOutput  # noqa: E402
from kvserve.worker.verify_graphs import VerifyGraphs, pad_verify_step, verify_ladder  # noqa: E402
from tests.attention.test_triton_attention import TOL, make_step, rel_err  # noqa: E402


def test_ladder_stops_at_the_back_off_batch_size_and_the_token_buffer():
    assert verify_ladder(256, 5, 8448, None) == [1, 2, 4, 8, 16, 32]
    assert verify_ladder(256, 5, 8448, 6) == [1, 2, 4, 6]  # a full speculating batch has its graph
    assert verify_ladder(3, 5, 8448, None) == [1, 2, 3]  # max_num_seqs 3
    assert verify_ladder(256, 17, 100, None) == [1, 2, 4]  # 8 x 17 rows do not fit 100


def test_a_step_fits_the_smallest_graph_of_its_batch_unless_a_request_has_more_than_q_tokens():
    graphs = VerifyGraphs(None, [], None, [1, 2, 4, 8], q=5, max_model_len=512)
    assert graphs.padded_size([5, 3, 1]) == 4
    assert graphs.padded_size([1, 1, 2, 5, 5, 5, 5, 5]) == 8
    assert graphs.padded_size([5] * 9) is None  # past the largest graph
    assert graphs.padded_size([6, 1]) is None  # a prompt chunk longer than q


def test_padding_fills_tokens_and_sequences_after_the_real_ones():
    np_ = {"input_ids": np.full(20, 7), "positions": np.full(20, 300), "slot_mapping": np.full(20, 99),
           "query_start_loc": np.array([0, 5, 8, 9, 77, 77]), "seq_lens": np.full(5, 40)}
    assert pad_verify_step(np_, 9, 3, 4, 5) == 20
    assert np_["query_start_loc"].tolist() == [0, 5, 8, 9, 9, 77]  # sequence 3: no queries; 4 untouched
    assert np_["seq_lens"].tolist() == [40, 40, 40, 0, 40]
    assert np_["slot_mapping"].tolist() == [99] * 9 + [-1] * 11
    assert np_["positions"].tolist() == [300] * 9 + [0] * 11
    assert np_["input_ids"].tolist() == [7] * 9 + [0] * 11


@pytest.fixture(scope="module")
def runner(tiny_llama):
    llm = LLM(model=str(tiny_llama), kv_cache_gib=0.01, max_model_len=256,
              speculative_config={"method": "ngram", "num_speculative_tokens": 4})
    yield llm.engine.core.runner
    llm.shutdown()


def verify_step(runner, graphs):
    """Prepare one verification step of three requests with 4, 2 and 0 drafts; returns its
    inputs and a host copy of the device buffers."""
    runner.verify_graphs = graphs
    greedy = SamplingParams(temperature=0.0)
    prompts = {"a": list(range(10, 47)), "b": list(range(50, 70)), "c": list(range(90, 213))}
    blocks = {"a": [3, 4, 5], "b": [7, 8], "c": list(range(9, 18))}
    drafts = {"a": [1, 2, 3, 4], "b": [5, 6], "c": []}
    new = [NewRequestData(r, p, len(p), greedy, blocks[r], len(p) - 1) for r, p in prompts.items()]
    num = {r: 1 + len(d) for r, d in drafts.items()}
    sched = SchedulerOutput(new, [], num, sum(num.values()),
                            scheduled_spec_decode_tokens={r: d for r, d in drafts.items() if d})
    runner._update_states(sched)
    runner.buffers.flip()
    inputs = runner._prepare_inputs(sched)
    runner._update_states(SchedulerOutput([], [], {}, 0, finished_req_ids=set(prompts)))
    dev = {n: t.clone() for n, t in runner.buffers.dev.items()}
    return inputs, dev


def test_runner_pads_a_verification_step_and_samples_only_its_real_rows(runner):
    graphs = VerifyGraphs(runner.model, runner.kv_caches, runner.buffers, [1, 2, 4, 8], 5, 256)
    try:
        eager, eager_dev = verify_step(runner, None)
        padded, dev = verify_step(runner, graphs)
    finally:
        runner.verify_graphs = None
    assert eager.verify_graph_size is None and padded.verify_graph_size == 4
    assert padded.drafts == eager.drafts == [[1, 2, 3, 4], [5, 6], []]
    # the sampler reads the rows of each request's next token and drafts: 5 + 3 + 1, no padding
    assert padded.logits_indices.tolist() == eager.logits_indices.tolist() == list(range(9))
    for name in ("input_ids", "positions", "slot_mapping"):
        assert torch.equal(dev[name][:9], eager_dev[name][:9]), name
    assert dev["slot_mapping"][9:20].tolist() == [-1] * 11  # padding writes no KV
    assert dev["positions"][9:20].tolist() == [0] * 11
    assert dev["query_start_loc"][:5].tolist() == [0, 5, 8, 9, 9]
    assert dev["seq_lens"][:4].tolist() == [41, 22, 123, 0]
    assert padded.input_ids.shape[0] == 20 and padded.meta.seq_lens.shape[0] == 4


def test_attention_over_a_padded_verification_step_matches_the_unpadded_one():
    # three requests verifying 4, 2 and 0 drafts, padded to a graph of 4 requests x q=5 as
    # the runner does, run as the graph was captured: prefill kernel only, host bounds fixed
    seqs, size, q = [(37, 5), (20, 3), (123, 1)], 4, 5
    qx, k, v, kv_cache, meta = make_step(seqs, num_heads=4, num_kv_heads=2)
    ref_cache = kv_cache.clone()
    ref = TorchAttentionBackend().forward(qx, k, v, ref_cache, meta, 0.3)
    real, tokens = qx.shape[0], size * q
    g = torch.Generator().manual_seed(1)
    pad = [torch.cat([t, torch.randn(tokens - real, *t.shape[1:], generator=g).to(t)]) for t in (qx, k, v)]
    np_ = {"input_ids": np.zeros(tokens, np.int64), "positions": np.zeros(tokens, np.int64),
           "slot_mapping": np.zeros(tokens, np.int64), "query_start_loc": np.zeros(size + 1, np.int32),
           "seq_lens": np.zeros(size, np.int32)}
    np_["slot_mapping"][:real] = meta.slot_mapping.cpu().numpy()
    np_["query_start_loc"][: len(seqs) + 1] = meta.query_start_loc.cpu().numpy()
    np_["seq_lens"][: len(seqs)] = meta.seq_lens.cpu().numpy()
    pad_verify_step(np_, real, len(seqs), size, q)
    table = torch.zeros(size, meta.block_tables.shape[1], dtype=torch.int32)
    table[: len(seqs)] = meta.block_tables.cpu()
    graph_meta = AttentionMetadata(
        *(torch.from_numpy(np_[n]).to(DEVICE) for n in ("slot_mapping", "query_start_loc", "seq_lens")),
        table.to(DEVICE), [q] * size, [256] * size, q, 256)
    out = TritonAttentionBackend(num_sms=4).forward(*pad, kv_cache, graph_meta, 0.3)
    assert torch.equal(kv_cache, ref_cache), "padding rows wrote into the cache"
    assert rel_err(out[:real], ref) < TOL[torch.float32]
