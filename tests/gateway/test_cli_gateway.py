"""`kvserve gateway` is registered with the CLI and imports no torch."""

from __future__ import annotations

import subprocess
import sys


def test_help_lists_the_flags_without_importing_torch():
    code = ("import sys; from kvserve.cli.main import main\n"
            "try:\n    main(['gateway', '--help'])\nexcept SystemExit:\n    pass\n"
            "import kvserve.gateway.server, kvserve.gateway.app\n"
            "print('torch' in sys.modules, 'kvserve.engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "--config" in out and "--port" in out and "--host" in out
    assert out.strip().endswith("False False")


def test_config_is_required():
    result = subprocess.run([sys.executable, "-m", "kvserve.cli.main", "gateway"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "--config" in result.stderr
