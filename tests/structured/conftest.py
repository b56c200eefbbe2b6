"""The tool-format tiny model (tests/server/tool_models.py), for its tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.tool_models import build_tool_model


@pytest.fixture(scope="session")
def tool_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tool_model(tmp_path_factory.mktemp("tool-model"))
