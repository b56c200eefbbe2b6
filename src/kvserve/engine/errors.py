"""What the engine raises to its callers: a module of exceptions that imports nothing, so
the scheduler, the core process and the async client share them without import cycles."""

from __future__ import annotations


class QueueFullError(RuntimeError):
    """The waiting queue is at its bound; the caller should retry later (HTTP 503)."""


class RequestTimeoutError(TimeoutError):
    """The request ran past its deadline and was aborted."""


class RequestAbortedError(RuntimeError):
    """The caller ended every open request (`AsyncLLM.abort_all`), e.g. a server whose
    shutdown grace period ran out."""


class EngineStartupError(RuntimeError):
    """The core process could not load the engine; the message says why."""


class EngineDeadError(RuntimeError):
    """The core process is gone (crashed, killed or shut down)."""
