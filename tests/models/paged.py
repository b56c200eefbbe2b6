"""Test helpers: a hand-rolled paged KV cache and the HF reference for the model tests.

This plays the model runner's part in miniature: it hands out blocks in a scrambled
order (so that a wrong block-table lookup shows), builds AttentionMetadata for a step
and runs our model on it.
"""

from __future__ import annotations

import torch

from kvserve.attention import AttentionMetadata
from kvserve.attention.torch_backend import TorchAttentionBackend
from kvserve.models.loader import load_hf_config, load_model, model_info


class PagedSession:
    """Our model on a tiny block pool; `step` feeds new tokens of several sequences at once."""

    def __init__(self, model_dir, dtype=torch.float32, block_size=4, num_blocks=96, device="cpu"):
        self.model = load_model(model_dir, TorchAttentionBackend(), dtype, device)
        self.device = torch.device(device)
        info = model_info(load_hf_config(model_dir), model_dir)
        shape = (2, num_blocks, block_size, info.num_kv_heads, info.head_dim)
        self.kv_caches = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(info.num_layers)]
        self.block_size = block_size
        generator = torch.Generator().manual_seed(0)
        self.free_blocks = (torch.randperm(num_blocks - 1, generator=generator) + 1).tolist()  # 0 = padding
        self.tables: dict[int, list[int]] = {}
        self.lens: dict[int, int] = {}

    def _slots(self, seq: int, count: int) -> tuple[list[int], list[int]]:
        table, start = self.tables.setdefault(seq, []), self.lens.get(seq, 0)
        positions = list(range(start, start + count))
        while len(table) * self.block_size < start + count:
            table.append(self.free_blocks.pop())
        self.lens[seq] = start + count
        return positions, [table[p // self.block_size] * self.block_size + p % self.block_size for p in positions]

    def metadata(self, new_tokens: dict[int, list[int]]) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        ids, positions, slots, query_lens = [], [], [], []
        for seq, tokens in new_tokens.items():
            seq_positions, seq_slots = self._slots(seq, len(tokens))
            ids += tokens
            positions += seq_positions
            slots += seq_slots
            query_lens.append(len(tokens))
        seq_lens = [self.lens[seq] for seq in new_tokens]
        width = max(len(self.tables[seq]) for seq in new_tokens)
        tables = [self.tables[seq] + [0] * (width - len(self.tables[seq])) for seq in new_tokens]
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            query_start_loc=torch.tensor([0] + query_lens, dtype=torch.int32).cumsum(0).to(torch.int32),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
            block_tables=torch.tensor(tables, dtype=torch.int32),
            query_lens_cpu=query_lens,
            seq_lens_cpu=seq_lens,
            max_query_len=max(query_lens),
            max_seq_len=max(seq_lens),
        )
        return torch.tensor(ids, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64), meta

    @torch.inference_mode()
    def step(self, new_tokens: dict[int, list[int]]) -> list[torch.Tensor]:
        """Logits [len(tokens), vocab] of every new token, one tensor per sequence."""
        input_ids, positions, meta = self.metadata(new_tokens)
        input_ids, positions = input_ids.to(self.device), positions.to(self.device)
        for name in ("slot_mapping", "query_start_loc", "seq_lens", "block_tables"):
            setattr(meta, name, getattr(meta, name).to(self.device))
        logits = self.model.compute_logits(self.model(input_ids, positions, self.kv_caches, meta))
        return [rows.cpu() for rows in logits.split(meta.query_lens_cpu)]


def hf_model(model_dir, dtype=torch.float32, device="cpu"):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager")
    return model.to(device).eval()


@torch.inference_mode()
def hf_logits(model, tokens: list[int]) -> torch.Tensor:
    """Reference logits [len(tokens), vocab] of one unpadded sequence, on the CPU."""
    return model(torch.tensor([tokens], device=model.device)).logits[0].float().cpu()


def hf_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation by the reference, never stopping early (recomputes the prefix)."""
    tokens = list(prompt)
    for _ in range(max_new_tokens):
        tokens.append(int(hf_logits(model, tokens)[-1].argmax()))
    return tokens[len(prompt):]
