"""Typed engine configuration: one dataclass per concern, validated when built.

CLI flags and YAML files map onto these fields by name (see kvserve.cli.engine_args).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields

DTYPES = ("auto", "float32", "bfloat16", "float16")
POLICIES = ("fcfs", "priority")
LOAD_FORMATS = ("auto", "dummy")
QUANTIZATIONS = ("int8", "int4", "fp8")  # kvserve.models.quantization.QUANTIZERS
GENERATION_CONFIGS = ("auto", "none")
SPECULATIVE_METHODS = ("ngram", "draft_model")  # kvserve.engine.speculator.PROPOSERS
MAX_DRAFT_MODEL_TOKENS = 8  # draft_model: k one-token draft forwards a step
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3")  # kvserve.attention.kv_format.STORAGE_DTYPES, and auto


class ConfigError(ValueError):
    """A setting is out of range or inconsistent; the message names the setting."""


class DeviceUnavailableError(RuntimeError):
    """The device asked for does not exist on this machine (e.g. --device cuda, no GPU)."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@dataclass
class ModelConfig:
    model: str | None = None  # HF directory or Hugging Face model id (org/name); default: the embedded SmolLM2-135M-Instruct
    tokenizer: str | None = None  # tokenizer directory when it differs from model
    dtype: str = "auto"  # auto = the checkpoint's dtype on GPU; on CPU bfloat16 if it has bf16 instructions, else float32
    max_model_len: int | None = None  # context length in tokens; default: the model's own
    seed: int = 0  # seed of the engine-wide generator (unseeded requests)
    served_model_name: str | None = None  # name the API answers to; default: model or arch as given
    load_format: str = "auto"  # auto = the checkpoint's safetensors; dummy = random weights of its shape
    arch: str | None = None  # instead of model: random weights of a named shape (qwen3-0.6b, ...) or config.json
    quantization: str | None = None  # int8 / int4 weight-only (CPU with bfloat16; int4 also GPU), fp8 weights and activations (GPU)
    generation_config: str = "auto"  # auto = requests without temperature etc. get the model's recommended values; none = temperature 1

    def __post_init__(self) -> None:
        _require(
            not (self.model and self.arch),
            f"model and arch are mutually exclusive, got both {self.model!r} and {self.arch!r}",
        )
        _require(self.load_format in LOAD_FORMATS, f"load_format must be one of {LOAD_FORMATS}, got {self.load_format!r}")
        _require(
            self.generation_config in GENERATION_CONFIGS,
            f"generation_config must be one of {GENERATION_CONFIGS}, got {self.generation_config!r}",
        )
        _require(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        _require(
            self.quantization in (None, *QUANTIZATIONS),
            f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}",
        )
        _require(
            self.max_model_len is None or self.max_model_len > 0,
            f"max_model_len must be positive, got {self.max_model_len}",
        )


@dataclass
class CacheConfig:
    block_size: int = 16  # tokens per KV block
    gpu_memory_utilization: float = 0.9  # this engine's share of GPU memory: weights, activations and KV pool
    kv_cache_gib: float = 1.0  # KV pool size on CPU (GiB); on GPU, if set > 0, overrides
    num_gpu_blocks_override: int | None = None  # exact KV pool size in blocks, instead of one sized from memory (tests, benchmarks)
    enable_prefix_caching: bool = True  # reuse computed blocks across requests
    kv_cache_dtype: str = "auto"  # KV storage: auto = the model's dtype; fp8 (= fp8_e4m3): 1 byte an element, twice the tokens

    def __post_init__(self) -> None:
        _require(self.block_size in (8, 16, 32, 64, 128), f"block_size must be 8..128 (power of two), got {self.block_size}")
        _require(
            0.0 < self.gpu_memory_utilization <= 1.0,
            f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}",
        )
        _require(self.kv_cache_gib > 0, f"kv_cache_gib must be positive, got {self.kv_cache_gib}")
        _require(self.kv_cache_dtype in KV_CACHE_DTYPES,
                 f"kv_cache_dtype must be one of {KV_CACHE_DTYPES}, got {self.kv_cache_dtype!r}")
        _require(
            self.num_gpu_blocks_override is None or self.num_gpu_blocks_override > 0,
            f"num_gpu_blocks_override must be positive, got {self.num_gpu_blocks_override}",
        )


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 256  # requests in one step at most
    max_num_batched_tokens: int = 8192  # tokens (prefill + decode) in one step at most
    max_waiting: int = 1024  # requests queued for a place in the batch at most; beyond, new ones are refused (HTTP 503)
    policy: str = "fcfs"  # fcfs | priority (lower priority value runs first)
    async_scheduling: bool = True  # schedule and launch the next step before the current one's ids are back

    def __post_init__(self) -> None:
        _require(self.max_num_seqs >= 1, f"max_num_seqs must be at least 1, got {self.max_num_seqs}")
        _require(
            self.max_num_batched_tokens >= 1,
            f"max_num_batched_tokens must be at least 1, got {self.max_num_batched_tokens}",
        )
        _require(self.max_waiting >= 1, f"max_waiting must be at least 1, got {self.max_waiting}")
        _require(self.policy in POLICIES, f"policy must be one of {POLICIES}, got {self.policy!r}")


