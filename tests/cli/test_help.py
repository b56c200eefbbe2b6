"""Every flag of the commands says what it does, in words a user knows."""

from __future__ import annotations

import argparse

import pytest

from kvserve.cli.main import build_parser

INTERNALS = ("QueueFullError", "BACKENDS", "kvserve.", "None =")


def _parser(*path: str) -> argparse.ArgumentParser:
    parser = build_parser([path[0]])
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _offline_parser() -> argparse.ArgumentParser:
    from kvserve.bench.offline import register

    root = argparse.ArgumentParser()
    register(root.add_subparsers())
    return next(a for a in root._actions if isinstance(a, argparse._SubParsersAction)).choices["offline"]


@pytest.mark.parametrize("path", [("serve",), ("generate",), ("chat",), ("bench", "serve"), ("bench", "sweep"),
                                  ("bench", "offline"), ("keys", "create")])
def test_every_flag_has_a_help_that_explains_it(path):
    parser = _offline_parser() if path == ("bench", "offline") else _parser(*path)
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        flag = action.option_strings[-1]
        text = (action.help or "").split(" (default", 1)[0].strip()
        words = text.lower().replace("-", " ").split()
        assert len(words) >= 2, f"{' '.join(path)} {flag}: help {action.help!r} says nothing"
        assert words != flag.lstrip("-").lower().split("-"), f"{flag}: help repeats the flag's name"
        assert not any(word in (action.help or "") for word in INTERNALS), f"{flag}: {action.help!r}"
