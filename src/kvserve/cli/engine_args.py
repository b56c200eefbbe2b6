"""Engine settings as command-line flags and YAML keys, both mapped onto EngineConfig.

Every field of ModelConfig, CacheConfig, SchedulerConfig and DeviceConfig becomes a flag
named after it (`max_num_seqs` → `--max-num-seqs`), typed from its annotation, with its
one-line comment as help. A YAML file given with `--config` holds the same names as flat
keys (dashes or underscores); flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Any

from kvserve.config import CacheConfig, ConfigError, DeviceConfig, EngineConfig, ModelConfig, SchedulerConfig
from kvserve.control.resolve import with_registry_model  # --model NAME:VERSION or NAME@TAG -> its directory

CONFIG_GROUPS = (ModelConfig, CacheConfig, SchedulerConfig, DeviceConfig)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Add --config and one flag per engine setting (defaults come from EngineConfig)."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="YAML file of settings (flat keys named like the flags); flags override it. "
                             "For serve, a `models:` list serves several models (docs/operations.md)")
    for cls in CONFIG_GROUPS:
        group = parser.add_argument_group(f"engine: {cls.__name__}")
        hints = typing.get_type_hints(cls)
        comments = _field_comments(cls)
        for f in fields(cls):
            _add_flag(group, f, hints[f.name], comments.get(f.name, ""))
    parser.add_argument("--speculative-config", metavar="JSON", dest="speculative_config", default=argparse.SUPPRESS,
                        help='speculative decoding, as vLLM\'s: \'{"method": "ngram", "num_speculative_tokens": 4, '
                             '"prompt_lookup_max": 4}\' or \'{"method": "draft_model", "model": DIR_OR_ID, '
                             '"num_speculative_tokens": 4}\' (default: off)')


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    """EngineConfig from the YAML file (if any) overridden by the flags given; ConfigError if bad."""
    file_values = load_config_file(args.config) if getattr(args, "config", None) else {}
    names = set(EngineConfig.setting_names())
    values = {k: v for k, v in file_values.items() if k in names}
    for cls in CONFIG_GROUPS:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.name in values:
                values[f.name] = check_type(f.name, hints[f.name], values[f.name])
    values.update({name: getattr(args, name) for name in names if hasattr(args, name)})
    return with_registry_model(EngineConfig.from_flat(**values))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML mapping with keys normalised to underscores; ConfigError when unreadable."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of setting names to values")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def check_type(name: str, hint: Any, value: Any) -> Any:
    """A YAML value checked against the field's type (an int is a fine float)."""
    base, optional = _unwrap(hint)
    if value is None and optional:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{name} must be {base.__name__}, got {value!r}")


def _add_flag(group: argparse._ArgumentGroup, f: Field, hint: Any, comment: str) -> None:
    flag = "--" + f.name.replace("_", "-")
    base, _ = _unwrap(hint)
    default = f.default if f.default is not MISSING else None
    # an unset (None) default is described by the comment itself ("default: the model's own")
    help_text = comment if default is None else f"{comment} (default: {default})"
    if base is bool:
        group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=help_text)
    else:
        group.add_argument(flag, dest=f.name, type=base, default=argparse.SUPPRESS,
                           metavar=base.__name__.upper(), help=help_text.replace("%", "%%"))


def _unwrap(hint: Any) -> tuple[type, bool]:
    """`int | None` -> (int, True); `float` -> (float, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+)$")


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field line: the one-line docs of config.py."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    matches = (_COMMENT.match(line) for line in source.splitlines())
    return {m.group(1): m.group(2).strip() for m in matches if m}
