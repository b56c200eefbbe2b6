"""Request body → SamplingParams, and the context-length check (400 that says the numbers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvserve.sampling_params import SamplingParams
from kvserve.openai_error import OpenAIError
from kvserve.server.errors import bad_request
from kvserve.server.protocol import SamplingFields


def check_context(prompt_len: int, max_tokens: int | None, max_model_len: int, what: str) -> None:
    """Refuse a prompt that, with the tokens asked for (at least one), overflows the context."""
    wanted = max_tokens if max_tokens is not None else 1
    if prompt_len + wanted <= max_model_len:
        return
    raise bad_request(
        f"This model's maximum context length is {max_model_len} tokens. However, you requested "
        f"{prompt_len + wanted} tokens ({prompt_len} in the {what}, {wanted} in the completion). "
        f"Please reduce the length of the {what} or completion.",
        param="messages" if what == "messages" else "prompt",
        code="context_length_exceeded",
    )


def check_token_ids(token_ids: list[int], vocab_size: int, param: str) -> None:
    """Refuse an id the model has no embedding for (negative, huge or past the vocabulary)."""
    bad = next((t for t in token_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise bad_request(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})", param, "invalid_value")


def to_sampling_params(body: SamplingFields, max_tokens: int | None, logprobs: int | None,
                       defaults: Mapping[str, Any] | None = None) -> SamplingParams:
    """The engine's parameters for a validated body; a cross-field conflict is a 400.

    `defaults` (kvserve.sampling_defaults) fill the sampling fields the body leaves out.
    """
    chosen = _with_defaults(body, defaults or {})
    top_p, top_k = chosen["top_p"], chosen["top_k"]
    if top_p == 0.0:  # OpenAI allows 0: only the most likely token survives
        top_p, top_k = 1.0, 1
    try:
        return SamplingParams(
            n=body.n,
            max_tokens=max_tokens,
            min_tokens=body.min_tokens,
            temperature=chosen["temperature"],
            top_p=top_p,
            top_k=top_k,
            min_p=chosen["min_p"],
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            repetition_penalty=chosen["repetition_penalty"],
            seed=body.seed,
            stop=body.stop_list(),
            stop_token_ids=body.stop_token_ids,
            ignore_eos=body.ignore_eos,
            logprobs=logprobs,
            include_stop_str_in_output=body.include_stop_str_in_output,
            skip_special_tokens=body.skip_special_tokens,
        )
    except ValueError as exc:
        raise _param_error(exc) from None


# sampling field -> its value when neither the body nor the defaults give one
_NEUTRAL = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


def _with_defaults(body: SamplingFields, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Each sampling field from the body if it gave one (null counts as not given), else
    from the defaults, else neutral."""
    chosen = {}
    for name, neutral in _NEUTRAL.items():
        given = getattr(body, name) if name in body.model_fields_set else None
        chosen[name] = given if given is not None else defaults.get(name, neutral)
    return chosen


def _param_error(exc: ValueError) -> OpenAIError:
    message = str(exc)  # SamplingParams names the field first: "min_tokens must not exceed ..."
    return bad_request(message, param=message.split(" ", 1)[0], code="invalid_value")
