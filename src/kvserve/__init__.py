"""kvserve: LLM inference engine, OpenAI-compatible server and gateway."""

__version__ = "0.1.0"

_LAZY = {
    "LLM": "kvserve.entrypoints.llm",
    "SamplingParams": "kvserve.sampling_params",
    "RequestOutput": "kvserve.outputs",
    "CompletionOutput": "kvserve.outputs",
}


def __getattr__(name: str):
    # lazy, so that `import kvserve.gateway` does not pull in torch
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kvserve' has no attribute {name!r}")


__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "__version__"]
