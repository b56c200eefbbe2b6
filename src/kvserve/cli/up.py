"""`kvserve up -f stack.yaml`, `kvserve up status`, `kvserve down`: a whole stack on one machine.

`up` runs in the foreground (Ctrl-C or `kvserve down` stops it) and keeps its run
directory current; `status` and `down` find the running stack through that directory's
state.json, so they take the same `-f stack.yaml`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

EXIT_NOT_RUNNING = 3  # `kvserve up status` of a stack that is not running (as `systemctl status` does)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    if "up" in subparsers.choices:  # main.py lists both names for this module
        return
    up = subparsers.add_parser("up", help="run a model's replicas, the gateway and helpers, autoscaled",
                               description="Start the stack described by stack.yaml (see docs/deploy.md) and "
                                           "supervise it; `kvserve up status` shows it, `kvserve down` stops it.")
    up.add_argument("action", nargs="?", choices=["status"], help="status: show the running stack and exit")
    _file_flag(up)
    up.add_argument("--json", action="store_true", help="status: print state.json as it is")
    up.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    up.set_defaults(func=run_up)
    down = subparsers.add_parser("down", help="stop a stack started with `kvserve up`",
                                 description="SIGTERM the stack (gateway, replicas, helpers, in that order); "
                                             "what has not stopped after stop_grace_s is killed.")
    _file_flag(down)
    down.set_defaults(func=run_down)


def _file_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", default="stack.yaml", help="the stack file (default: ./stack.yaml)")


def _load(path: str) -> Any:
    from kvserve.control.stack_config import StackConfigError, load_stack

    try:
        return load_stack(path)
    except StackConfigError as exc:
        print(f"kvserve up: {exc}", file=sys.stderr)
        return None


def run_up(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return 2
    from kvserve.control.stack_files import StackFiles

    files = StackFiles(config.run_dir)
    if args.action == "status":
        return show_status(files.read_state(), args.json)
    running = running_pid(files.read_state())
    if running is not None:
        print(f"kvserve up: the stack of {args.file} already runs (pid {running}); `kvserve down` first",
              file=sys.stderr)
        return 1
    return serve_stack(config, args.log_level)


def serve_stack(config: Any, log_level: str) -> int:
    from kvserve.control.stack import Stack, StackError
    from kvserve.gateway.config import ConfigError

    config.run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(config.run_dir / "up.log")])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per metrics read would drown the decisions
    stack = Stack(config)
    signal.signal(signal.SIGTERM, lambda *_: stack.request_stop())
    signal.signal(signal.SIGINT, lambda *_: stack.request_stop())
    try:
        stack.start()
    except ConfigError as exc:
        print(f"kvserve up: {exc}", file=sys.stderr)
        return 2
    except (StackError, OSError) as exc:
        print(f"kvserve up: {exc}", file=sys.stderr)
        stack.shutdown()
        return 1
    print(f"kvserve up: {config.model.name} at {stack.gateway_url}/v1 (run directory {config.run_dir})",
          file=sys.stderr, flush=True)
    stack.run()
    return 0


def running_pid(state: dict[str, Any] | None) -> int | None:
    """The launcher's pid when state.json names one that still runs."""
    from kvserve.control.supervisor import alive

    if not state or state.get("status") == "stopped" or not isinstance(state.get("pid"), int):
        return None
    return state["pid"] if alive(state["pid"]) else None


def show_status(state: dict[str, Any] | None, as_json: bool) -> int:
    pid = running_pid(state)
    if as_json:
        print(json.dumps(state, indent=1))
        return 0 if pid is not None else EXIT_NOT_RUNNING
    if state is None or pid is None:
        print("stack: not running")
        return EXIT_NOT_RUNNING
    replicas = state["replicas"]
    print(f"stack: running (pid {pid}), model {state['model']} at {state['gateway']}/v1")
    print(f"replicas: {replicas['ready']} ready of {replicas['wanted']} wanted "
          f"(min {replicas['min']}, max {replicas['max']}, autoscale {'on' if state['autoscale'] else 'off'})")
    print(f"{'NAME':<12} {'ROLE':<11} {'PID':>7}  {'STATE':<11} {'RESTARTS':>8}  URL")
    for p in state["processes"]:
        print(f"{p['name']:<12} {p['role']:<11} {p['pid'] or '-':>7}  {p['state']:<11} {p['restarts']:>8}  "
              f"{p['url'] or ''}")
    decision = state.get("last_decision")
    if decision:
        inputs = " ".join(f"{k}={v:g}" for k, v in decision["inputs"].items())
        print(f"last decision ({decision['age_s']:g} s before {state['updated']}): {decision['current']} -> "
              f"{decision['desired']}, {decision['reason']}; {inputs}")
    return 0


def run_down(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if config is None:
        return 2
    from kvserve.control.stack_files import StackFiles

    state = StackFiles(config.run_dir).read_state()
    pid = running_pid(state)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        if _wait_gone([pid], config.stop_grace_s * 3 + 15):  # three groups stop in turn
            print("kvserve down: stopped")
            return 0
        os.kill(pid, signal.SIGKILL)
    leftovers = _children(state)
    if not leftovers and pid is None:
        print("kvserve down: not running")
        return 0
    for child in leftovers:  # the launcher is gone (killed): stop what it left behind
        _signal(child, signal.SIGTERM)
    if not _wait_gone(leftovers, config.stop_grace_s):
        for child in leftovers:
            _signal(child, signal.SIGKILL)
    print("kvserve down: stopped" + (f" ({len(leftovers)} processes left by the launcher)" if leftovers else ""))
    return 0


def _children(state: dict[str, Any] | None) -> list[int]:
    """Pids in state.json that still run the program recorded for them (not a reused pid)."""
    from kvserve.control.supervisor import alive

    found = []
    for p in (state or {}).get("processes", []):
        pid = p.get("pid")
        if isinstance(pid, int) and alive(pid) and _runs(pid, str(p.get("argv0", ""))):
            found.append(pid)
    return found


def _runs(pid: int, argv0: str) -> bool:
    try:
        first = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return True  # no /proc here: trust the pid
    return Path(first).name == Path(argv0).name


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pids: list[int], timeout_s: float) -> bool:
    from kvserve.control.supervisor import alive

    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
