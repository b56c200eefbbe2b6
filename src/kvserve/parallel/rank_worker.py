"""A follower rank's process: `python -m kvserve.parallel.rank_worker FD`.

It reads its RankStart from the socket FD, joins the group, builds an engine core over its
slice of the model (the same start-up as rank 0: load, shard, size and fill the KV pool,
capture graphs, each a collective step in lock-step with the other ranks), then runs
every SchedulerOutput rank 0 sends, until rank 0 sends None or goes away.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from multiprocessing.connection import Connection

PR_SET_PDEATHSIG = 1  # linux prctl: a signal for us when the parent dies


def main(fd: int) -> None:
    _die_with_parent()
    # like the core process: the parent decides when we stop (a closed pipe or None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(fd)
    start = conn.recv()
    logging.basicConfig(level=start.log_level or logging.INFO,
                        format=f"%(asctime)s %(levelname)s rank{start.rank} %(name)s: %(message)s")
    import torch

    from kvserve.engine.engine_core import EngineCore
    from kvserve.parallel.followers import remove_store
    from kvserve.parallel.group import join_group

    group = join_group(start.rank, start.world_size, torch.device(start.config.device.resolved_device()).type,
                       start.store_path)
    runner = EngineCore(start.config, group).runner
    try:
        while (sched := conn.recv()) is not None:
            follow(runner, sched)
    except EOFError:  # rank 0 is gone
        remove_store(start.store_path)
        os._exit(1)
    runner.shutdown()
    os._exit(0)  # skip interpreter teardown (torch's takes seconds)


def follow(runner, sched) -> None:
    """Run rank 0's step. A verification step runs with no step in flight, before or after,
    as on rank 0 (EngineCore.step): its inputs read every id from the host, and the next
    step reads none of its (two-dimensional) ids from the device."""
    verifies = bool(sched.scheduled_spec_decode_tokens)
    if verifies:
        runner.wait_for_all()
    runner.execute(sched)
    if verifies:
        runner.wait_for_all()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


if __name__ == "__main__":
    main(int(sys.argv[1]))
