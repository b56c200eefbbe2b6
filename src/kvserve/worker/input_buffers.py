"""Persistent input buffers: pinned host staging and device tensors, reused every step.

The host side is filled with numpy and copied with non_blocking transfers; nothing
waits on the GPU. The host side is double-buffered: the runner fills one set while the
copies of the step before may still be queued behind the GPU work, and reuses a set
only after the step that last used it has returned its sampled ids (which orders its
copies before). The device side doubles as the static inputs that captured CUDA graphs
read.
"""

from __future__ import annotations

import torch

from kvserve.worker.sampling_batch import COLUMNS as SAMPLING_COLUMNS

# name -> (dtype, which size: "tokens" or "seqs" or "seqs+1" or "table" or "sampling" or "verify"
# or "verify_table")
FIELDS = {
    "input_ids": (torch.int64, "tokens"),
    "positions": (torch.int64, "tokens"),
    "slot_mapping": (torch.int64, "tokens"),
    "query_start_loc": (torch.int32, "seqs+1"),
    "seq_lens": (torch.int32, "seqs"),
    "logits_indices": (torch.int64, "tokens"),  # one per request, or k + 1 for one verifying k drafts
    "block_tables": (torch.int32, "table"),
    "inflight_dst": (torch.int64, "seqs"),  # input rows whose token id is still on the device
    "inflight_src": (torch.int64, "seqs"),  # ... and where it is in the previous step's sampled ids
    "sampling": (torch.float32, "sampling"),  # per-row sampling settings
    "sampled_ids": (torch.int64, "seqs"),  # host side only: the landing place of sampled ids
    "verified_ids": (torch.int64, "tokens"),  # host side only: ... of a verification step's [N, k+1] ids
    # a verification step replayed as decode rows (worker/verify_graphs): per token, its
    # context length and its request's block table
    "verify_seq_lens": (torch.int32, "verify"),
    "verify_tables": (torch.int32, "verify_table"),
}
HOST_ONLY = ("sampled_ids", "verified_ids")


class InputBuffers:
    def __init__(self, max_tokens: int, max_seqs: int, max_blocks_per_seq: int, device: torch.device,
                 max_verify_rows: int = 0) -> None:
        shapes = {
            "tokens": (max_tokens,),
            "seqs": (max_seqs,),
            "seqs+1": (max_seqs + 1,),
            "table": (max_seqs, max_blocks_per_seq),
            "sampling": (max_tokens, len(SAMPLING_COLUMNS)),  # a row per sampled position
            "verify": (max_verify_rows,),  # rows of the largest verification graph (0 without)
            "verify_table": (max_verify_rows, max_blocks_per_seq),
        }
        pin = device.type == "cuda"
        self._hosts = [{n: torch.zeros(shapes[s], dtype=d, pin_memory=pin) for n, (d, s) in FIELDS.items()}
                       for _ in range(2)]
        self._nps = [{n: t.numpy() for n, t in host.items()} for host in self._hosts]
        self.host, self.np = self._hosts[0], self._nps[0]
        self.dev = {n: torch.zeros(shapes[s], dtype=d, device=device) for n, (d, s) in FIELDS.items()
                    if n not in HOST_ONLY}
        self.max_blocks_per_seq = max_blocks_per_seq
        self._current = 0

    def flip(self) -> None:
        """Switch to the other host set (call once per step, before filling it)."""
        self._current ^= 1
        self.host, self.np = self._hosts[self._current], self._nps[self._current]

    def upload(self, name: str, count: int, width: int | None = None) -> torch.Tensor:
        """Copy the first `count` rows to the device; return that view (its first `width`
        columns, if given). Whole rows travel: a contiguous pinned source is what makes
        the copy asynchronous."""
        dst = self.dev[name][:count]
        dst.copy_(self.host[name][:count], non_blocking=True)
        return dst if width is None else dst[:, :width]