@dataclass
class DeviceConfig:
    device: str = "auto"  # auto = cuda when available, else cpu
    attention_backend: str = "auto"  # attention kernels: torch, triton, or auto (triton on GPU, torch on CPU)
    enforce_eager: bool = False  # no CUDA graphs
    threads: int | None = None  # CPU threads for the model's math; default: the cores this process may use, minus one for the HTTP server
    tensor_parallel_size: int = 1  # ranks (one process, one GPU each) that split every layer of the model; on the CPU, they share the threads

    def __post_init__(self) -> None:
        _require(re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device) is not None,
                 f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _require(self.threads is None or self.threads >= 1, f"threads must be at least 1, got {self.threads}")
        _require(self.tensor_parallel_size >= 1,
                 f"tensor_parallel_size must be at least 1, got {self.tensor_parallel_size}")

    def resolved_device(self) -> str:
        """The device to run on; DeviceUnavailableError when it is not on this machine."""
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda"):
            _check_cuda(self.device, torch)
        return self.device

    def resolved_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        import os

        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, usable - 1)


def _check_cuda(device: str, torch) -> None:
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"--device {device}: no CUDA device is available on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto"
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) (cuda:0..)"
        )


@dataclass
class SpeculativeConfig:
    """Speculative decoding, with vLLM's `speculative_config` keys: proposals are verified
    in one forward, so the output is that of plain decoding (lossless)."""

    # ngram = proposals looked up in the request's own prompt and output; draft_model = a small
    # model of the same vocabulary proposes them; unset: draft_model if `model` is given, else ngram
    method: str | None = None
    num_speculative_tokens: int = 4  # tokens proposed per request and step (k)
    model: str | None = None  # draft_model: the draft's directory or Hugging Face id
    prompt_lookup_max: int = 4  # ngram: the longest suffix looked up earlier in the request
    prompt_lookup_min: int = 1  # ngram: the shortest
    disable_by_batch_size: int | None = None  # no speculation while more requests than this are running
    backoff_misses: int = 3  # a request that proposed nothing accepted this many steps in a row pauses ...
    backoff_steps: int = 8  # ... for this many steps, doubled at each pause in a row (up to 256)

    def __post_init__(self) -> None:
        if self.method is None:
            self.method = "draft_model" if self.model is not None else "ngram"
        _require(self.method in SPECULATIVE_METHODS,
                 f"speculative_config method must be one of {SPECULATIVE_METHODS}, got {self.method!r}")
        _require(1 <= self.num_speculative_tokens <= 16,
                 f"speculative_config num_speculative_tokens must be in 1..16, got {self.num_speculative_tokens}")
        _require(1 <= self.prompt_lookup_min <= self.prompt_lookup_max <= 16,
                 "speculative_config needs 1 <= prompt_lookup_min <= prompt_lookup_max <= 16, got "
                 f"{self.prompt_lookup_min} and {self.prompt_lookup_max}")
        _require(self.disable_by_batch_size is None or self.disable_by_batch_size >= 1,
                 f"speculative_config disable_by_batch_size must be at least 1, got {self.disable_by_batch_size}")
        _require(self.backoff_misses >= 1, f"speculative_config backoff_misses must be at least 1, got {self.backoff_misses}")
        _require(self.backoff_steps >= 1, f"speculative_config backoff_steps must be at least 1, got {self.backoff_steps}")
        self._check_draft_model()

    def _check_draft_model(self) -> None:
        if self.method != "draft_model":
            _require(self.model is None, f"speculative_config model is the draft model of method draft_model, "
                                         f"not of {self.method!r}")
            return
        _require(bool(self.model), "speculative_config method draft_model needs a model: the draft's directory "
                                   "or Hugging Face id")
        _require(self.num_speculative_tokens <= MAX_DRAFT_MODEL_TOKENS,
                 f"speculative_config num_speculative_tokens must be in 1..{MAX_DRAFT_MODEL_TOKENS} with a draft "
                 f"model, got {self.num_speculative_tokens}")

    @classmethod
    def from_value(cls, value: "SpeculativeConfig | dict | str | None") -> "SpeculativeConfig | None":
        """From a mapping (LLM(speculative_config={...}), YAML) or its JSON text (the CLI flag)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"speculative_config is not valid JSON: {exc}") from None
        _require(isinstance(value, dict), f"speculative_config must be a mapping, got {type(value).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(value) - set(known))
        _require(not unknown, f"speculative_config has unknown key(s) {unknown}; known: {sorted(known)}")
        for key, item in value.items():
            wanted = int if key not in ("method", "model") else str
            ok = isinstance(item, wanted) and not isinstance(item, bool)
            _require(ok or (item is None and key in ("disable_by_batch_size", "method", "model")),
                     f"speculative_config {key} must be {wanted.__name__}, got {item!r}")
        return cls(**value)


@dataclass
class EngineConfig:
    """Everything an engine needs, grouped by concern."""

    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    speculative: SpeculativeConfig | None = None  # off unless given (speculative_config)

    @classmethod
    def from_flat(cls, **kwargs) -> "EngineConfig":
        """Build from flat keyword arguments (vLLM's LLM(...) style, CLI flags, YAML keys)."""
        groups = {"model": ModelConfig, "cache": CacheConfig, "scheduler": SchedulerConfig, "device": DeviceConfig}
        speculative = SpeculativeConfig.from_value(kwargs.pop("speculative_config", None))
        values: dict[str, dict] = {name: {} for name in groups}
        owner = {f.name: name for name, kind in groups.items() for f in fields(kind)}
        for key, value in kwargs.items():
            if key not in owner:
                raise ConfigError(f"unknown engine setting {key!r}")
            values[owner[key]][key] = value
        return cls(**{name: kind(**values[name]) for name, kind in groups.items()}, speculative=speculative)

    @staticmethod
    def setting_names() -> list[str]:
        names = [f.name for kind in (ModelConfig, CacheConfig, SchedulerConfig, DeviceConfig) for f in fields(kind)]
        return names + ["speculative_config"]
