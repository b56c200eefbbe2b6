"""The ranks of one tensor-parallel engine and the two collectives its layers need."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# device type -> torch.distributed backend: one code path, the transport picked by the device
BACKENDS = {"cuda": "nccl", "cpu": "gloo"}
# a collective that waits this long has lost a peer; the watchdog (followers.py) acts sooner
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class RankGroup:
    """This process's place among the engine's ranks. `world_size` 1 is the plain,
    single-device engine: its collectives are no-ops and nothing is sharded."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_driver(self) -> bool:
        """Rank 0 schedules and answers the frontend; the others follow its steps."""
        return self.rank == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum `x` over the ranks, in place (the partial outputs of a row-parallel layer)."""
        if self.world_size > 1:
            dist.all_reduce(x)
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's `x` [..., n] side by side along the last dimension: [..., n * world_size]."""
        if self.world_size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=-1)

    def min_int(self, value: int) -> int:
        """The smallest of the ranks' `value` (the KV block count every rank can hold)."""
        if self.world_size == 1:
            return value
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([value], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())


SINGLE = RankGroup()


def join_group(rank: int, world_size: int, device_type: str, store_path: str) -> RankGroup:
    """Join the engine's process group; blocks until every rank has joined. `store_path`
    is a file that none of the ranks has created yet (the rendezvous needs no port)."""
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    else:  # every rank is on this host: gloo listens on loopback, not on the host's address
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(BACKENDS[device_type], init_method=f"file://{store_path}", rank=rank,
                            world_size=world_size, timeout=COLLECTIVE_TIMEOUT)
    return RankGroup(rank, world_size)
