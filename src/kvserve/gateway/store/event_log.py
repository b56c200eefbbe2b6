"""One stream's stored SSE events: a list while the stream runs, one blob once it finished.

A full 256 MiB store holds some 35,000 finished streams of ~35 events each. Kept as one
`bytes` object per event, that would be a million small objects churned oldest first,
whose freed room the allocators do not give back: allocated blocks stay flat while RSS
creeps ~2 MiB/min (fragmentation, not a leak). A finished stream is therefore compacted
into one `bytes` blob plus the end offset of each event: two objects per stream instead
of ~35, and RSS levels off. A running stream stays a list, since appends to a list are
cheap and few streams run at once."""

from __future__ import annotations

from array import array
from itertools import accumulate

EVENT_OVERHEAD = 40  # per event of a running stream: bytes header and list slot (with over-allocation)
COMPACT_EVENT_OVERHEAD = 4  # per event of a compacted stream: its end offset


class EventLog:
    """The events of one stream, in order; `since(i)` gives the same events whichever form it holds."""

    __slots__ = ("items", "blob", "ends", "nbytes")

    def __init__(self) -> None:
        self.items: list[bytes] = []  # while running
        self.blob = b""  # once compacted: every event, back to back
        self.ends = array("I")  # once compacted: where each event ends in `blob`
        self.nbytes = 0  # the events' bytes, in either form

    def __len__(self) -> int:
        return len(self.ends) + len(self.items)

    @property
    def compacted(self) -> bool:
        return bool(self.ends)

    @property
    def charge(self) -> int:
        """The bytes the events hold: their payload plus the per-event cost of their form."""
        return self.nbytes + EVENT_OVERHEAD * len(self.items) + COMPACT_EVENT_OVERHEAD * len(self.ends)

    def extend(self, items: list[bytes]) -> None:
        self.items.extend(items)
        self.nbytes += sum(map(len, items))
        if self.compacted:  # a write after the finishing one (not the recorder's way): keep one form
            self.compact()

    def since(self, start: int) -> list[bytes]:
        """The events from index `start` on, as a list slice would give them (new `bytes`
        objects when compacted: reads are rare, a resume after a lost connection)."""
        if not self.compacted:
            return self.items[start:]
        ends, blob = self.ends, self.blob
        begins = [0, *ends]
        return [blob[begins[i]:ends[i]] for i in range(len(ends))[start:]]

    def compact(self) -> None:
        """Join the events into one blob (once the stream finished)."""
        if not self.items or self.nbytes >= 1 << 32:
            return  # nothing to join, or past what the offsets hold (streams are capped far lower)
        offset = len(self.blob)
        self.ends = array("I", [*self.ends, *(offset + end for end in accumulate(map(len, self.items)))])  # exact size
        self.blob, self.items = self.blob + b"".join(self.items), []
