"""Which models of a many-model server are in memory: states, LRU eviction, the memory budget.

Plain bookkeeping, no processes and no clock of its own (callers pass `now`), so that
every decision is tested directly. The rule it keeps: the estimated bytes of every model
that is loading or loaded, plus those of a second version being loaded beside one (a hot
swap), never exceed the budget. To make room it evicts loaded models in least recently
used order, never a pinned one and never one with requests in flight. A version a hot
swap replaced counts until its last request has finished (`drained`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ModelState(str, Enum):
    AVAILABLE = "available"  # known, not in memory
    LOADING = "loading"
    LOADED = "loaded"


class DoesNotFit(Exception):
    """No set of evictions makes room for a model; the message says how much is missing."""


@dataclass
class PoolEntry:
    name: str
    bytes: int  # estimated memory when loaded: weights plus the KV pool
    pinned: bool = False  # never evicted, never unloaded when idle
    state: ModelState = ModelState.AVAILABLE
    last_used: float = 0.0  # `now` of the latest request that began on it
    in_flight: int = 0  # requests begun and not ended
    swap_bytes: int = 0  # a second version loading beside this one (hot swap)
    draining_bytes: int = 0  # versions a swap replaced, still finishing their requests

    def evictable(self) -> bool:
        return self.state is ModelState.LOADED and not self.pinned and self.in_flight == 0 and not self.swap_bytes


class ModelPool:
    """The served models by name, and the memory budget they share (bytes)."""

    def __init__(self, budget_bytes: int, entries: list[PoolEntry]) -> None:
        self.budget_bytes = budget_bytes
        self.entries = {e.name: e for e in entries}

    def used_bytes(self) -> int:
        held = (e.bytes for e in self.entries.values() if e.state is not ModelState.AVAILABLE)
        return sum(held) + sum(e.swap_bytes + e.draining_bytes for e in self.entries.values())

    def plan_room(self, needed: int, keep: str) -> list[str]:
        """The models to unload (LRU first, never `keep`) so that `needed` more bytes fit;
        DoesNotFit when even every evictable one is not enough."""
        free = self.budget_bytes - self.used_bytes()
        victims: list[str] = []
        candidates = sorted((e for e in self.entries.values() if e.evictable() and e.name != keep),
                            key=lambda e: e.last_used)
        for entry in candidates:
            if free >= needed:
                break
            victims.append(entry.name)
            free += entry.bytes
        if free < needed:
            raise DoesNotFit(f"needs {_gib(needed)} of memory; {_gib(free)} can be made free within the budget of "
                             f"{_gib(self.budget_bytes)} (the rest is pinned, busy or loading)")
        return victims

    def plan_load(self, name: str) -> list[str]:
        """Evictions that let `name` load (see plan_room); [] when it is already in memory."""
        entry = self.entries[name]
        if entry.state is not ModelState.AVAILABLE:
            return []
        return self.plan_room(entry.bytes, keep=name)

    def loading(self, name: str) -> None:
        self.entries[name].state = ModelState.LOADING

    def loaded(self, name: str, now: float) -> None:
        entry = self.entries[name]
        entry.state, entry.last_used = ModelState.LOADED, now

    def unloaded(self, name: str) -> None:
        entry = self.entries[name]
        entry.state, entry.in_flight = ModelState.AVAILABLE, 0

    def begin(self, name: str, now: float) -> None:
        entry = self.entries[name]
        entry.in_flight += 1
        entry.last_used = now

    def end(self, name: str, now: float) -> None:
        entry = self.entries[name]
        entry.in_flight = max(0, entry.in_flight - 1)
        entry.last_used = now

    def swapping(self, name: str, new_bytes: int) -> None:
        """A new version of `name` starts loading beside the current one (call plan_room first)."""
        self.entries[name].swap_bytes = new_bytes

    def switched(self, name: str, now: float) -> int:
        """The new version took over; returns the bytes of the replaced one, which count
        until `drained` (0 when the model was not loaded)."""
        entry = self.entries[name]
        old = entry.bytes if entry.state is ModelState.LOADED else 0
        entry.bytes, entry.swap_bytes, entry.draining_bytes = entry.swap_bytes, 0, entry.draining_bytes + old
        entry.state, entry.last_used = ModelState.LOADED, now
        return old

    def drained(self, name: str, old_bytes: int) -> None:
        """A replaced version has been freed."""
        entry = self.entries[name]
        entry.draining_bytes = max(0, entry.draining_bytes - old_bytes)

    def swap_failed(self, name: str) -> None:
        self.entries[name].swap_bytes = 0

    def idle(self, now: float, idle_s: float) -> list[str]:
        """Loaded models nobody used for `idle_s` seconds that may be unloaded."""
        return [e.name for e in self.entries.values() if e.evictable() and now - e.last_used >= idle_s]


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"
