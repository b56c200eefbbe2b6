"""The draft model of speculative decoding (`speculative_config` method `draft_model`).

A smaller model of the target's vocabulary runs in the same worker, on the same device,
and proposes k tokens per request and step by k greedy one-token forwards; the target
verifies them in one forward (model_runner, rejection_sampler), as it does n-gram drafts.

Its KV pool has the target's block count and block size, so each request's block table
indexes both pools and the scheduler's one allocator serves both. The rule it keeps: the
draft's pool holds the KV of every position whose KV the target's pool holds. Every step's
tokens go through the draft too (`follow`, on the step's own device inputs), and in a
verification step the proposal forwards write the next token's and every draft's KV (the
last draft's by one forward more, whose logits are not needed). Rejected drafts are rolled
back by the scheduler's computed count alone: their slots, in both pools, are rewritten by
the request's next tokens. A prefix-cache hit therefore finds the draft's KV as well.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kvserve.attention import AttentionBackend, AttentionMetadata
from kvserve.config import ConfigError, SpeculativeConfig
from kvserve.default_model import MODEL_ID as EMBEDDED_MODEL_ID
from kvserve.default_model import default_model_dir
from kvserve.engine.scheduler_output import SchedulerOutput
from kvserve.models.hub import snapshot_dir
from kvserve.models.loader import ModelInfo, load_hf_config, model_info
from kvserve.tokenizer import TokenizerError, load_tokenizer
from kvserve.worker.kv_cache_budget import allocate_kv_caches, bytes_per_block, tensor_bytes
from kvserve.worker.request_state import RequestState


class DraftModel:
    """The draft's weights and KV pool, and the two things it does in a step."""

    def __init__(self, model: nn.Module, info: ModelInfo, dtype: torch.dtype, device: torch.device) -> None:
        self.model = model
        self.info = info
        self.dtype = dtype
        self.device = device
        self.kv_caches: list[torch.Tensor] = []

    @property
    def weight_bytes(self) -> int:
        return tensor_bytes(self.model)

    def bytes_per_block(self, block_size: int) -> int:
        return bytes_per_block(block_size, self.info, self.dtype)

    def allocate(self, num_blocks: int, block_size: int) -> None:
        """The draft's pool: the target's block count and size (one block table for both)."""
        self.block_size = block_size
        self.kv_caches = allocate_kv_caches(num_blocks, block_size, self.info, self.dtype, self.device)

    def follow(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> None:
        """Write the KV of a step's tokens, from the target's own device inputs (a decode step
        replayed from a CUDA graph has padding rows past the real ones: cut off here)."""
        tokens, seqs = sum(meta.query_lens_cpu), meta.num_seqs
        meta = dataclasses.replace(meta, slot_mapping=meta.slot_mapping[:tokens],
                                   query_start_loc=meta.query_start_loc[: seqs + 1], seq_lens=meta.seq_lens[:seqs],
                                   block_tables=meta.block_tables[:seqs])
        self.model(input_ids[:tokens], positions[:tokens], self.kv_caches, meta)

    def propose(self, sched: SchedulerOutput, states: dict[str, RequestState]) -> dict[str, list[int]]:
        """The draft ids of each request that has draft slots this step (as many as its slots).

        Runs before the target's forward, while the runner's computed counts are still the
        step's starts. All ids are on the host: the scheduler proposes only then."""
        slots = sched.scheduled_spec_decode_tokens
        rows = list(sched.num_scheduled_tokens.items())
        starts = [states[rid].num_computed_tokens for rid, _ in rows]
        spec = [i for i, (rid, _) in enumerate(rows) if slots.get(rid)]
        counts = [len(slots[rows[i][0]]) for i in spec]  # drafts wanted per proposing request
        drafts = torch.zeros(len(spec), max(counts), dtype=torch.int64, device=self.device)
        drafts[:, 0] = self._first_drafts(rows, starts, states, slots, spec)
        for i in range(1, max(counts) + 1):  # feed draft i at position start + i
            fed = [j for j, n in enumerate(counts) if n >= i]
            table_rows = [states[rows[spec[j]][0]].block_ids for j in fed]
            positions = [starts[spec[j]] + i for j in fed]
            hidden = self._forward(drafts[self._index(fed), i - 1], positions, [1] * len(fed), table_rows)
            wanted = [k for k, j in enumerate(fed) if counts[j] > i]  # the rest only write their last KV
            if wanted:
                logits = self.model.compute_logits(hidden[self._index(wanted)])
                drafts[self._index([fed[k] for k in wanted]), i] = logits.argmax(dim=-1)
        host = drafts.tolist()
        return {rows[i][0]: host[j][: counts[j]] for j, i in enumerate(spec)}

    def _first_drafts(self, rows, starts, states, slots, spec) -> torch.Tensor:
        """One forward over the step's known tokens (every request's, as `follow` would);
        the proposing requests' last rows give their first drafts [S]."""
        ids, positions, query_lens, tables, last = [], [], [], [], []
        for (rid, num), start in zip(rows, starts):
            state = states[rid]
            known = num - len(slots.get(rid) or ())
            ids.extend(state.token_ids[start:start + known])
            positions.extend(range(start, start + known))
            query_lens.append(known)
            tables.append(state.block_ids)
            last.append(len(ids) - 1)
        hidden = self._forward(torch.tensor(ids, device=self.device), positions, query_lens, tables)
        logits = self.model.compute_logits(hidden[self._index([last[i] for i in spec])])
        return logits.argmax(dim=-1)

    def _forward(self, ids: torch.Tensor, positions: list[int], query_lens: list[int],
                 tables: list[list[int]]) -> torch.Tensor:
        """Hidden states of `ids` [T] at `positions` (sequences of `query_lens` tokens, each
        ending at its last position) over the draft's pool, through the block tables."""
        bs, dev = self.block_size, self.device
        ends = list(itertools.accumulate(query_lens))
        seq_lens = [positions[e - 1] + 1 for e in ends]
        table = np.zeros((len(tables), max(len(t) for t in tables)), dtype=np.int32)
        for row, blocks in enumerate(tables):
            table[row, : len(blocks)] = blocks
        slots = [_slot(tables[row], p, bs) for row, (n, e) in enumerate(zip(query_lens, ends))
                 for p in positions[e - n:e]]
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=dev),
            query_start_loc=torch.tensor([0, *ends], dtype=torch.int32, device=dev),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
            block_tables=torch.from_numpy(table).to(dev),
            query_lens_cpu=list(query_lens),
            seq_lens_cpu=seq_lens,
            max_query_len=max(query_lens),
            max_seq_len=max(seq_lens),
        )
        return self.model(ids, torch.tensor(positions, dtype=torch.int64, device=dev), self.kv_caches, meta)

    def _index(self, rows: list[int]) -> torch.Tensor:
        return torch.tensor(rows, dtype=torch.int64, device=self.device)


