"""Verification of draft tokens: the emitted tokens are distributed as plain sampling's.

A tiny vocabulary and fixed target logits, one request replicated over many rows: the
first emitted token must follow p0; when it equals the first draft, the second must
follow p1; when both drafts are taken, the bonus follows p2. Chi-square goodness of fit
against the exact distributions, with a fixed seed.
"""

import math

import torch

from kvserve.sampling_params import SamplingParams
from kvserve.structured.masks import TokenMask
from kvserve.worker.rejection_sampler import RejectionSampler, expand_states
from kvserve.worker.request_state import RequestState
from kvserve.worker.sampling_batch import build_sampling_batch

V = 6
LOGITS = torch.tensor([[1.0, 0.5, 2.0, -1.0, 0.0, 1.5],  # after the known tokens
                       [0.2, 2.5, 0.1, 1.0, -0.5, 0.3],  # after draft 1
                       [1.2, 1.1, 1.0, 0.9, 0.8, 0.7]])  # after drafts 1 and 2 (the bonus row)
DRAFTS = [2, 3]


def state(rid="r", **params) -> RequestState:
    return RequestState(rid, [4, 1, 5], 2, SamplingParams(**params), [0], 3, None, None)


def chi2_critical(dof: int, z: float = 3.09) -> float:
    """Wilson-Hilferty: the chi-square quantile at the normal quantile z (3.09: p = 0.001)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def chi2(observed: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * observed.sum()
    keep = expected > 0
    assert observed[~keep].sum() == 0, "a token of probability 0 was emitted"
    return float(((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum())


def run(n: int, temperature: float, q: torch.Tensor | None = None, seed: int = 0):
    """(ids [n, 3], drafts [n, 2]): fixed drafts, or drafts drawn from q's rows as a draft
    model would draw them (then q is the proposal distribution that the rule divides by)."""
    gen = torch.Generator().manual_seed(seed + 1)
    drafts = (torch.tensor([DRAFTS] * n) if q is None else
              torch.stack([torch.multinomial(q[j], n, replacement=True, generator=gen) for j in range(2)], dim=1))
    states = [state(str(i), temperature=temperature) for i in range(n)]
    sampler = RejectionSampler(torch.Generator().manual_seed(seed))
    draft_probs = q.repeat(n, 1) if q is not None else None
    ids = sampler.verify(LOGITS.repeat(n, 1), states, drafts.tolist(), V, draft_probs=draft_probs).ids
    return ids, drafts


def check_lossless(ids: torch.Tensor, drafts: torch.Tensor, temperature: float) -> None:
    p = (LOGITS / temperature).softmax(dim=-1)
    first = torch.bincount(ids[:, 0], minlength=V).float()
    assert chi2(first, p[0]) < chi2_critical(V - 1)
    took_1 = ids[:, 0] == drafts[:, 0]
    second = torch.bincount(ids[took_1, 1], minlength=V).float()  # always emitted after an accepted draft
    assert chi2(second, p[1]) < chi2_critical(V - 1)
    took_2 = took_1 & (ids[:, 1] == drafts[:, 1])
    bonus = torch.bincount(ids[took_2, 2], minlength=V).float()
    assert took_2.sum() > 500 and chi2(bonus, p[2]) < chi2_critical(V - 1)
    assert (ids[~took_1, 1:] == -1).all() and (ids[took_1 & ~took_2, 2] == -1).all()


def test_deterministic_proposals_keep_the_target_distribution():
    check_lossless(*run(20_000, temperature=0.7), 0.7)


def test_draft_model_proposals_keep_the_target_distribution():
    q = torch.tensor([[0.1, 0.1, 0.5, 0.1, 0.1, 0.1],
                      [0.05, 0.05, 0.1, 0.6, 0.1, 0.1],
                      [1 / 6] * 6])
    check_lossless(*run(20_000, temperature=1.0, q=q), 1.0)


def test_the_check_detects_a_wrong_distribution():
    # the same samples against the distribution of another temperature fail the test
    ids, _ = run(20_000, temperature=0.7)
    first = torch.bincount(ids[:, 0], minlength=V).float()
    assert chi2(first, (LOGITS[0] / 0.8).softmax(dim=-1)) > chi2_critical(V - 1)


def test_greedy_takes_the_longest_matching_prefix_and_the_argmax_after_it():
    sampler = RejectionSampler(torch.Generator().manual_seed(0))
    # argmaxes of the three rows: 2, 1, 0; the drafts [2, 3] match the first only
    ids = sampler.verify(LOGITS, [state(temperature=0)], [DRAFTS], V).ids
    assert ids.tolist() == [[2, 1, -1]]
    ids = sampler.verify(LOGITS, [state(temperature=0)], [[2, 1]], V).ids
    assert ids.tolist() == [[2, 1, 0]]  # both taken, plus the bonus
    ids = sampler.verify(LOGITS[:1], [state(temperature=0)], [[]], V).ids
    assert ids.tolist() == [[2]]  # no drafts: one plain token


def test_rows_of_a_request_count_its_drafts_for_penalties_and_min_tokens():
    rows = expand_states([state(frequency_penalty=1.0, min_tokens=2, stop_token_ids=[0])], [DRAFTS])
    assert [r.token_ids for r in rows] == [[4, 1, 5], [4, 1, 5, 2], [4, 1, 5, 2, 3]]
    batch = build_sampling_batch(rows, V, torch.device("cpu"))
    assert batch.output_counts[:, 2].tolist() == [0.0, 1.0, 1.0]  # draft 1 counted from row 1 on
    assert [row for row, _ in batch.banned] == [0]  # min_tokens=2 reached from row 1 (one output + draft)


def test_a_masked_row_beside_drafts_follows_the_masked_distribution():
    """A constrained request (one row, no drafts) between requests verifying drafts: its token
    is drawn from p0 restricted to the mask's allowed ids, never outside them."""
    n, allowed = 2000, [0, 4]
    states = [state(str(i), temperature=1.0) for i in range(3 * n)]
    drafts = [DRAFTS if i % 3 != 1 else [] for i in range(3 * n)]
    logits = torch.cat([LOGITS if d else LOGITS[:1] for d in drafts])
    starts = [i for i, d in enumerate(drafts) if not d]
    rows = [sum(len(d) + 1 for d in drafts[:i]) for i in starts]
    mask = TokenMask(torch.tensor(rows), torch.full((len(rows), 1), sum(1 << t for t in allowed), dtype=torch.int32))
    ids = RejectionSampler(torch.Generator().manual_seed(3)).verify(logits, states, drafts, V, token_mask=mask).ids
    emitted = torch.bincount(ids[starts, 0], minlength=V).float()
    p = torch.full((V,), float("-inf"))
    p[allowed] = LOGITS[0, allowed]
    assert chi2(emitted, p.softmax(dim=-1)) < chi2_critical(len(allowed) - 1)
    assert (ids[starts, 1:] == -1).all()  # one token each
    unmasked = [i for i, d in enumerate(drafts) if d]
    assert set(ids[unmasked, 0].tolist()) - set(allowed)  # the other rows are not masked
