"""Tool calling: the call formats of the model families we serve, picked by name or template."""

from __future__ import annotations

from kvserve.server.tools.call_format import HERMES, LLAMA3_JSON, CallFormat

# --tool-call-parser name -> format
CALL_FORMATS: dict[str, CallFormat] = {"hermes": HERMES, "llama3_json": LLAMA3_JSON}
# a marker in the chat template -> the family's format (first match wins; else Hermes)
TEMPLATE_MARKERS: dict[str, CallFormat] = {"<tool_call>": HERMES, "<|python_tag|>": LLAMA3_JSON,
                                           "<|start_header_id|>": LLAMA3_JSON}


def pick_format(name: str | None, chat_template: str | None) -> CallFormat:
    """The format named by --tool-call-parser, else the one the chat template speaks."""
    if name is not None:
        return CALL_FORMATS[name]
    template = chat_template or ""
    return next((fmt for marker, fmt in TEMPLATE_MARKERS.items() if marker in template), HERMES)
