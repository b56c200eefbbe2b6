"""Compiled grammars, cached per grammar text (LRU): a repeated schema costs a copy, not a compile."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import llguidance
import llguidance.hf

logger = logging.getLogger(__name__)

CACHE_SIZE = 512  # compiled grammars kept; a JSON schema's is tens of KiB


def load_ll_tokenizer(tokenizer_path: str | Path, vocab_size: int | None = None) -> llguidance.LLTokenizer:
    """llguidance's view of the model's tokenizer (about a second for a 150k vocabulary)."""
    from kvserve.tokenizer import load_tokenizer

    return llguidance.hf.from_tokenizer(load_tokenizer(tokenizer_path), n_vocab=vocab_size)


class GrammarCompiler:
    """Matchers for grammars: compiled once, then handed out as fresh copies."""

    def __init__(self, tokenizer: Any, cache_size: int = CACHE_SIZE) -> None:
        self.tokenizer = tokenizer
        self.cache_size = cache_size
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self.hits = self.misses = 0

    def matcher(self, grammar: str) -> llguidance.LLMatcher:
        """A matcher at the start of `grammar`; check `is_error()` (an invalid grammar is one)."""
        template = self._compiled.get(grammar)
        if template is not None:
            self.hits += 1
            self._compiled.move_to_end(grammar)
            return template.deep_copy()
        self.misses += 1
        template = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
        if template.is_error():
            logger.warning("a grammar failed to compile: %s", template.get_error())
            return template
        self._compiled[grammar] = template
        if len(self._compiled) > self.cache_size:
            self._compiled.popitem(last=False)
        return template.deep_copy()
