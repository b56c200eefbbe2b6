"""Verification steps replayed as decode rows, on the CPU: the ladder of captured row
counts, the runner's rows (each token's context length and block table, padding with
slot -1 and context 0, the logits rows the sampler reads) and the decode kernel over
such rows in Triton's interpreter, which must give the real rows exactly what the packed
step gives, and greedy output with every verification step run as those rows. Capture
and replay need a GPU: tests/gpu/test_spec_decode_gpu.py."""

import pytest
import torch
from tests.ops import triton_interpret

DEVICE = triton_interpret.setup()

from kvserve import LLM, SamplingParams  # noqa: E402
from kvserve.attention.torch_backend import TorchAttentionBackend  # noqa: E402
from kvserve.attention.triton_backend import TritonAttentionBackend  # noqa: E402
from kvserve.engine.scheduler_output import NewRequestData, SchedulerOutput  # noqa: E402
from kvserve.worker.cuda_graphs import DecodeOutputs  # noqa: E402
from kvserve.worker.input_buffers import InputBuffers  # noqa: E402
from kvserve.worker.verify_graphs import VerifyGraphs, expand_to_rows, verify_ladder  # noqa: E402
from tests.attention.test_triton_attention import TOL, make_step, rel_err  # noqa: E402


def test_ladder_is_k_plus_1_rows_per_request_up_to_the_back_off_batch_size():
    assert verify_ladder(256, 5, 8448, None) == [5, 10, 20, 40, 80, 160]  # 32 requests by default
    assert verify_ladder(256, 5, 8448, 6) == [5, 10, 20, 30]  # a full speculating batch has its graph
    assert verify_ladder(3, 5, 8448, None) == [5, 10, 15]  # max_num_seqs 3
    assert verify_ladder(256, 17, 100, None) == [17, 34, 68]  # 8 x 17 rows do not fit the buffers


def make_graphs(model=None, kv_caches=(), max_blocks=16, sizes=(5, 10, 20, 40)):
    buffers = InputBuffers(64, 8, max_blocks, torch.device("cpu"), max_verify_rows=sizes[-1])
    return VerifyGraphs(model, list(kv_caches), buffers, list(sizes), 5, max_model_len=256)


def test_a_step_replays_the_smallest_graph_that_holds_its_tokens():
    graphs = make_graphs()
    assert graphs.graph_rows([1, 1]) == graphs.graph_rows([5]) == 5
    assert graphs.graph_rows([5, 3, 1]) == 10
    assert graphs.graph_rows([5] * 8) == 40
    assert graphs.graph_rows([5] * 8 + [1]) is None  # past the largest graph
    assert graphs.graph_rows([6, 1]) is None  # a prompt chunk longer than k + 1 runs eagerly


def test_rows_carry_each_tokens_context_and_its_requests_block_table():
    np_ = make_graphs(max_blocks=4).buffers.np
    np_["block_tables"][:3] = [[7, 8, 9, 0], [3, 0, 0, 0], [5, 6, 0, 0]]
    np_["positions"][:20] = [37, 38, 39, 20, 21, 22, 19] + [300] * 13
    np_["slot_mapping"][:20] = 99
    lens = expand_to_rows(np_, [3, 3, 1], 7, 3, 10)
    assert lens.tolist() == [38, 39, 40, 21, 22, 23, 20]
    assert np_["verify_seq_lens"][:10].tolist() == [38, 39, 40, 21, 22, 23, 20, 0, 0, 0]
    assert np_["verify_tables"][:7, :3].tolist() == [[7, 8, 9]] * 3 + [[3, 0, 0]] * 3 + [[5, 6, 0]]
    assert np_["slot_mapping"][:12].tolist() == [99] * 7 + [-1] * 3 + [99] * 2  # padding rows write no KV
    assert np_["positions"][7:12].tolist() == [0, 0, 0, 300, 300]


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


def test_runner_turns_a_verification_step_into_rows_and_samples_only_the_real_ones(runner):
    dev = runner.buffers.dev
    shape = (dev["input_ids"].shape[0], dev["seq_lens"].shape[0], runner.buffers.max_blocks_per_seq)
    cpu_buffers = runner.buffers
    runner.buffers = InputBuffers(*shape, torch.device("cpu"), max_verify_rows=20)
    graphs = VerifyGraphs(runner.model, runner.kv_caches, runner.buffers, [5, 10, 20], 5, max_model_len=256)
    try:
        eager, eager_dev = verify_step(runner, None)
        rows, dev = verify_step(runner, graphs)
    finally:
        runner.verify_graphs, runner.buffers = None, cpu_buffers
    assert eager.verify_graph_size is None and rows.verify_graph_size == 10  # 9 tokens
    assert rows.drafts == eager.drafts == [[1, 2, 3, 4], [5, 6], []]
    # the sampler reads the rows of each request's next token and drafts: 5 + 3 + 1, no padding
    assert rows.first_rows_sampled and eager.first_rows_sampled  # rows 0..8: a slice, nothing uploaded
    for name in ("input_ids", "positions", "slot_mapping"):
        assert torch.equal(dev[name][:9], eager_dev[name][:9]), name
    assert dev["slot_mapping"][9].item() == -1  # the padding row writes no KV ...
    assert dev["verify_seq_lens"][:10].tolist() == [37, 38, 39, 40, 41, 20, 21, 22, 123, 0]  # ... nor attends
    tables = dev["verify_tables"][:9, :9].tolist()
    assert tables == [[3, 4, 5] + [0] * 6] * 5 + [[7, 8] + [0] * 7] * 3 + [list(range(9, 18))]
    meta = rows.meta  # a decode step of 9 rows, as the graph replays it
    assert meta.query_lens_cpu == [1] * 9 and meta.seq_lens_cpu == dev["verify_seq_lens"][:9].tolist()
    assert rows.input_ids.shape[0] == 9 and meta.max_seq_len == 123


