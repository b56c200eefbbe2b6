import pytest

from kvserve import LLM, SamplingParams


@pytest.mark.slow
def test_embedded_default_model_knows_the_capital_of_france():
    llm = LLM()  # no model: the embedded SmolLM2-135M-Instruct, converted once and cached
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0, max_tokens=30))
    completion = out[0].outputs[0]
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"  # ended on the model's own end-of-turn token
