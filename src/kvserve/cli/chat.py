"""`kvserve chat`: a conversation in the terminal, answers streamed as they are generated.

Against the embedded model (default), a model directory or id (`--model`), or a running
server (`--url`). Lines starting with `/` are commands (/help lists them); Ctrl-C stops
the answer being written, not the program; /exit or Ctrl-D leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable

from kvserve.cli.chat_backends import AnswerOptions, ChatBackend

HELP = """commands:
  /reset         forget the conversation (the system prompt stays)
  /system TEXT   set the system prompt (and forget the conversation); /system alone removes it
  /exit          leave (Ctrl-D too); Ctrl-C stops the answer being written"""
STOPPED = " [stopped]"


class Conversation:
    """The messages so far, with an optional system prompt in front."""

    def __init__(self, system: str | None = None) -> None:
        self.system = system
        self.turns: list[dict] = []

    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def reset(self) -> None:
        self.turns = []


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "chat", help="chat with a model in the terminal",
        description="Chat in the terminal, answers streamed. Without --model or --url, with the embedded "
                    "SmolLM2-135M-Instruct. " + HELP.replace("\n", " "))
    p.add_argument("--url", default=None,
                   help="chat with a running server instead (e.g. http://127.0.0.1:8000); --model then names "
                        "the served model (default: the first it lists)")
    p.add_argument("--api-key", default=None, help="bearer token for --url")
    p.add_argument("--system", default=None, help="system prompt at the start")
    p.add_argument("--max-tokens", type=int, default=512, help="longest answer, in tokens (default: 512)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: the model's recommended one; 0 = greedy)")
    from kvserve.cli.engine_args import add_engine_args

    add_engine_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        backend = _backend(args)
    except Exception as exc:  # noqa: BLE001 - a start-up failure is one line, not a traceback
        print(f"kvserve chat: error: {exc}", file=sys.stderr)
        return 1
    print(f"chatting with {backend.name}; /help for commands, /exit or Ctrl-D to leave", flush=True)
    options = AnswerOptions(max_tokens=args.max_tokens, temperature=args.temperature)
    return chat_loop(backend, Conversation(args.system), options, input)


def _backend(args: argparse.Namespace) -> ChatBackend:
    from kvserve.cli.chat_backends import LocalChat, RemoteChat

    if args.url:
        return RemoteChat(args.url, getattr(args, "model", None), args.api_key)
    from kvserve.cli.engine_args import engine_config_from_args

    return LocalChat(engine_config_from_args(args))


def chat_loop(backend: ChatBackend, conversation: Conversation, options: AnswerOptions,
              read: Callable[[str], str]) -> int:
    """Read a line, answer it, until /exit or end of input; returns the exit code."""
    while True:
        try:
            line = read(">>> ").strip()
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print("\n(/exit or Ctrl-D to leave)", flush=True)
            continue
        if not line:
            continue
        if line.startswith("/"):
            if not command(line, conversation):
                return 0
            continue
        conversation.turns.append({"role": "user", "content": line})
        conversation.turns.append({"role": "assistant", "content": answer(backend, conversation, options)})


def command(line: str, conversation: Conversation) -> bool:
    """Apply a /command; False when it is time to leave."""
    name, _, rest = line.partition(" ")
    if name in ("/exit", "/quit", "/bye"):
        return False
    if name == "/reset":
        conversation.reset()
        print("(conversation forgotten)", flush=True)
    elif name == "/system":
        conversation.system = rest.strip() or None
        conversation.reset()
        print(f"(system prompt {'set' if conversation.system else 'removed'}; conversation forgotten)", flush=True)
    elif name == "/help":
        print(HELP, flush=True)
    else:
        print(f"(unknown command {name}; /help lists them)", flush=True)
    return True


def answer(backend: ChatBackend, conversation: Conversation, options: AnswerOptions) -> str:
    """Stream the answer to the terminal; Ctrl-C ends it early (what was written is kept).

    Ctrl-C only raises a flag, read between two pieces, so that the engine is never cut
    off in the middle of a step; a second Ctrl-C interrupts at once.
    """
    pieces: list[str] = []
    stream = backend.stream(conversation.messages(), options)
    try:
        with _ctrl_c_flag() as stopped:
            for piece in stream:
                pieces.append(piece)
                print(piece, end="", flush=True)
                if stopped.is_set():
                    print(STOPPED, end="")
                    break
    except KeyboardInterrupt:
        print(STOPPED, end="")
    except Exception as exc:  # noqa: BLE001 - a failed answer (server gone, API error) ends the turn, not the chat
        print(f"\n(error: {exc})", end="")
    finally:
        stream.close()
    print(flush=True)
    return "".join(pieces)


@contextlib.contextmanager
def _ctrl_c_flag():
    stopped = threading.Event()

    def on_sigint(*_) -> None:
        if stopped.is_set():
            raise KeyboardInterrupt
        stopped.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)
