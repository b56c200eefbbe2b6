"""`kvserve` command line: each subcommand lives in its own module with register(subparsers)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys

# subcommand -> module defining register(subparsers) that adds it (imported lazily, so
# `kvserve gateway` never imports torch and `kvserve --help` stays fast)
COMMANDS: dict[str, str] = {
    "generate": "kvserve.cli.generate",
    "serve": "kvserve.cli.serve",
    "chat": "kvserve.cli.chat",
    "gateway": "kvserve.cli.gateway",
    "bench": "kvserve.cli.bench",
    "keys": "kvserve.cli.keys",
    "models": "kvserve.cli.models",
    "up": "kvserve.cli.up", "down": "kvserve.cli.up",  # one module registers both
    "rollout": "kvserve.cli.rollout",
    "audit": "kvserve.cli.audit",
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
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        reject_unknown(parser, argv, unknown)  # exits 2
    if args.version:
        from kvserve import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


def reject_unknown(parser: argparse.ArgumentParser, argv: list[str], unknown: list[str]) -> None:
    """Exit 2 with the usage of the subcommand the arguments were for (not the top level's)
    and, for a mistyped flag, the closest one it has."""
    command = innermost_parser(parser, argv)
    flags = [flag for action in command._actions for flag in action.option_strings if flag.startswith("--")]
    message = f"unrecognized arguments: {' '.join(unknown)}"
    first = next((arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")), None)
    close = difflib.get_close_matches(first, flags, n=1, cutoff=0.6) if first else []
    if close:
        message += f" (did you mean {close[0]}?)"
    command.error(message)


def innermost_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The parser of the deepest subcommand named in argv (`kvserve bench serve ...` -> bench serve's)."""
    for token in argv:
        subparsers = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if subparsers is None:
            break
        parser = subparsers.choices.get(token, parser)
    return parser


if __name__ == "__main__":
    sys.exit(main())
