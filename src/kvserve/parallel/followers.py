"""Rank 0's side of tensor parallelism: start the other ranks, send them each step, watch them.

Every rank runs a full model runner over its slice of the model. Rank 0 alone schedules;
before it runs a step it sends that step's SchedulerOutput to the other ranks, which run
the same step through their own runners. A SchedulerOutput holds only what changed (a
few hundred bytes for a decode step), each runner packs identical inputs from it, and the
LM head gathers the logits to every rank so that each samples the same ids with the same
generators: no tensor crosses the pipe and no sampled id travels back.

The other ranks are plain subprocesses (the engine core process is a daemon, which
multiprocessing does not let have children) joined to rank 0 by a socket pair. A rank
that exits while the engine runs ends rank 0's process at once: a peer blocked in a
collective would otherwise wait for the collective timeout.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any, Callable

import torch
import torch.distributed as dist

from kvserve.config import EngineConfig
from kvserve.parallel.group import SINGLE, RankGroup, join_group
from kvserve.parallel.shard import check_devices, check_shardable, check_supported

logger = logging.getLogger(__name__)

START_GRACE_S = 5.0  # how long a rank's exit during start-up waits for rank 0 to fail too


@dataclass(frozen=True)
class RankStart:
    """The first message to a follower rank: who it is and where the group meets."""

    config: EngineConfig
    rank: int
    world_size: int
    store_path: str
    log_level: int


class Followers:
    """The ranks 1..N-1 of an engine, as processes and the pipes that carry its steps."""

    def __init__(self, processes: list[subprocess.Popen], conns: list[Connection], store_path: str,
                 on_lost: Callable[[], None]) -> None:
        self.processes = processes
        self.store_path = store_path
        self.conns = conns
        self.on_lost = on_lost  # a rank exited while the engine runs
        self.closed = threading.Event()  # close() was called: exits from now on are expected
        self.running = False  # the first step was sent: start-up is over
        for rank, process in enumerate(processes, start=1):
            threading.Thread(target=self._watch, args=(rank, process), daemon=True,
                             name=f"kvserve-rank-{rank}-watch").start()

    @classmethod
    def spawn(cls, config: EngineConfig, world_size: int, store_path: str,
              on_lost: Callable[[], None]) -> "Followers":
        processes, conns = [], []
        for rank in range(1, world_size):
            ours, theirs = socket.socketpair()
            command = [sys.executable, "-m", "kvserve.parallel.rank_worker", str(theirs.fileno())]
            processes.append(subprocess.Popen(command, pass_fds=(theirs.fileno(),)))
            theirs.close()
            conn = Connection(ours.detach())
            conn.send(RankStart(config, rank, world_size, store_path, logging.getLogger().level))
            conns.append(conn)
        return cls(processes, conns, store_path, on_lost)

    def send(self, sched: Any) -> None:
        """Hand the step about to run to every other rank (before rank 0 runs it)."""
        if not self.running:
            self._started()
        for conn in self.conns:
            conn.send(sched)

    def close(self, timeout: float = 10.0) -> None:
        """Tell the ranks to stop and wait for them (past `timeout`, kill them), then leave
        the group: this process may start another engine."""
        self.closed.set()
        for conn in self.conns:
            try:
                conn.send(None)
                conn.close()
            except OSError:
                pass
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if dist.is_initialized():
            dist.destroy_process_group()
        self._remove_store()

    def _started(self) -> None:
        """The first step: every rank is past start-up and its collectives. gloo connected
        its ranks when they joined and reads the store no more, so its directory goes now
        (NCCL's error handling may still write to the store: it goes at close)."""
        self.running = True
        if dist.get_backend() == "gloo":
            self._remove_store()

    def _remove_store(self) -> None:
        remove_store(self.store_path)

    def _watch(self, rank: int, process: subprocess.Popen) -> None:
        code = process.wait()
        # at start-up every rank may fail the same check at once (a KV pool too small): rank 0
        # then closes within moments and reports its own error, which is the clearer one
        if self.closed.wait(0 if self.running else START_GRACE_S):
            return
        logger.error("tensor-parallel rank %d exited (exit code %s): stopping the engine", rank, code)
        for other in self.processes:
            if other.poll() is None:
                other.kill()
        self._remove_store()
        self.on_lost()


class NoFollowers:
    """A single-rank engine: nothing to send, nothing to stop."""

    def send(self, sched: Any) -> None:
        pass

    def close(self, timeout: float = 10.0) -> None:
        pass


NO_FOLLOWERS = NoFollowers()


def remove_store(store_path: str) -> None:
    """Delete the group's rendezvous directory: whichever rank stops first, rank 0 on a
    clean close or the followers when rank 0 has exited without one (os._exit)."""
    shutil.rmtree(os.path.dirname(store_path), ignore_errors=True)


def _exit_now() -> None:
    logging.shutdown()
    os._exit(1)  # the main thread may sit in a collective that never returns


def start_ranks(config: EngineConfig, hf_config: Any, on_lost: Callable[[], None] = _exit_now,
                ) -> tuple[RankGroup, Followers | NoFollowers]:
    """Rank 0: check that the model splits, start ranks 1..N-1 and join their group."""
    n = config.device.tensor_parallel_size
    if n == 1:
        return SINGLE, NO_FOLLOWERS
    device_type = torch.device(config.device.resolved_device()).type
    check_supported(config)
    check_shardable(hf_config, n)
    check_devices(n, device_type)
    store_path = os.path.join(tempfile.mkdtemp(prefix="kvserve-tp-"), "store")
    followers = Followers.spawn(config, n, store_path, on_lost)
    try:
        return join_group(0, n, device_type, store_path), followers
    except BaseException:
        followers.close(timeout=1.0)
        raise


def rank_config(config: EngineConfig, group: RankGroup) -> EngineConfig:
    """One rank's settings: its own GPU, or its share of the CPU threads."""
    n = group.world_size
    if n == 1:
        return config
    device = config.device
    if torch.device(device.resolved_device()).type == "cuda":
        device = replace(device, device=f"cuda:{group.rank}")
    else:
        device = replace(device, threads=max(1, device.resolved_threads() // n))
    return replace(config, device=device)