def _slot(blocks: list[int], position: int, block_size: int) -> int:
    return blocks[position // block_size] * block_size + position % block_size


def draft_model_dir(name: str) -> Path:
    """The draft's directory: a local one, the embedded model's id, or a hub id in the cache."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    if name == EMBEDDED_MODEL_ID:
        return default_model_dir()
    return Path(snapshot_dir(name))


def load_draft_model(spec: SpeculativeConfig | None, target: ModelInfo, max_model_len: int, tokenizer_dir: Path,
                     load: Callable[[Path], nn.Module], backend: AttentionBackend, dtype: torch.dtype,
                     device: torch.device) -> DraftModel | None:
    """The draft model of a draft_model speculative config (None for any other), after
    checking that it can propose for the target: the same vocabulary, token for token."""
    if spec is None or spec.method != "draft_model":
        return None
    directory = draft_model_dir(spec.model)
    info = model_info(load_hf_config(directory), directory)
    check_draft(info, target, max_model_len, directory, tokenizer_dir)
    try:
        backend.check_head_dim(info.head_dim)
    except ValueError as exc:
        raise ConfigError(f"the draft model {spec.model}: {exc}") from None
    return DraftModel(load(directory), info, dtype, device)


def check_draft(info: ModelInfo, target: ModelInfo, max_model_len: int, directory: Path, tokenizer_dir: Path) -> None:
    """Refuse, naming the difference, a draft whose ids would not mean the target's tokens."""
    if info.vocab_size != target.vocab_size:
        raise ConfigError(f"the draft model {directory} has a vocabulary of {info.vocab_size} ids, the target "
                          f"{target.vocab_size}: a draft model needs the target's tokenizer and vocabulary")
    if info.max_position_embeddings < max_model_len:
        raise ConfigError(f"the draft model {directory} takes {info.max_position_embeddings} positions, fewer "
                          f"than max_model_len={max_model_len}: lower --max-model-len to at most "
                          f"{info.max_position_embeddings}")
    theirs, ours = _vocab(directory, "draft model"), _vocab(tokenizer_dir, "target model")
    if theirs != ours:
        differ = sorted(set(theirs.items()) ^ set(ours.items()))
        raise ConfigError(f"the draft model {directory} has another tokenizer than the target ({tokenizer_dir}): "
                          f"{len(differ)} (token, id) pairs are in one and not the other, first {differ[0]!r}; "
                          "a draft model needs the target's tokenizer and vocabulary")


def _vocab(directory: Path, which: str) -> dict[str, int]:
    try:
        return load_tokenizer(directory).get_vocab()
    except TokenizerError as exc:
        raise ConfigError(f"the {which}'s tokenizer is needed to check the draft model: {exc}") from None
