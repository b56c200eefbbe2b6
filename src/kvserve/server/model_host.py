"""ModelHost: the models of one server, each version in an engine process of its own.

It loads models on demand under the memory budget (control/model_pool.py decides what
to evict), unloads idle ones, and swaps a model's version blue/green: the new version
is started and warmed beside the old one, new requests go to it once it answers, and
the old one is shut down when the last request that picked it has finished answering.
A version that fails to load leaves the current one serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace

from kvserve.config import ConfigError, EngineConfig
from kvserve.control.model_pool import DoesNotFit, ModelPool, ModelState, PoolEntry
from kvserve.engine import AsyncLLM, EngineStartupError
from kvserve.openai_error import OpenAIError
from kvserve.sampling_defaults import load_sampling_defaults
from kvserve.sampling_params import SamplingParams
from kvserve.server.errors import model_not_found, model_unavailable
from kvserve.server.model_source import SourceError, VersionInfo, describe_source, fetch_source, is_registry_ref
from kvserve.server.model_version import ModelVersion
from kvserve.server.models_config import ModelsConfig, ModelSpec
from kvserve.server.settings import TextOptions
from kvserve.server.swap import SwapStatus
from kvserve.tokenizer import TokenizerError

logger = logging.getLogger("kvserve.server")

LOAD_ERRORS = (SourceError, EngineStartupError, TokenizerError, ConfigError, OSError)
RETRY_AFTER_LOADING_S = 5  # what a request that timed out waiting for a load is told to wait
RETRY_AFTER_NO_ROOM_S = 30  # ... and one whose model cannot fit now (a busy model may go idle)
PROGRESS_EVERY_S = 5.0


class LoadFailed(Exception):
    """A version could not be loaded; the message says why (for logs, the client, the status)."""


class ModelHost:
    """The served models by name: `acquire` a version for a request, `release` it when
    answered; `swap` a model to another registry version. Owns every engine process."""

    def __init__(self, config: ModelsConfig, base: EngineConfig, text: TextOptions = TextOptions(),
                 log_level: str = "info") -> None:
        self.config = config
        self.base = base  # engine settings shared by every model; `model` is replaced per version
        self.text = text  # how every model reads client text and writes tool calls and reasoning
        self.log_level = log_level
        self.specs = {s.name: s for s in config.models}
        self.infos = {s.name: describe_source(s.model, config.registry, s.version) for s in config.models}
        self.pool = ModelPool(config.budget_bytes(), [self._entry(s) for s in config.models])
        self.current: dict[str, ModelVersion] = {}
        self.swaps: dict[str, SwapStatus] = {}
        self.fatal = asyncio.Event()  # a pinned model's engine died: the server stops (a supervisor restarts it)
        self.fatal_reason = ""
        self._loads: dict[str, asyncio.Task[ModelVersion]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._retiring: set[ModelVersion] = set()  # swapped out or evicted, draining
        self._closing = False

    def _entry(self, spec: ModelSpec) -> PoolEntry:
        return PoolEntry(spec.name, self._estimate(spec, self.infos[spec.name]), spec.pinned)

    def _estimate(self, spec: ModelSpec | None, info: VersionInfo) -> int:
        if spec is not None and spec.memory_gib is not None:
            return int(spec.memory_gib * 2**30)
        return info.weight_bytes + int(self.base.cache.kv_cache_gib * 2**30)

    @property
    def default_name(self) -> str:
        return self.config.default_name

    # -- start and stop ------------------------------------------------------------

    async def start(self) -> None:
        """Load the pinned and preloaded models, in order; LoadFailed names the first that fails."""
        for spec in self.config.models:
            if spec.loads_at_start:
                for victim in self.pool.plan_load(spec.name):  # DoesNotFit: the budget cannot hold the pinned ones
                    self.unload(victim)
                self.pool.loading(spec.name)
                await self._load_now(spec.name)
        if self.config.idle_unload_s is not None:
            self._spawn(self._unload_idle_forever(self.config.idle_unload_s))

    async def shutdown(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._loads.values()):
            task.cancel()
        versions = list(self.current.values()) + list(self._retiring)
        self.current.clear()
        await asyncio.gather(*(v.engine.shutdown() for v in versions), return_exceptions=True)

    def abort_all(self, reason: str) -> None:
        for version in self.current.values():
            version.engine.abort_all(reason)

    # -- requests ------------------------------------------------------------------

    async def acquire(self, name: str | None) -> ModelVersion:
        """The version that answers a request for `name` (None: the default model), leased;
        loads it first when needed. 404 for an unknown name, 503 + Retry-After when it cannot
        be loaded in time or cannot fit."""
        name = self.default_name if name is None else name
        if name not in self.specs:
            raise model_not_found(name)
        version = self.current.get(name) or await self._wait_for_load(name)
        version.lease()
        self.pool.begin(name, time.monotonic())
        return version

    def release(self, version: ModelVersion) -> None:
        version.release()
        self.pool.end(version.name, time.monotonic())

    async def _wait_for_load(self, name: str) -> ModelVersion:
        task = self._loads.get(name) or self._start_load(name)
        timeout = self.specs[name].load_timeout_s or self.config.load_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            raise model_unavailable(f"The model `{name}` is still loading; retry shortly.", "model_loading",
                                    RETRY_AFTER_LOADING_S) from None
        except LoadFailed as exc:
            raise model_unavailable(f"The model `{name}` could not be loaded: {exc}", "model_load_failed",
                                    RETRY_AFTER_NO_ROOM_S) from None

    def _start_load(self, name: str) -> asyncio.Task[ModelVersion]:
        try:
            victims = self.pool.plan_load(name)
        except DoesNotFit as exc:
            raise model_unavailable(f"The model `{name}` cannot be loaded now: it {exc}.", "model_does_not_fit",
                                    RETRY_AFTER_NO_ROOM_S) from None
        for victim in victims:
            logger.info("unloading %s (least recently used) to make room for %s", victim, name)
            self.unload(victim)
        self.pool.loading(name)  # counted against the budget from now, not from when the task first runs
        task = asyncio.ensure_future(self._load_now(name))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "unretrieved"
        self._loads[name] = task
        return task

    async def _load_now(self, name: str) -> ModelVersion:
        """Load `name`, already marked loading in the pool."""
        spec = self.specs[name]
        try:
            version = await self.start_version(name, spec.model, self.infos[name])
        except BaseException:
            self.pool.unloaded(name)
            raise
        finally:
            self._loads.pop(name, None)
        self._make_current(version)
        self.pool.loaded(name, time.monotonic())
        return version

    # -- versions ------------------------------------------------------------------

    async def start_version(self, name: str, model: str | None, info: VersionInfo) -> ModelVersion:
        """Fetch, start and warm one version; LoadFailed says why it could not."""
        begun = time.monotonic()
        logger.info("loading %s (%s) in an engine process of its own", name, info.label)
        try:
            directory = await asyncio.to_thread(fetch_source, model, info, self.config.registry)
            where = None if directory is None else str(directory)
            engine_config = replace(self.base, model=replace(self.base.model, model=where, served_model_name=name))
            defaults = await asyncio.to_thread(load_sampling_defaults, directory, self.base.model.generation_config)
            engine = await self._start_engine(engine_config, name)
        except LOAD_ERRORS as exc:
            logger.error("loading %s (%s) failed: %s", name, info.label, exc)
            raise LoadFailed(str(exc)) from None
        version = ModelVersion(name, info.label, engine, defaults, info.weight_bytes, self.text)
        await self._warm(version)
        logger.info("%s (%s) loaded in %.1f s; %s", name, info.label, time.monotonic() - begun, defaults.describe())
        return version

    async def _start_engine(self, config: EngineConfig, name: str) -> AsyncLLM:
        begun = time.monotonic()
        start = asyncio.ensure_future(AsyncLLM.start(config, log_level=self.log_level))
        while not (await asyncio.wait({start}, timeout=PROGRESS_EVERY_S))[0]:
            logger.info("still loading %s (%.0f s)", name, time.monotonic() - begun)
        return start.result()

    async def _warm(self, version: ModelVersion) -> None:
        """One token through the new engine, so that its first real request pays no first-step costs."""
        try:
            async for _ in version.engine.generate([0], SamplingParams(max_tokens=1), f"warmup-{uuid.uuid4().hex}"):
                pass
        except Exception as exc:  # noqa: BLE001 - an engine that cannot answer is a failed load
            await version.engine.shutdown()
            raise LoadFailed(f"the new engine failed its warm-up request: {exc}") from None

    def _make_current(self, version: ModelVersion) -> None:
        self.current[version.name] = version
        self._spawn(self._watch(version))

    async def _watch(self, version: ModelVersion) -> None:
        """An engine that dies while current: a pinned model stops the server, another is unloaded."""
        await version.engine.dead.wait()
        if self._closing or self.current.get(version.name) is not version:
            return  # shut down on purpose (evicted, swapped out, server stopping)
        if self.specs[version.name].pinned:
            self.fatal_reason = f"{version.name}: {version.engine.dead_reason}"
            self.fatal.set()
            return
        logger.error("the engine of %s died (%s); it loads again on its next request", version.name,
                     version.engine.dead_reason)
        self.current.pop(version.name, None)
        self.pool.unloaded(version.name)

    def unload(self, name: str) -> None:
        """Stop routing to `name` and free its engine once its requests have finished."""
        version = self.current.pop(name, None)
        self.pool.unloaded(name)
        if version is not None:
            self._spawn(self._retire(version))

    async def _retire(self, version: ModelVersion, drain_timeout: float | None = None) -> None:
        self._retiring.add(version)
        try:
            await asyncio.wait_for(version.drained(), drain_timeout)
        except asyncio.TimeoutError:
            version.engine.abort_all("the model version was replaced")
        await version.engine.shutdown()
        self._retiring.discard(version)

    async def _unload_idle_forever(self, idle_s: float) -> None:
        while True:
            await asyncio.sleep(min(1.0, idle_s / 4))
            for name in self.pool.idle(time.monotonic(), idle_s):
                logger.info("unloading %s: unused for %.0f s", name, idle_s)
                self.unload(name)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- hot swap ------------------------------------------------------------------

    async def swap(self, name: str, ref: str, drain_timeout: float | None) -> SwapStatus:
        """Start moving `name` to the registry version `ref`; returns its status at once (the
        swap goes on in the background). Errors known before loading are raised as HTTP errors."""
        if name not in self.specs:
            raise model_not_found(name)
        info = await self._describe_ref(ref)
        running = self.swaps.get(name)
        if (running is not None and running.state == "loading") or name in self._loads:
            raise OpenAIError(409, f"The model `{name}` is already loading a version; wait for it to finish.",
                              "invalid_request_error", "version", "swap_in_progress")
        new_bytes = self._estimate(None, info)
        try:
            victims = self.pool.plan_room(new_bytes, keep=name)
        except DoesNotFit as exc:
            raise model_unavailable(f"{info.label} cannot be loaded beside `{name}` now: it {exc}.",
                                    "model_does_not_fit", RETRY_AFTER_NO_ROOM_S) from None
        for victim in victims:
            self.unload(victim)
        status = self.swaps[name] = SwapStatus(name, info.label, self._label_of(name))
        self.pool.swapping(name, new_bytes)
        self._spawn(self._run_swap(status, ref, info, drain_timeout))
        return status

    async def _describe_ref(self, ref: str) -> VersionInfo:
        if not isinstance(ref, str) or not is_registry_ref(ref):
            raise OpenAIError(400, f"`version` must be a registry reference, NAME:VERSION or NAME@TAG; got {ref!r}",
                              "invalid_request_error", "version", "invalid_value")
        try:
            return await asyncio.to_thread(describe_source, ref, self.config.registry)
        except SourceError as exc:
            raise OpenAIError(404, str(exc), "invalid_request_error", "version", "version_not_found") from None

    async def _run_swap(self, status: SwapStatus, ref: str, info: VersionInfo, drain_timeout: float | None) -> None:
        name = status.name
        try:
            new = await self.start_version(name, ref, info)
        except LoadFailed as exc:
            status.failed(str(exc))
            self.pool.swap_failed(name)
            return
        old = self.current.get(name)
        self._make_current(new)  # from here on, new requests get the new version
        self.specs[name] = replace(self.specs[name], model=ref)  # what a later reload loads
        self.infos[name] = info
        old_bytes = self.pool.switched(name, time.monotonic())
        status.switched()
        logger.info("%s now answers with %s; draining %s", name, info.label, status.previous)
        if old is not None:
            await self._retire(old, drain_timeout)
        self.pool.drained(name, old_bytes)
        status.done()

    # -- what the API shows ----------------------------------------------------------

    def _label_of(self, name: str) -> str | None:
        version = self.current.get(name)
        return version.label if version is not None else None

    def label(self, name: str) -> str:
        """The version `name` answers with now, or would load."""
        return self._label_of(name) or self.infos[name].label

    def state(self, name: str) -> ModelState:
        return self.pool.entries[name].state
