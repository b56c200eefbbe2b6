"""A small PII and secrets detector: emails, phone numbers, card numbers (Luhn-checked),
IP addresses and API keys/secrets. Requests where it finds any are never cached, and
`redact` replaces them before a prompt may reach a log line.

Regular expressions, so it errs on the side of flagging: a false positive only costs a
cache miss.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?!\w)")
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
SECRET = re.compile(
    r"\b(?:sk-[A-Za-z0-9_-]{16,}|sk-ant-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+)"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|(?i:\b(?:api[_-]?key|secret|password|passwd|token)\b\s*[:=]\s*['\"]?[^\s'\"]{8,})"
)


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# class -> (pattern, extra check on the match)
DETECTORS: dict[str, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "secret": (SECRET, lambda _: True),
    "email": (EMAIL, lambda _: True),
    "card": (CARD, luhn_ok),
    "ip": (IPV4, _valid_ip),
    "ipv6": (IPV6, _valid_ip),
    "phone": (PHONE, lambda m: sum(c.isdigit() for c in m) >= 7),
}


DIGIT = re.compile(r"\d")
CARD_DIGITS = 13  # the fewest digits CARD matches
PHONE_DIGITS = 7  # the fewest digits the phone check accepts
SECRET_MARKS = ("sk-", "AKIA", "_", "xox", "AIza", "eyJ", "-----BEGIN")  # what each token form starts with
SECRET_WORD = re.compile(r"(?i:api|secret|passw|token)")  # the named-secret form, with the same flags


def digit_count(text: str, at_least: int) -> int:
    """How many digits (any script's, as `\\d`) `text` has, counting no further than `at_least`."""
    found = 0
    for _ in DIGIT.finditer(text):
        found += 1
        if found >= at_least:
            break
    return found


def detectors_for(text: str) -> list[tuple[str, re.Pattern[str], Callable[[str], bool]]]:
    """The detectors that could match `text`: each pattern needs something the text may lack
    (an @, enough digits, dots, two colons, a secret's prefix or name), so skipping the others
    misses nothing, and most prompts need few of the scans. A card number has 13 digits or
    more, a phone number 7 (its check counts them), an IPv4 address 4 digits and 3 dots."""
    digits = digit_count(text, CARD_DIGITS)
    secret = any(mark in text for mark in SECRET_MARKS) or (
        ("=" in text or ":" in text) and SECRET_WORD.search(text) is not None)
    possible = {"secret": secret, "email": "@" in text, "card": digits >= CARD_DIGITS,
                "ip": digits >= 4 and text.count(".") >= 3, "phone": digits >= PHONE_DIGITS,
                "ipv6": text.count(":") >= 2}
    return [(name, pattern, check) for name, (pattern, check) in DETECTORS.items() if possible[name]]


def find(text: str) -> set[str]:
    """The classes of sensitive data in `text`."""
    found = set()
    for name, pattern, check in detectors_for(text):
        if any(check(m.group(0)) for m in pattern.finditer(text)):
            found.add(name)
    return found


def redact(text: str) -> str:
    """`text` with every detected item replaced by [REDACTED:<class>]."""
    for name, pattern, check in detectors_for(text):
        text = pattern.sub(lambda m, n=name, c=check: f"[REDACTED:{n}]" if c(m.group(0)) else m.group(0), text)
    return text
