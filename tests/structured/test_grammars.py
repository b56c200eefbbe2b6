"""Grammars from schemas, regexes, choices and Lark: what they accept, what they refuse."""

from __future__ import annotations

import json
import time

import pytest
from transformers import AutoTokenizer

from kvserve.structured import grammars
from kvserve.structured.compiler import GrammarCompiler, load_ll_tokenizer
from kvserve.structured.grammars import GrammarError


@pytest.fixture(scope="module")
def compiler(tool_model) -> GrammarCompiler:
    return GrammarCompiler(load_ll_tokenizer(tool_model), cache_size=4)


@pytest.fixture(scope="module")
def hf(tool_model):
    return AutoTokenizer.from_pretrained(tool_model)


def accepts(compiler: GrammarCompiler, hf, grammar: str, text: str) -> bool:
    matcher = compiler.matcher(grammar)
    return matcher.consume_tokens(hf.encode(text)) and matcher.is_accepting()


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0,
          "maximum": 150}, "tags": {"type": "array", "items": {"enum": ["a", "b"]}}},
          "required": ["name", "age"], "additionalProperties": False}


def test_a_json_schema_accepts_valid_documents_and_refuses_others(compiler, hf):
    grammar = grammars.json_schema(SCHEMA)
    assert accepts(compiler, hf, grammar, '{"name": "Bo", "age": 42, "tags": ["a", "b"]}')
    assert accepts(compiler, hf, grammar, '{"name": "Bo", "age": 42}')
    assert not accepts(compiler, hf, grammar, '{"name": "Bo", "age": 151}')  # over the maximum
    assert not accepts(compiler, hf, grammar, '{"name": "Bo"}')  # a required field missing
    assert not accepts(compiler, hf, grammar, '{"name": "Bo", "age": 1, "x": 1}')  # additionalProperties
    assert not accepts(compiler, hf, grammar, '{"name": "Bo", "tags": ["c"], "age": 1}')


def test_json_object_regex_choice_and_lark(compiler, hf):
    assert accepts(compiler, hf, grammars.json_object(), '{"anything": [1, 2]}')
    assert not accepts(compiler, hf, grammars.json_object(), '[1, 2]')
    assert accepts(compiler, hf, grammars.regex(r"\d{3}-[a-z]+"), "123-abc")
    assert not accepts(compiler, hf, grammars.regex(r"\d{3}-[a-z]+"), "12-abc")
    assert accepts(compiler, hf, grammars.choice(["Paris", "Rome"]), "Rome")
    assert not accepts(compiler, hf, grammars.choice(["Paris", "Rome"]), "Berlin")
    assert accepts(compiler, hf, grammars.lark('start: "yes" | "no"'), "no")


@pytest.mark.parametrize("build, value", [
    (grammars.json_schema, {"type": "no-such-type"}),
    (grammars.json_schema, "{not json"),
    (grammars.json_schema, json.dumps([1, 2])),
    (grammars.regex, "a("),
    (grammars.choice, []),
    (grammars.lark, "start: undefined_rule"),
])
def test_invalid_constraints_raise_grammar_error(build, value):
    with pytest.raises(GrammarError):
        build(value)


def test_a_cached_grammar_is_a_copy_not_a_compile(compiler):
    grammar = grammars.json_schema(SCHEMA)
    compiler.matcher(grammar)
    hits = compiler.hits
    begun = time.perf_counter()
    for _ in range(100):
        matcher = compiler.matcher(grammar)
    per_call = (time.perf_counter() - begun) / 100
    assert compiler.hits == hits + 100 and not matcher.is_error()
    assert per_call < 1e-3, f"a cached grammar took {per_call * 1e3:.3f} ms"


def test_the_cache_keeps_the_most_recent_grammars(compiler):
    for i in range(6):
        compiler.matcher(grammars.regex(f"x{{{i + 1}}}"))
    misses = compiler.misses
    compiler.matcher(grammars.regex("x{6}"))
    compiler.matcher(grammars.regex("x{1}"))  # evicted (cache_size 4)
    assert compiler.misses == misses + 1
