"""What the batch routes hold: the store, the files, the runner and the data directory's lock.

One server owns a data directory at a time (an flock on `<data dir>/lock`): two servers
running the same jobs would answer lines twice. A server that finds the directory taken
serves without batches and says why in the log and in its 503s.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from typing import Any, BinaryIO

import httpx

from kvserve.openai_error import OpenAIError
from kvserve.server.batches.files import FileDir
from kvserve.server.batches.runner import BatchRunner
from kvserve.server.batches.settings import BATCH_PRIORITY, BatchSettings
from kvserve.server.batches.redis_store import StoreUnavailable
from kvserve.server.batches.stores import Store, open_store
from kvserve.server.batches.traffic import MARK_HEADER, InteractiveTraffic

logger = logging.getLogger("kvserve.batches")
BASE_URL = "http://batch.internal"  # the in-process app, as the runner's client names it
# the request log has a line per batch line already; httpx's own line for each would double it
logging.getLogger("httpx").addFilter(lambda record: BASE_URL not in record.getMessage())


class BatchService:
    def __init__(self, settings: BatchSettings, store: Store, files: FileDir, runner: BatchRunner,
                 lock: BinaryIO, client: httpx.AsyncClient) -> None:
        self.settings, self.store, self.files, self.runner = settings, store, files, runner
        self._lock, self._client = lock, client
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Run the runner (it resumes unfinished jobs first); call on the serving event loop."""
        self._task = asyncio.get_running_loop().create_task(self.runner.run())

    async def stop(self) -> None:
        """Stop the runner: lines in the engine are aborted and run again after a restart."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()
        self.store.close()
        self._lock.close()  # releases the flock


class Unavailable:
    """The batch API of a server that has none (turned off, or its data directory is taken)."""

    def __init__(self, reason: OpenAIError) -> None:
        self.reason = reason

    def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def open_batches(settings: BatchSettings, app: Any, api_key: str | None,
                 traffic: InteractiveTraffic | None = None) -> BatchService | Unavailable:
    """The service over `settings.data_dir`, running lines through `app` itself (its own
    routes, validation and errors, over an in-process ASGI transport); `traffic` counts the
    clients' requests (fewer lines run while there are some)."""
    if not settings.enabled:
        return Unavailable(OpenAIError(404, "The batch API is turned off on this server (--batch-concurrency 0).",
                                       code="not_found"))
    root = settings.resolved_dir()
    root.mkdir(parents=True, exist_ok=True)
    lock = open(root / "lock", "wb")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        logger.warning("batch API off: another server holds the data directory %s (pick one with --data-dir)", root)
        return Unavailable(OpenAIError(503, "The batch API is unavailable: its data directory is in use by another "
                                       "server.", "service_unavailable_error", code="batches_unavailable"))
    try:
        store = open_store(settings.store, root)
        claimed = store.claim(str(root))
    except (OpenAIError, ValueError) as exc:  # Redis down or a bad URL: serve without batches, say why
        lock.close()
        logger.warning("batch API off: the batch store did not open (%s)", exc)
        return Unavailable(StoreUnavailable())
    if not claimed:
        store.close()
        lock.close()
        logger.warning("batch API off: another server holds the jobs in the batch store")
        return Unavailable(OpenAIError(503, "The batch API is unavailable: its store is in use by another server.",
                                       "service_unavailable_error", code="batches_unavailable"))
    files = FileDir(root / "files")
    traffic = traffic or InteractiveTraffic()
    headers: dict[str, str] = {MARK_HEADER: traffic.token}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                               base_url=BASE_URL, headers=headers, timeout=None)
    runner = BatchRunner(store, files, _executor(client), settings, traffic)
    return BatchService(settings, store, files, runner, lock, client)


def _executor(client: httpx.AsyncClient):
    async def execute(endpoint: str, body: dict[str, Any]) -> tuple[int, str, Any]:
        response = await client.post(endpoint, json={**body, "priority": BATCH_PRIORITY})
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": {"message": response.text[:1000], "type": "internal_server_error"}}
        return response.status_code, response.headers.get("x-request-id", ""), payload
    return execute
