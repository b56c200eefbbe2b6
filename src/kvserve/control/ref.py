"""Model references: `NAME:VERSION` names one immutable version, `NAME@TAG` a movable tag."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Names, versions and tags become storage keys and directory names: a conservative
# alphabet keeps them safe on every filesystem and in S3 keys (no '/', no '..').
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RefError(ValueError):
    """A model name, version, tag or reference that is not well formed."""


def check_part(kind: str, value: str) -> str:
    """`value` if it is a valid name, version or tag (`kind` says which, for the message)."""
    if not isinstance(value, str) or not _PART.match(value) or ".." in value:
        raise RefError(
            f"invalid {kind} {value!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


@dataclass(frozen=True)
class ModelRef:
    """A version (`version` set) or a tag (`tag` set) of the model `name`."""

    name: str
    version: str | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        check_part("model name", self.name)
        if (self.version is None) == (self.tag is None):
            raise RefError("a model reference names exactly one of a version (NAME:VERSION) or a tag (NAME@TAG)")
        if self.version is not None:
            check_part("version", self.version)
        if self.tag is not None:
            check_part("tag", self.tag)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """`NAME:VERSION` or `NAME@TAG`; RefError otherwise."""
        if "@" in text:
            name, _, tag = text.partition("@")
            return cls(name, tag=tag)
        name, sep, version = text.partition(":")
        if not sep:
            raise RefError(f"{text!r} is not a model reference: expected NAME:VERSION or NAME@TAG")
        return cls(name, version=version)

    def __str__(self) -> str:
        return f"{self.name}:{self.version}" if self.version is not None else f"{self.name}@{self.tag}"


def looks_like_ref(text: str) -> bool:
    """Whether `text` parses as a reference (a plain path such as ./model does not)."""
    try:
        ModelRef.parse(text)
    except RefError:
        return False
    return True
