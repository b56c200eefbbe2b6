"""The host rows of a step's token masks and their copy on the device."""

from __future__ import annotations

import numpy as np
import torch

MIN_ROWS = 16  # first allocation of a host set; each growth doubles


class MaskBuffer:
    """Two sets of host rows [rows, W] int32 (pinned on a GPU), used by alternate steps.

    A step's set is filled (by the mask job, then the runner's thread) while the copy of the
    set before may still be queued behind the device's work; a set is written again only
    two steps later, when the step that uploaded it has returned its ids (the runner
    settles every launched step but the last before it prepares a new one), so its copy has
    run. The device rows are one tensor, reused: copies and sampling share a stream.
    """

    def __init__(self, num_words: int, device: torch.device) -> None:
        self.num_words = num_words
        self.device = device
        self._sets: list[torch.Tensor | None] = [None, None]
        self._device_rows: torch.Tensor | None = None

    def rows(self, serial: int, count: int) -> np.ndarray:
        """The host set of step `serial`, at least `count` rows (rows already written are kept)."""
        current = self._sets[serial & 1]
        if current is None or current.shape[0] < count:
            have = 0 if current is None else current.shape[0]
            grown = torch.empty(max(count, 2 * have, MIN_ROWS), self.num_words, dtype=torch.int32,
                                pin_memory=self.device.type == "cuda")
            if current is not None:
                grown[:have] = current
            self._sets[serial & 1] = current = grown
        return current.numpy()

    def upload(self, serial: int, count: int) -> torch.Tensor:
        """The first `count` rows of step `serial`'s set on the device [count, W] (no wait)."""
        host = self._sets[serial & 1][:count]
        if self.device.type == "cpu":
            return host
        if self._device_rows is None or self._device_rows.shape[0] < count:
            self._device_rows = torch.empty(self._sets[serial & 1].shape, dtype=torch.int32, device=self.device)
        rows = self._device_rows[:count]
        rows.copy_(host, non_blocking=True)
        return rows
