"""The raw outcome of one benchmark request, shared by the client, metrics and reports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestRecord:
    """What one request did, in raw timestamps; `error` None means it succeeded."""

    index: int  # position in the workload
    start: float  # perf_counter seconds when the request was sent
    end: float | None = None  # when the stream ended, failed or was cancelled
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk carrying output
    prompt_tokens: int | None = None  # from the server's usage (None: not reported)
    completion_tokens: int | None = None  # from the server's usage (None: not reported)
    error: str | None = None  # error type; None = success
    error_message: str = ""  # the server's message or the exception's text
    tenant: str | None = None  # the workload's tenant, if any
    prompt_len: int = 0  # prompt tokens as the workload's counter sized them (an estimate)
    output_len: int = 0  # max_tokens asked for
