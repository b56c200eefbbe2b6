"""Tokenizer loading and chat templates."""

from __future__ import annotations

import pytest

from kvserve.tokenizer import TokenizerError, apply_chat_template, load_tokenizer

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world!"}]


def test_chat_template_gives_token_ids_of_the_rendered_prompt(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    ids = apply_chat_template(tokenizer, MESSAGES)
    assert isinstance(ids, list) and all(type(i) is int for i in ids)
    text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello world!<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(ids) == text
    without_prompt = apply_chat_template(tokenizer, MESSAGES, add_generation_prompt=False)
    assert tokenizer.decode(without_prompt) == text.removesuffix("<|im_start|>assistant\n")


def test_missing_chat_template_is_a_clear_error(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    tokenizer.chat_template = None
    with pytest.raises(TokenizerError, match="has no chat template"):
        apply_chat_template(tokenizer, MESSAGES)


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(TokenizerError, match="cannot load a tokenizer from"):
        load_tokenizer(tmp_path)
