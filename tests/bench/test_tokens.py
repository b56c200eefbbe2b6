"""Token counters: local tokenizer.json, word estimate, and which one is picked."""

from __future__ import annotations

import pytest

from kvserve.bench.tokens import LocalTokenizer, WordCounter, pick_counter
from tests.helpers import free_port

TEXT = "Paged attention stores keys and values in blocks of sixteen tokens. Größe 東京"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from tests.conftest import build_tokenizer

    path = tmp_path_factory.mktemp("tok")
    return path, build_tokenizer(path)


def test_local_tokenizer_counts_like_transformers(tokenizer_dir):
    path, hf = tokenizer_dir
    assert LocalTokenizer(path).count(TEXT) == len(hf(TEXT, add_special_tokens=False)["input_ids"]) > 10


def test_local_tokenizer_needs_a_tokenizer_json(tmp_path):
    with pytest.raises(FileNotFoundError):
        LocalTokenizer(tmp_path)


def test_word_counter_counts_words():
    assert WordCounter().count("  one two\nthree ") == 3


def test_local_tokenizer_wins_when_given(tokenizer_dir):
    assert isinstance(pick_counter(str(tokenizer_dir[0]), "http://127.0.0.1:1", "m", {}), LocalTokenizer)


def test_words_when_the_server_has_no_tokenize_endpoint(fake_upstream):
    assert isinstance(pick_counter(None, fake_upstream(), "m", {}), WordCounter)
    assert isinstance(pick_counter(None, f"http://127.0.0.1:{free_port()}", "m", {}), WordCounter)
