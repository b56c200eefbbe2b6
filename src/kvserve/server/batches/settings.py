"""Settings of the batch API (flags of `kvserve serve`, mapped onto ServerSettings)."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from kvserve.config import EngineConfig
from kvserve.server.batches.stores import STORES, scheme_of

# below any priority an interactive request sends in practice: lower values run first
BATCH_PRIORITY = 2**62


@dataclass(frozen=True)
class BatchSettings:
    data_dir: Path | None = None  # uploaded files, output files (and the SQLite state); None: default_data_dir()
    max_file_bytes: int = 200 * 1024 * 1024  # an upload larger than this is refused with 413
    concurrency: int = 8  # batch lines in the engine at once; 0 turns the batch API off
    busy_concurrency: int = 2  # ... while clients' completion requests are being answered (and traffic.HOLD_S after)
    max_lines: int = 50_000  # lines of one input file at most (OpenAI's limit)
    store: str | None = None  # where job state lives: None (SQLite in data_dir) or a URL (stores.py)

    def __post_init__(self) -> None:
        if self.max_file_bytes < 1:
            raise ValueError(f"the batch file size limit must be positive, got {self.max_file_bytes}")
        if self.concurrency < 0:
            raise ValueError(f"the batch concurrency must be non-negative, got {self.concurrency}")
        if self.busy_concurrency < 1:
            raise ValueError(f"the batch concurrency while busy must be at least 1, got {self.busy_concurrency}")
        if self.max_lines < 1:
            raise ValueError(f"the batch line limit must be positive, got {self.max_lines}")
        if scheme_of(self.store) not in STORES:
            raise ValueError(f"the batch store must be a URL of one of {sorted(STORES)}, got {self.store!r}")

    @property
    def enabled(self) -> bool:
        return self.concurrency > 0

    def resolved_dir(self) -> Path:
        return (self.data_dir or default_data_dir()).expanduser().resolve()


def default_data_dir() -> Path:
    """Beside the converted models: $XDG_CACHE_HOME/kvserve/batches, or ~/.cache/kvserve/batches."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kvserve" / "batches"


def with_batch_policy(config: EngineConfig, batches: BatchSettings) -> EngineConfig:
    """With batches on, the engine schedules by priority, so that batch lines yield to
    interactive requests (which, all at priority 0, are then ordered as under fcfs)."""
    if not batches.enabled or config.scheduler.policy == "priority":
        return config
    return replace(config, scheduler=replace(config.scheduler, policy="priority"))
