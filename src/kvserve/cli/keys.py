"""`kvserve keys create|list|revoke|show`: the gateway's API keys.

Keys live in the gateway's key store: a YAML file (`--file`) or Redis (`--redis URL`),
or whichever one a gateway config names (`--config gateway.yaml`). Only hashes are
stored; `create` prints the key once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

LIMIT_FLAGS = {  # flag -> (KeyLimits field, what the limit does); unset = no limit
    "rpm": ("requests_per_minute", "requests this key may send per minute"),
    "tpm": ("tokens_per_minute", "tokens per minute: prompt + max_tokens estimated at admission, real usage after"),
    "concurrency": ("concurrency", "requests this key may have open at once"),
    "max_tokens": ("max_tokens", "largest max_tokens a request may ask for (also the value a request without one gets)"),
    "daily_tokens": ("daily_tokens", "tokens this key may use per UTC day"),
    "max_prompt_tokens": ("max_prompt_tokens", "longest prompt a request may send, in estimated tokens"),
    "max_messages": ("max_messages", "most messages one chat request may carry"),
    "max_body_bytes": ("max_body_bytes", "largest request body, in bytes"),
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("keys", help="manage the gateway's API keys",
                                   description="Create, list, show and revoke gateway API keys.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a key and print it (once)")
    create.add_argument("--tenant", required=True, help="tenant the key bills to")
    create.add_argument("--models", default="", help="comma-separated model names (default: all)")
    create.add_argument("--priority", type=int, default=0, help="priority tier (lower runs first)")
    create.add_argument("--name", default="", help="a label shown by `keys list` (never part of the key)")
    for flag, (_, meaning) in LIMIT_FLAGS.items():
        create.add_argument("--" + flag.replace("_", "-"), type=int, default=None, help=f"{meaning} (default: no limit)")
    actions.add_parser("list", help="list keys (ids and settings, never the keys)")
    for name in ("show", "revoke"):
        action = actions.add_parser(name, help=f"{name} a key by its id")
        action.add_argument("key_id")
    for action in actions.choices.values():
        where = action.add_mutually_exclusive_group(required=True)
        where.add_argument("--file", help="YAML key file (auth.keys_file)")
        where.add_argument("--redis", help="Redis URL (auth.store: redis)")
        where.add_argument("--config", help="gateway YAML: use the key store it configures")
        action.add_argument("--prefix", default=None, help="Redis key prefix (default: kvs or the config's)")
        action.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_keys)


def open_store(args: argparse.Namespace) -> Any:
    from kvserve.gateway.access.keys import FileKeyStore, RedisKeyStore

    if args.file:
        return FileKeyStore(args.file)
    if args.redis:
        return RedisKeyStore(args.redis, args.prefix or "kvs")
    from kvserve.gateway.config import load_config

    config = load_config(args.config)
    if config.auth.store == "redis" and config.redis.url:
        return RedisKeyStore(config.redis.url, args.prefix or config.redis.prefix)
    if config.auth.keys_file is None:
        raise ValueError(f"{args.config}: auth.keys_file is not set")
    return FileKeyStore(config.auth.keys_file)


def describe(record: Any) -> dict[str, Any]:
    data = record.to_dict()
    data.pop("key_hash")
    return data


def create(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    from kvserve.gateway.access.keys import KeyLimits, new_key

    limits = KeyLimits(**{field: getattr(args, flag) for flag, (field, _) in LIMIT_FLAGS.items()
                          if getattr(args, flag) is not None})
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    key, record = new_key(args.tenant, models, args.priority, limits, args.name)
    store.put(record)
    return {"key": key, **describe(record)}


def run_keys(args: argparse.Namespace) -> int:
    try:
        store = open_store(args)
        if args.action == "create":
            out: Any = create(store, args)
        elif args.action == "list":
            out = [describe(r) for r in sorted(store.all(), key=lambda r: r.created)]
        else:
            record = store.get(args.key_id)
            if record is None:
                print(f"kvserve keys: no key with id {args.key_id}", file=sys.stderr)
                return 1
            if args.action == "revoke":
                record = dataclasses.replace(record, revoked=True)
                store.put(record)
            out = describe(record)
    except Exception as exc:  # store unreachable, bad config: one line, no traceback
        print(f"kvserve keys: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print_out(out, args)
    return 0


def print_out(out: Any, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(out, indent=2))
        return
    rows = out if isinstance(out, list) else [out]
    for row in rows:
        if "key" in row:
            print(f"key (shown once, store it now): {row['key']}")
        state = "revoked" if row["revoked"] else "active"
        models = ",".join(row["models"]) or "*"
        limits = " ".join(f"{k}={v}" for k, v in row["limits"].items() if v)
        print(f"{row['key_id']}  tenant={row['tenant']}  models={models}  priority={row['priority']}  {state}  "
              f"{limits}".rstrip())
