"""SwapStatus: where one hot swap of a model's version stands (GET /admin/models/{name})."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SwapStatus:
    """loading → draining → done, or loading → failed (the previous version still serves)."""

    name: str
    target: str  # NAME:VERSION being loaded
    previous: str | None  # the version that answered when the swap began (None: the model was not loaded)
    state: str = "loading"
    error: str | None = None  # why a failed swap failed
    requested_at: float = field(default_factory=time.time)  # epoch seconds
    switch_s: float | None = None  # from the request to the moment new requests went to `target`
    done_s: float | None = None  # from the request to the old version being freed (or the failure)

    def switched(self) -> None:
        self.state, self.switch_s = "draining", self._elapsed()

    def done(self) -> None:
        self.state, self.done_s = "done", self._elapsed()

    def failed(self, error: str) -> None:
        self.state, self.error, self.done_s = "failed", error, self._elapsed()

    def _elapsed(self) -> float:
        return round(time.time() - self.requested_at, 3)

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "previous": self.previous, "state": self.state, "error": self.error,
                "requested_at": int(self.requested_at), "switch_s": self.switch_s, "done_s": self.done_s}
