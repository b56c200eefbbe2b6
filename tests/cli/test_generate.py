import subprocess
import sys

from kvserve import LLM, SamplingParams


def kvserve(*args):
    return subprocess.run([sys.executable, "-m", "kvserve.cli.main", *args], capture_output=True, text=True, timeout=300)


def test_generate_prints_the_same_text_as_the_offline_api(tiny_llama):
    expected = LLM(model=str(tiny_llama), kv_cache_gib=0.01).generate(
        ["The capital of France is"], SamplingParams(temperature=0, max_tokens=12))[0].outputs[0].text
    result = kvserve("generate", "--model", str(tiny_llama), "--kv-cache-gib", "0.01", "--no-chat",
                     "--max-tokens", "12", "The capital of France is")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


def test_generate_bad_settings_are_one_clear_line(tiny_llama, tmp_path):
    result = kvserve("generate", "--model", str(tmp_path / "missing"), "hi")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = kvserve("generate", "--model", str(tiny_llama), "--max-model-len", "64", "--num-gpu-blocks-override", "2", "hi")
    assert result.returncode == 2 and "lower --max-model-len to at most 32" in result.stderr
