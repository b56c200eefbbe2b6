"""The server sees the engine only through `kvserve.engine`'s public names."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kvserve.engine
import kvserve.server

SERVER_DIR = Path(kvserve.server.__file__).parent


def _engine_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kvserve.engine"):
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("kvserve.engine")]
    return names


def test_the_server_imports_the_engine_package_only():
    deep = {str(p.relative_to(SERVER_DIR)): m for p in SERVER_DIR.rglob("*.py")
            for m in _engine_imports(p) if m != "kvserve.engine"}
    assert deep == {}


def test_the_public_face_names_the_client_types_and_errors():
    for name in ("AsyncLLM", "RequestStream", "ChoiceDelta", "CompletionDelta", "QueueFullError",
                 "RequestTimeoutError", "EngineDeadError", "EngineStartupError"):
        assert name in kvserve.engine.__all__ and hasattr(kvserve.engine, name), name


def test_engine_modules_import_alone_and_the_scheduler_without_torch():
    """Each module imported first in a fresh interpreter: an import cycle would fail here."""
    code = ("import importlib, sys\n"
            "mod = sys.argv[1]\n"
            "importlib.import_module(mod)\n"
            "print('torch' in sys.modules)\n")
    for mod in ("kvserve.engine.scheduler", "kvserve.engine.errors", "kvserve.engine.async_llm",
                "kvserve.engine.core_process", "kvserve.server.app"):
        out = subprocess.run([sys.executable, "-c", code, mod], capture_output=True, text=True, check=True)
        if mod == "kvserve.engine.scheduler":
            assert out.stdout.strip() == "False", "the scheduler pulled in torch"
