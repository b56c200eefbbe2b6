"""The PII and secrets detector."""

from __future__ import annotations

import pytest

from kvserve.gateway.access.pii import find, luhn_ok, redact


@pytest.mark.parametrize("text,kind", [
    ("write to jane.doe@example.co.uk today", "email"),
    ("call +1 415-555-0132 now", "phone"),
    ("my card is 4111-1111-1111-1111", "card"),
    ("server at 192.168.10.4 is down", "ip"),
    ("v6 is 2001:db8::8a2e:370:7334", "ipv6"),
    ("key sk-proj-abcdefghijklmnop1234", "secret"),
    ("AKIAIOSFODNN7EXAMPLE leaked", "secret"),
    ("password = hunter2hunter2", "secret"),
])
def test_finds_each_class(text, kind):
    assert kind in find(text)
    assert f"[REDACTED:{kind}]" in redact(text)


@pytest.mark.parametrize("text", ["the year 2024 had 365 days", "version 1.2.3.4.5", "card 4111111111111112 fails Luhn",
                                  "what is 12 * 34?", "999.1.1.1 is not an address"])
def test_plain_text_is_not_flagged(text):
    assert find(text) == set()


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("5500 0000 0000 0004")
    assert not luhn_ok("4111111111111112") and not luhn_ok("1234")


def test_skipping_detectors_that_cannot_match_finds_exactly_what_scanning_all_finds():
    import random

    from kvserve.gateway.access.pii import DETECTORS, find

    def every_detector(text: str) -> set[str]:
        return {name for name, (pattern, check) in DETECTORS.items()
                if any(check(m.group(0)) for m in pattern.finditer(text))}

    pieces = ["hello", " ", "a@b.io", "4111 1111 1111 1111", "10.0.0.1", "fe80::1", "::", "+1 (555) 123-4567",
              "sk-abcdefghijklmnop1234", "AKIAABCDEFGHIJKLMNOP", "ghp_" + "a" * 36, "TOKEN = hunter22hunter",
              "ſecret: abcdefghij", "api-key:xyz12345678", "-----BEGIN RSA PRIVATE KEY-----", "eyJabcdefghijk.abcdefghijk.x",
              "12", ":", "=", "_", "Passwd=", "ﬁve", "٣٤٥٦٧٨٩", "\n", "say: ", "x=1",
              # around the digit and dot counts below which card, phone and IPv4 scans are skipped
              "555 1234", "12 345 678", "555-12", "7", "1.", ".", "4111 1111 1111 1", "٣", "10.0.0."]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        assert find(text) == every_detector(text), text
