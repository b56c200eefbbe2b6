"""Output redaction: PII and secrets in answers replaced by `[REDACTED:<kind>]` before they
leave the gateway, for whole answers and for streams.

The detector is `access/pii.py`'s. A stream is redacted as it flows: each choice's text is
held back only from the earliest place where a match could still be growing (a partial
match at the end, found with the `regex` module's partial matching, or a complete one
that touches the end and might extend), never more than `max_hold_chars`; the rest is
redacted and sent at once. So a secret split across chunks is caught, and the delay is
the few characters that might still become one. The matched text is never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import re

import regex

from kvserve.gateway.access.pii import DETECTORS

# the detector's patterns, compiled for partial matching
PARTIAL: dict[str, tuple[regex.Pattern[str], Callable[[str], bool]]] = {
    name: (regex.compile(pattern.pattern), check) for name, (pattern, check) in DETECTORS.items()}
# Every character a match of each kind can hold. A match that could still grow lies in the
# text's trailing run of these, so partial matching (slow) runs on that run only, and not
# at all when the text ends outside it. Secrets may hold any character: their partial scan
# starts a bounded distance before the last word (the longest keyword-and-separator prefix).
TAILS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z0-9._%+@-]*\Z"),
    "phone": re.compile(r"[0-9()+\s.-]*\Z"),
    "card": re.compile(r"[0-9 -]*\Z"),
    "ip": re.compile(r"[0-9.]*\Z"),
    "ipv6": re.compile(r"[0-9A-Fa-f:]*\Z"),
}
LAST_WORD = re.compile(r"\S*\Z")
SECRET_PREFIX = 48  # "-----BEGIN RSA PRIVATE KEY-----", "api_key = '" and the like


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


class TextRedactor:
    """Redacts one text that arrives in pieces (one per choice of a stream). `feed` returns what
    may be sent now; `flush` the rest at the end. `found` counts matches by kind."""

    def __init__(self, kinds: frozenset[str], max_hold_chars: int, found: Callable[[str], None]) -> None:
        self.detectors = [(name, PARTIAL[name]) for name in PARTIAL if name in kinds]
        self.max_hold = max_hold_chars
        self.found = found
        self.held = ""

    def feed(self, piece: str) -> str:
        text = self.held + piece
        spans, hold = self.scan(text)
        hold = max(hold, len(text) - self.max_hold)
        for span in spans:  # a complete match across the hold point is held whole
            if span.start < hold < span.end:
                hold = span.start
        self.held = text[hold:]
        return self.replace(text[:hold], [s for s in spans if s.end <= hold])

    def flush(self) -> str:
        text, self.held = self.held, ""
        return self.replace(text, self.complete(text))

    def scan(self, text: str) -> tuple[list[Span], int]:
        """Complete matches that cannot grow, and where the first one that still could begins."""
        spans, hold = [], len(text)
        for name, (pattern, check) in self.detectors:
            for m in DETECTORS[name][0].finditer(text):
                if m.end() == len(text):
                    hold = min(hold, m.start())
                elif check(m.group(0)):
                    spans.append(Span(m.start(), m.end(), name))
            start = tail_start(name, text)
            if start < len(text):
                growing = [m.start() for m in pattern.finditer(text, pos=start, partial=True)
                           if m.partial and m.end() > m.start()]
                hold = min([hold, *growing])
        return spans, hold

    def complete(self, text: str) -> list[Span]:
        return [Span(m.start(), m.end(), name) for name, (pattern, check) in self.detectors
                for m in pattern.finditer(text) if check(m.group(0))]

    def replace(self, text: str, spans: Iterable[Span]) -> str:
        out, at = [], 0
        for span in sorted(spans, key=lambda s: (s.start, -s.end)):
            if span.start < at:
                continue  # inside one already replaced (two detectors on one item)
            out += [text[at:span.start], f"[REDACTED:{span.kind}]"]
            at = span.end
            self.found(span.kind)
        out.append(text[at:])
        return "".join(out)


def tail_start(kind: str, text: str) -> int:
    """Where a match of `kind` that could still grow may begin, at the earliest."""
    if kind in TAILS:
        return TAILS[kind].search(text).start()  # type: ignore[union-attr]  # `*\Z` always matches
    return max(0, LAST_WORD.search(text).start() - SECRET_PREFIX)  # type: ignore[union-attr]


def redact_text(text: str, kinds: frozenset[str], found: Callable[[str], None]) -> str:
    """A whole text, redacted."""
    redactor = TextRedactor(kinds, 0, found)
    return redactor.replace(text, redactor.complete(text))
