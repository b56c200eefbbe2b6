"""`kvserve bench quality` end to end on a tiny model: the reference against itself is exact,
int8 stays close, a bad method is a usage error."""

from __future__ import annotations

import json
import subprocess

from tests.helpers import kvserve


def test_quality_compares_formats_against_the_first(tiny_llama, tmp_path):
    out = tmp_path / "quality.json"
    done = subprocess.run(kvserve("bench", "quality", "--model", str(tiny_llama), "--methods", "none,none,int8",
                                  "--max-tokens", "8", "--output-json", str(out)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    reference, again, int8 = report["results"]
    assert report["reference"] == "none" and report["text_tokens"] > 500 and report["prompts"] == 16
    assert again["perplexity"] == reference["perplexity"] and again["perplexity_change_pct"] == 0
    assert again["logits_cosine_min"] > 0.99999 and again["greedy_identical"] == 1.0
    assert int8["method"] == "int8" and abs(int8["perplexity_change_pct"]) < 5 and int8["logits_cosine_mean"] > 0.99
    assert int8["greedy_token_agreement"] <= 1.0 and "int8" in done.stdout


def test_unknown_method_is_a_usage_error(tiny_llama):
    done = subprocess.run(kvserve("bench", "quality", "--model", str(tiny_llama), "--methods", "none,int3"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "int3" in done.stderr


def test_kv_cache_dtype_applies_to_every_method_but_the_reference(tiny_llama, tmp_path):
    out = tmp_path / "quality.json"
    done = subprocess.run(kvserve("bench", "quality", "--model", str(tiny_llama), "--methods",
                                  "none:float32,none:float32", "--kv-cache-dtype", "fp8", "--max-tokens", "4",
                                  "--output-json", str(out)),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    reference, fp8 = report["results"]
    assert report["kv_cache_dtype"] == "fp8" and reference["method"] == "none:float32"
    assert fp8["method"] == "none:float32 kv fp8" and "kv fp8" in done.stdout
    assert 0 < abs(fp8["perplexity_change_pct"]) < 5 and 0.99 < fp8["logits_cosine_mean"] < 1
