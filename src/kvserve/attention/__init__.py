"""Attention backends, picked by name from BACKENDS."""

from kvserve.attention.backend import AttentionBackend, AttentionMetadata
from kvserve.attention.torch_backend import TorchAttentionBackend
from kvserve.attention.triton_backend import TritonAttentionBackend, triton_available

BACKENDS: dict[str, type] = {
    "torch": TorchAttentionBackend,
    "triton": TritonAttentionBackend,
}


def get_backend(name: str, device: str) -> AttentionBackend:
    if name == "auto":
        name = "triton" if str(device).startswith("cuda") and triton_available() else "torch"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose from {sorted(BACKENDS)}")
    return BACKENDS[name]()


__all__ = ["AttentionBackend", "AttentionMetadata", "BACKENDS", "get_backend"]
