"""How far two answers to one request are apart: exact match (greedy requests), embedding
similarity (all-MiniLM-L6-v2, the semantic cache's model, on its worker thread), length, latency."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from kvserve.gateway.quality.book import Comparison
from kvserve.gateway.quality.capture import Answer
from kvserve.gateway.store.semantic_cache import Embedder

log = logging.getLogger("kvserve.gateway")
LOAD_WAIT_S = 120.0  # the first comparisons wait this long for the model to load


async def similarity(embedder: Embedder | None, a: str, b: str) -> float | None:
    """Cosine similarity of the two texts' embeddings (their first 256 tokens), or None when
    no model is configured or it could not load."""
    if embedder is None:
        return None
    embedder.warm()
    try:
        if not embedder.ready and embedder.loading is not None:
            await asyncio.wait_for(asyncio.shield(embedder.loading), LOAD_WAIT_S)
        if not embedder.ready:
            return None
        vectors = await asyncio.get_running_loop().run_in_executor(
            embedder.executor, lambda: embedder.model.encode([a, b], normalize_embeddings=True, convert_to_numpy=True))
    except Exception as exc:  # noqa: BLE001  # a comparison without similarity, never a failure
        log.warning("shadow similarity not computed: %s", type(exc).__name__)
        return None
    return float(np.dot(vectors[0], vectors[1]))


async def compare(request_id: str, primary_version: str, primary: Answer, shadow: Answer, greedy: bool,
                  embedder: Embedder | None) -> Comparison:
    return Comparison(request_id, primary_version, primary.text == shadow.text if greedy else None,
                      await similarity(embedder, primary.text, shadow.text), len(primary.text), len(shadow.text),
                      primary.seconds, shadow.seconds)
