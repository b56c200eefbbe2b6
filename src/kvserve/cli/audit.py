"""`kvserve audit verify FILE`: check a gateway audit log's hash chain.

Exit status 0 when every line is intact and in order; 1 with one line per problem
(the line number and what is wrong) when a line was edited, deleted or reordered.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvserve.gateway.audit import GENESIS, verify


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("audit", help="check the gateway's audit log",
                                   description="Check a gateway audit log (audit.path) for edited, deleted or "
                                               "reordered lines.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check every line's hash and the chain between lines")
    verify.add_argument("file", type=Path, help="the audit log (JSON lines)")
    verify.add_argument("--after", default=None, metavar="HASH",
                        help="the hash of the line before the file's first (a log that continues a rotated one)")
    verify.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    try:
        with args.file.open("rb") as f:
            count, problems = verify(f, args.after or GENESIS)
    except OSError as exc:
        print(f"{args.file}: cannot read ({exc.strerror})", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"{args.file}:{problem.line}: {problem.reason}")
    if problems:
        print(f"{args.file}: {len(problems)} problem(s) in {count} lines", file=sys.stderr)
        return 1
    print(f"{args.file}: {count} lines, chain intact")
    return 0
