"""`kvserve models push|list|show|pull|verify|tag|untag|rm`: the model registry.

The registry is a local directory (default ~/.cache/kvserve/registry) or an S3 bucket;
`--registry`, `--s3-endpoint-url` or a YAML file (`--registry-config`, by default
~/.config/kvserve/registry.yaml when it exists) say which. See docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvserve.control.checksum import IntegrityError, no_progress
from kvserve.control.manifest import ManifestError
from kvserve.control.ref import ModelRef, RefError, check_part
from kvserve.control.registry import Registry, RegistryError
from kvserve.control.registry_config import RegistryConfig, RegistryConfigError
from kvserve.control.errors import StorageError
from kvserve.control.storage import open_storage

# action -> (help, its positional arguments as (name, help))
ACTIONS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "push": ("store a model directory as a new immutable version",
             (("dir", "model directory"), ("ref", "NAME:VERSION"))),
    "list": ("list versions and their tags", ()),
    "show": ("print a version's manifest (NAME:VERSION, NAME@TAG), or a model's versions (NAME)",
             (("ref", "NAME[:VERSION|@TAG]"),)),
    "pull": ("copy a version into a directory, verifying every file",
             (("ref", "NAME:VERSION or NAME@TAG"), ("dir", "target directory (absent or empty)"))),
    "verify": ("hash every file of a version in the registry", (("ref", "NAME:VERSION or NAME@TAG"),)),
    "tag": ("point a movable tag (stable, canary, ...) at a version", (("ref", "NAME:VERSION"), ("tag", "tag name"))),
    "untag": ("remove a tag", (("ref", "NAME@TAG"),)),
    "rm": ("remove a version (refused while a tag points at it)", (("ref", "NAME:VERSION"),)),
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("models", help="manage the model registry",
                                   description="Push, list, pull, verify and tag model versions.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (help_text, positionals) in ACTIONS.items():
        action = actions.add_parser(name, help=help_text, description=help_text)
        for arg, arg_help in positionals:
            action.add_argument(arg, help=arg_help)
        _add_registry_flags(action)
        action.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    push = actions.choices["push"]
    push.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                      help="a label to record in the manifest (repeatable)")
    push.add_argument("--source", default=None, help="where the model came from (default: the directory)")
    actions.choices["list"].add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run_models)


def _add_registry_flags(action: argparse.ArgumentParser) -> None:
    action.add_argument("--registry", metavar="URL", default=None,
                        help="file:///path, a directory, or s3://bucket/prefix (default: ~/.cache/kvserve/registry)")
    action.add_argument("--s3-endpoint-url", metavar="URL", default=None, help="S3-compatible endpoint (MinIO, moto)")
    action.add_argument("--registry-config", metavar="FILE", default=None,
                        help="YAML file of registry settings (default: ~/.config/kvserve/registry.yaml if present)")


def run_models(args: argparse.Namespace) -> int:
    try:
        return HANDLERS[args.action](args, _registry(args), _progress(args))
    except IntegrityError as exc:
        print(f"kvserve models {args.action}: refused: {exc}", file=sys.stderr)
        return 1
    except (RefError, ManifestError, RegistryError, RegistryConfigError, StorageError, OSError,
            ValueError) as exc:
        print(f"kvserve models {args.action}: error: {exc}", file=sys.stderr)
        return 1


def _push(args, registry, progress) -> int:
    labels = dict(_label(text) for text in args.label)
    manifest = registry.push(Path(args.dir), ModelRef.parse(args.ref), args.source, labels, progress)
    print(f"pushed {manifest.name}:{manifest.version}: {len(manifest.files)} files, {_size(manifest.total_bytes)}")
    return 0


def _list(args, registry, _progress) -> int:
    rows = registry.versions()
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2, default=list))
        return 0
    print(f"{'MODEL':32} {'VERSION':20} {'SIZE':>10}  {'CREATED':25} TAGS")
    for row in rows:
        print(f"{row.name:32} {row.version:20} {_size(row.total_bytes):>10}  {row.created:25} {','.join(row.tags)}")
    return 0


def _show(args, registry, _progress) -> int:
    if ":" not in args.ref and "@" not in args.ref:
        rows = registry.versions(check_part("model name", args.ref))
        if not rows:
            print(f"kvserve models show: no versions of {args.ref}", file=sys.stderr)
            return 1
        for row in rows:
            print(f"{row.name}:{row.version}\t{_size(row.total_bytes)}\t{row.created}\t{','.join(row.tags)}")
        return 0
    manifest = registry.manifest(ModelRef.parse(args.ref))
    sys.stdout.write(manifest.to_json().decode())
    return 0


def _pull(args, registry, progress) -> int:
    manifest = registry.pull(ModelRef.parse(args.ref), Path(args.dir), progress)
    print(f"pulled {manifest.name}:{manifest.version} into {args.dir} ({len(manifest.files)} files verified)")
    return 0


def _verify(args, registry, progress) -> int:
    manifest = registry.verify(ModelRef.parse(args.ref), progress)
    print(f"{manifest.name}:{manifest.version}: {len(manifest.files)} files, {_size(manifest.total_bytes)}: ok")
    return 0


def _tag(args, registry, _progress) -> int:
    manifest = registry.tag(ModelRef.parse(args.ref), args.tag)
    print(f"{manifest.name}@{args.tag} -> {manifest.version}")
    return 0


def _untag(args, registry, _progress) -> int:
    ref = ModelRef.parse(args.ref)
    registry.untag(ref)
    print(f"removed tag {ref}")
    return 0


def _rm(args, registry, _progress) -> int:
    manifest = registry.remove(ModelRef.parse(args.ref))
    print(f"removed {manifest.name}:{manifest.version}")
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace, Any, Any], int]] = {
    "push": _push, "list": _list, "show": _show, "pull": _pull,
    "verify": _verify, "tag": _tag, "untag": _untag, "rm": _rm,
}


def _registry(args: argparse.Namespace) -> Any:
    path = Path(args.registry_config) if args.registry_config else None
    config = RegistryConfig.load(path, url=args.registry, s3_endpoint_url=args.s3_endpoint_url)
    return Registry(open_storage(config))


def _progress(args: argparse.Namespace) -> Any:
    return _tqdm_bar if args.progress else no_progress


@contextmanager
def _tqdm_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    from tqdm import tqdm

    with tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
              file=sys.stderr, disable=total == 0) as bar:
        yield bar.update


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--label takes KEY=VALUE, got {text!r}")
    return key, value


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"
