import math

import torch

from kvserve.sampling_params import SamplingParams
from kvserve.worker.request_state import RequestState
from kvserve.worker.sampler import Sampler, apply_penalties, filter_logits
from kvserve.worker.sampling_batch import build_sampling_batch

V = 8


def state(tokens=(1, 2), prompt=1, gen=None, eos=0, **params):
    return RequestState("r", list(tokens), prompt, SamplingParams(**params), [0], len(tokens), eos, gen)


def test_filter_top_k_top_p_min_p():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    keep = lambda **kw: (filter_logits(logits, torch.tensor([kw.get("k", 0)]), torch.tensor([kw.get("p", 1.0)]),
                                       torch.tensor([kw.get("m", 0.0)])) > -math.inf)[0].tolist()
    assert keep(k=2) == [True, True, False, False]
    assert keep(p=0.65) == [True, True, False, False]  # 0.4 + 0.3 covers 0.65
    assert keep(p=0.05) == [True, False, False, False]  # the best token always survives
    assert keep(m=0.6) == [True, True, False, False]  # 0.2 < 0.6 * 0.4


def test_penalties_follow_openai_and_hf_semantics():
    logits = torch.tensor([[1.0, 2.0, -1.0, 0.5, 0, 0, 0, 0]])
    s = state(tokens=(2, 1, 1), prompt=1, temperature=0, frequency_penalty=0.5, presence_penalty=0.25,
              repetition_penalty=2.0, logprobs=None)
    batch = build_sampling_batch([s], V, torch.device("cpu"))
    out = apply_penalties(logits.clone(), batch)[0]
    # token 1: seen (rep: 2.0/2), generated twice (freq 1.0, presence 0.25) -> 1.0 - 1.25
    assert torch.isclose(out[1], torch.tensor(-0.25))
    # token 2: prompt only (rep on negative logit: -1 * 2), no output penalties
    assert torch.isclose(out[2], torch.tensor(-2.0))
    assert torch.isclose(out[0], torch.tensor(1.0))


def test_min_tokens_bans_eos_and_stop_ids():
    logits = torch.zeros(1, V)
    logits[0, 0] = 10.0  # EOS would win
    logits[0, 5] = 9.0
    s = state(tokens=(3,), prompt=1, temperature=0, min_tokens=2, stop_token_ids=[5])
    ids, _ = Sampler()(logits, build_sampling_batch([s], V, torch.device("cpu")))
    assert ids[0] not in (0, 5)


def test_seeded_rows_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(3, V)

    def draw(rows):
        states = [state(temperature=1.0, gen=torch.Generator().manual_seed(7) if r == 1 else None) for r in rows]
        ids, _ = Sampler(torch.Generator().manual_seed(len(rows)))(logits[rows], build_sampling_batch(states, V, torch.device("cpu")))
        return ids[rows.index(1)]

    assert draw([1]) == draw([0, 1, 2]) == draw([2, 1])


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.2] + [0.0] * (V - 3))
    logits = torch.log(probs.clamp(min=1e-12))[None].repeat(4000, 1)
    states = [state(temperature=1.0) for _ in range(4000)]
    ids, _ = Sampler(torch.Generator().manual_seed(0))(logits, build_sampling_batch(states, V, torch.device("cpu")))
    freq = torch.bincount(torch.tensor(ids), minlength=V).float() / 4000
    assert torch.allclose(freq[:3], probs[:3], atol=0.03)


def test_logprobs_report_rank_and_top_alternatives():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1, -1, -1, -1]])
    s = state(temperature=0, logprobs=2)
    ids, lps = Sampler()(logits, build_sampling_batch([s], V, torch.device("cpu")))
    ref = torch.log_softmax(logits[0], -1)
    assert ids == [1] and lps[0].rank == 1 and abs(lps[0].logprob - ref[1].item()) < 1e-6
    assert [t for t, _ in lps[0].top] == [1, 3]
