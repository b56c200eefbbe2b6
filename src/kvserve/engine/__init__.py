"""The engine as its callers see it: the asyncio client of the core process, what goes in
and comes out of it, and what it raises. The server imports only from here; the modules
behind it (scheduler, KV cache, core process) are the engine's own business."""

from kvserve.engine.async_llm import AsyncLLM, ChoiceDelta, RequestStream
from kvserve.engine.core_messages import EngineInfo
from kvserve.engine.errors import (
    EngineDeadError,
    EngineStartupError,
    QueueFullError,
    RequestAbortedError,
    RequestTimeoutError,
)
from kvserve.engine.output_processor import CompletionDelta
from kvserve.engine.outputs import EngineStats
from kvserve.engine.speculator import SpecStats

__all__ = [
    "AsyncLLM",
    "ChoiceDelta",
    "CompletionDelta",
    "EngineDeadError",
    "EngineInfo",
    "EngineStartupError",
    "EngineStats",
    "QueueFullError",
    "RequestAbortedError",
    "RequestStream",
    "RequestTimeoutError",
    "SpecStats",
]
