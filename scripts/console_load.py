"""Console page load time on loopback: a fake replica and a gateway (subprocesses), then
Debian's Chromium (Playwright) loads /console/ in fresh browser contexts and reads the
navigation timing (loadEventEnd). Prints every load and the median of all but the first two.

    python3 scripts/console_load.py [--loads 12]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers import ServerProcess, answers, free_port, kvserve  # noqa: E402  (the tests' process helpers)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--loads", type=int, default=12)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    replica = ServerProcess([sys.executable, "-m", "kvserve.bench.fake_upstream", "--port", str(port)], port,
                            tmp / "replica.log").start("/v1/models", ready=answers)
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({"models": {"fake": {"pool": {"endpoints": [replica.url]}}}}))
    port = free_port()
    gateway = ServerProcess(kvserve("gateway", "--config", str(config), "--port", str(port)), port,
                            tmp / "gateway.log").start("/health", ready=answers)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            loads = []
            for _ in range(args.loads):
                context = browser.new_context()
                page = context.new_page()
                page.goto(gateway.url + "/console/")
                page.wait_for_load_state("load")
                loads.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
                context.close()
            browser.close()
    finally:
        gateway.stop()
        replica.stop()
    print("loadEventEnd ms:", [round(x) for x in loads])
    print(f"median of loads 3..{args.loads}: {statistics.median(loads[2:]):.0f} ms")


if __name__ == "__main__":
    main()
