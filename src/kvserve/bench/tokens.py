"""Token counters the datasets use to size prompts, picked by what is at hand.

The benchmark never needs the model itself: a prompt of N tokens is built by measuring
candidate texts with one of these counters. The server's `usage` figures stay the
source of truth for the reported token counts; a counter only shapes the workload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import httpx


class TokenCounter(Protocol):
    """Counts the tokens of a text as the benchmarked model would (or an estimate)."""

    name: str  # shown in the report: which counter sized the prompts

    def count(self, text: str) -> int: ...


class WordCounter:
    """One token per whitespace-separated word: an estimate for when nothing better exists."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())


class LocalTokenizer:
    """A Hugging Face `tokenizer.json` read with the `tokenizers` library (no torch)."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        self._tokenizer = Tokenizer.from_file(str(file))
        self.name = f"tokenizer:{path}"

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


class ServerTokenizer:
    """The server's own `/tokenize` endpoint (vLLM and kvserve answer it)."""

    def __init__(self, base_url: str, model: str, headers: dict[str, str] | None = None) -> None:
        self._client = httpx.Client(base_url=base_url, headers=headers or {}, timeout=30.0, trust_env=False)
        self._model = model
        self.name = f"server:{base_url}/tokenize"

    def count(self, text: str) -> int:
        body = {"model": self._model, "prompt": text, "add_special_tokens": False}
        response = self._client.post("/tokenize", json=body)
        response.raise_for_status()
        data = response.json()
        return int(data["count"]) if "count" in data else len(data["tokens"])

    def probe(self) -> bool:
        """Whether the endpoint exists and answers in the expected shape."""
        try:
            return self.count("hello world") > 0
        except (httpx.HTTPError, KeyError, ValueError):  # ValueError covers a non-JSON body
            return False


def pick_counter(tokenizer: str | None, base_url: str, model: str, headers: dict[str, str]) -> TokenCounter:
    """`--tokenizer DIR` if given, else the server's /tokenize if it answers, else words."""
    if tokenizer:
        return LocalTokenizer(tokenizer)
    server = ServerTokenizer(base_url, model, headers)
    return server if server.probe() else WordCounter()