def test_decode_rows_of_a_padded_verification_step_attend_as_the_packed_step():
    # three requests verifying 4, 2 and 0 drafts, as rows padded to a graph of 10, run as
    # the graph was captured: the decode kernel alone, its split sized for any context
    seqs, size = [(37, 5), (20, 3), (123, 1)], 10
    qx, k, v, kv_cache, meta = make_step(seqs, num_heads=4, num_kv_heads=2)
    ref_cache = kv_cache.clone()
    ref = TorchAttentionBackend().forward(qx, k, v, ref_cache, meta, 0.3)
    real = qx.shape[0]
    buffers = InputBuffers(64, 8, 16, torch.device(DEVICE), max_verify_rows=size)
    graphs = VerifyGraphs(None, [], buffers, [5, size], 5, max_model_len=256)
    np_ = buffers.np
    np_["block_tables"][:3, :8] = meta.block_tables.cpu().numpy()
    np_["positions"][:real] = [p for cached, n in seqs for p in range(cached, cached + n)]
    np_["slot_mapping"][:real] = meta.slot_mapping.cpu().numpy()
    expand_to_rows(np_, [n for _, n in seqs], real, 8, size)
    for name in ("verify_seq_lens", "verify_tables"):
        buffers.upload(name, size)
    # seq_lens_cpu as captured: the longest context (1024 here) sizes the split, 4 per row
    rows_meta = graphs.metadata(size, buffers.upload("slot_mapping", size), [1024] * size, 1024)
    g = torch.Generator().manual_seed(1)
    pad = [torch.cat([t, torch.randn(size - real, *t.shape[1:], generator=g).to(t)]) for t in (qx, k, v)]
    backend = TritonAttentionBackend(num_sms=64)
    assert backend.num_splits(size, 2, 1024) == 4
    out = backend.forward(*pad, kv_cache, rows_meta, 0.3)
    assert torch.equal(kv_cache, ref_cache), "K/V written to the wrong slots, or by a padding row"
    assert rel_err(out[:real], ref) < TOL[torch.float32]
    assert torch.equal(out[real:], torch.zeros_like(out[real:]))


class EagerRows(VerifyGraphs):
    """What a replay computes, run eagerly on the CPU (which has no graphs): the model over
    the step's real decode rows, read from the same device buffers."""

    def replay(self, batch: int, size: int) -> DecodeOutputs:
        self.replays += 1
        dev = self.buffers.dev
        lens = dev["verify_seq_lens"][:batch]
        meta = self.metadata(batch, dev["slot_mapping"][:batch], lens.tolist(), int(lens.max()))
        return DecodeOutputs(self.model(dev["input_ids"][:batch], dev["positions"][:batch], self.kv_caches, meta))


def test_greedy_output_with_verification_as_decode_rows_equals_plain_decoding(tiny_llama):
    from tests.engine.test_spec_decode import NGRAM, PROMPTS

    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    settings = dict(model=str(tiny_llama), kv_cache_gib=0.01, max_model_len=256)
    with LLM(**settings) as plain:
        ref = [o.outputs[0].token_ids for o in plain.generate(PROMPTS, params, use_tqdm=False)]
    with LLM(**settings, speculative_config=NGRAM) as spec:
        runner = spec.engine.core.runner
        dev = runner.buffers.dev
        shape = (dev["input_ids"].shape[0], dev["seq_lens"].shape[0], runner.buffers.max_blocks_per_seq)
        runner.buffers = InputBuffers(*shape, torch.device("cpu"), max_verify_rows=40)
        runner.verify_graphs = EagerRows(runner.model, runner.kv_caches, runner.buffers, [5, 10, 20, 40], 5, 256)
        got = [o.outputs[0].token_ids for o in spec.generate(PROMPTS, params, use_tqdm=False)]
        replays, accepted = runner.verify_graphs.replays, spec.engine.core.stats().spec_decode.num_accepted_tokens
    assert got == ref
    assert replays > 0 and accepted > 0
