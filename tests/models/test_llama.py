"""Our paged Llama-family model against Hugging Face transformers on the same weights."""

from __future__ import annotations

import pytest
import torch

from .paged import PagedSession, hf_greedy, hf_logits, hf_model

PROMPTS = {
    0: "The capital of France is Paris.",
    1: "Hello world! How are you today? I am fine, thank you. Paged attention stores keys.",
    2: "def add(a, b):",
}
ATOL = 1e-4


def encode_prompts(model_dir) -> dict[int, list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return {seq: tokenizer.encode(text) for seq, text in PROMPTS.items()}


def assert_prefill_then_decode_match(model_dir, dtype=torch.float32, device="cpu", atol=ATOL, rtol=0.0) -> None:
    """Batched prefill of prompts of different lengths, then one batched decode step."""
    prompts = encode_prompts(model_dir)
    assert len({len(p) for p in prompts.values()}) == len(prompts)
    ours = PagedSession(model_dir, dtype=dtype, device=device)
    reference = hf_model(model_dir, dtype=dtype, device=device)

    prefill = ours.step(prompts)
    for (seq, tokens), logits in zip(prompts.items(), prefill):
        assert logits.dtype == torch.float32
        torch.testing.assert_close(logits, hf_logits(reference, tokens), atol=atol, rtol=rtol)

    next_tokens = {seq: [int(logits[-1].argmax())] for seq, logits in zip(prompts, prefill)}
    decode = ours.step(next_tokens)
    for seq, logits in zip(prompts, decode):
        assert logits.shape[0] == 1
        expected = hf_logits(reference, prompts[seq] + next_tokens[seq])[-1:]
        torch.testing.assert_close(logits, expected, atol=atol, rtol=rtol)


def test_prefill_and_decode_match_transformers(tiny_model):
    assert_prefill_then_decode_match(tiny_model)


def test_llama3_rope_scaling_matches_transformers(tiny_llama3_rope):
    # Positions past original_max_position_embeddings (64) reach the scaled band.
    ours, reference = PagedSession(tiny_llama3_rope), hf_model(tiny_llama3_rope)
    tokens = (torch.arange(90) % 300 + 3).tolist()
    (logits,) = ours.step({0: tokens})
    torch.testing.assert_close(logits, hf_logits(reference, tokens), atol=ATOL, rtol=0)
    assert_prefill_then_decode_match(tiny_llama3_rope)


def test_greedy_generation_matches_token_for_token(tiny_model):
    prompts = encode_prompts(tiny_model)
    ours, reference = PagedSession(tiny_model), hf_model(tiny_model)
    generated = {seq: [] for seq in prompts}
    pending = prompts
    for _ in range(8):
        logits = ours.step(pending)
        pending = {seq: [int(rows[-1].argmax())] for seq, rows in zip(prompts, logits)}
        for seq, token in pending.items():
            generated[seq] += token
    for seq, prompt in prompts.items():
        assert generated[seq] == hf_greedy(reference, prompt, 8)


def test_mistral_and_biased_llama_variants(tmp_path):
    """MistralForCausalLM checkpoints, and Llama with attention_bias, mlp_bias and head_dim."""
    from tests.conftest import build_model

    mistral = tmp_path / "mistral"
    build_model("llama", mistral)
    config = (mistral / "config.json").read_text()
    (mistral / "config.json").write_text(
        config.replace('"LlamaForCausalLM"', '"MistralForCausalLM"').replace('"llama"', '"mistral"')
    )
    assert_prefill_then_decode_match(mistral)

    biased = build_model("llama", tmp_path / "biased", attention_bias=True, mlp_bias=True, head_dim=24)
    assert_prefill_then_decode_match(biased)


def test_bfloat16_close_to_transformers(tiny_llama):
    assert_prefill_then_decode_match(tiny_llama, torch.bfloat16, atol=0.05, rtol=0.02)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_transformers(tiny_model, tiny_llama3_rope):
    torch.backends.cuda.matmul.allow_tf32 = False
    for model_dir in (tiny_model, tiny_llama3_rope):
        assert_prefill_then_decode_match(model_dir, device="cuda", atol=1e-3)
        assert_prefill_then_decode_match(model_dir, torch.bfloat16, device="cuda", atol=0.05, rtol=0.02)
