"""`kvserve bench offline` on the CPU: `--compare-hf` runs transformers on the same requests and
weights in the same process and reports real counts; steps are timed in the phase they belong to."""

from __future__ import annotations

import json

import pytest

from kvserve.cli.main import main

pytest.importorskip("transformers.generation.continuous_batching")

TINY_SHAPE = {  # a Qwen3 small enough for transformers' continuous batching on 2 cores
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 512, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "head_dim": 32, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "tie_word_embeddings": True, "torch_dtype": "float32", "eos_token_id": 2,
}


def _run(tmp_path, *flags: str) -> dict:
    shape = tmp_path / "config.json"
    shape.write_text(json.dumps(TINY_SHAPE))
    out = tmp_path / "r.json"
    assert main(["bench", "offline", "--arch", str(shape), "--workload", "smoke", "--max-model-len", "256",
                 "--no-warmup", "--no-progress", "--compare-hf", "--output-json", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_generate_batch_runs_every_request_to_its_own_length(tmp_path, capsys):
    report = _run(tmp_path, "--hf-time-limit", "120")
    peer = report["hf"]["generate_batch"]
    assert peer["requests_finished"] == peer["requests"] == 8
    assert peer["output_tokens"] == report["engine"]["output_tokens"]  # each request's own max_tokens
    assert peer["output_tok_s"] == pytest.approx(peer["output_tokens"] / peer["elapsed_s"])
    assert "hf generate_batch" in capsys.readouterr().out


def test_hf_time_limit_must_be_positive(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "offline", "--arch", "qwen3-0.6b", "--workload", "smoke", "--compare-hf", "--hf-time-limit", "0"])
    assert "positive number of seconds" in capsys.readouterr().err


def test_overlapped_steps_are_timed_where_their_wait_belongs():
    from kvserve.bench.offline import phase_summary

    # one 8k prefill launched (20 ms), then a call that launched nothing and waited 205 ms for it
    log = [(8192, 1, 0.020), (0, 0, 0.205)]
    assert phase_summary(log, overlapped=True) == {"prefill": {"steps": 1, "seconds": pytest.approx(0.225), "tokens": 8192},
                                                   "decode": {"steps": 0, "seconds": 0.0, "tokens": 0}}
    # two decode steps after a prefill: each call's seconds belong to the step launched before it
    log = [(100, 2, 0.001), (2, 2, 0.050), (2, 2, 0.007), (0, 0, 0.007)]
    phases = phase_summary(log, overlapped=True)
    assert phases["prefill"] == {"steps": 1, "seconds": pytest.approx(0.051), "tokens": 100}
    assert phases["decode"]["steps"] == 2 and phases["decode"]["seconds"] == pytest.approx(0.014)
    assert phase_summary(log, overlapped=False)["prefill"]["seconds"] == 0.001
