"""`kvserve` command line: each subcommand lives in its own module with register(subparsers)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> module defining register(subparsers) that adds it (imported lazily, so
# `kvserve gateway` never imports torch and `kvserve --help` stays fast)
COMMANDS: dict[str, str] = {
    "generate": "kvserve.cli.generate",
    "serve": "kvserve.cli.serve",
    "gateway": "kvserve.cli.gateway",
    "bench": "kvserve.cli.bench",
    "keys": "kvserve.cli.keys",
    "models": "kvserve.cli.models",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvserve", description="LLM inference engine, server and gateway")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [a for a in argv[:1] if a in COMMANDS] or list(COMMANDS)
    for name in wanted:
        try:
            module = importlib.import_module(COMMANDS[name])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("kvserve.cli"):
                continue  # subcommand not built in this version
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from kvserve import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
