"""The messages between the API server and the engine core process (see core_client).

Small picklable dataclasses carried over two one-way `multiprocessing` pipes; the two
exceptions are what the parent raises (and hands to its listeners) when the core cannot
start or has gone away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvserve.engine.outputs import EngineOutput, EngineStats
from kvserve.engine.request import EngineRequest

# -- messages: parent -> core --------------------------------------------------------


@dataclass
class AddRequests:
    requests: list[EngineRequest]


@dataclass
class AbortRequests:
    request_ids: list[str]


@dataclass
class Ping:
    """Answered with a Pong between two steps: proves the loop is turning."""

    token: int


@dataclass
class Shutdown:
    pass


# -- messages: core -> parent --------------------------------------------------------


@dataclass
class EngineInfo:
    """What the parent needs to know about the loaded engine."""

    max_model_len: int
    vocab_size: int  # token ids the model accepts: 0..vocab_size-1
    eos_token_id: int | None
    tokenizer_path: str
    model_path: str | None
    stats: EngineStats


@dataclass
class StartupFailed:
    message: str


@dataclass
class EngineFailed:
    """The loop raised; the core process exits after sending this."""

    message: str


@dataclass
class Rejection:
    request_id: str
    kind: str  # "queue_full" | "invalid"
    message: str


@dataclass
class Admission:
    """The fate of the requests of one ingest: accepted into the queue, or rejected."""

    accepted: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    stats: EngineStats | None = None


@dataclass
class StepOutputs:
    """One step's outputs. Pickled compactly: an output that neither ends its request nor
    carries logprobs — nearly all of them — crosses the pipe as a tuple, without its
    metrics (the frontend reads them from the last output only)."""

    outputs: list[EngineOutput]
    stats: EngineStats

    def __reduce__(self) -> tuple:
        rows = [o if o.finish_reason is not None or o.new_logprobs else
                (o.request_id, o.new_token_ids, o.num_prompt_tokens, o.num_cached_tokens) for o in self.outputs]
        return _unpickle_step_outputs, (rows, self.stats)


def _unpickle_step_outputs(rows: list, stats: EngineStats) -> StepOutputs:
    outputs = [row if isinstance(row, EngineOutput) else
               EngineOutput(row[0], row[1], num_prompt_tokens=row[2], num_cached_tokens=row[3]) for row in rows]
    return StepOutputs(outputs, stats)


@dataclass
class Pong:
    token: int
