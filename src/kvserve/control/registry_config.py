"""RegistryConfig: where the model registry lives, from flags or a YAML file."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse



class RegistryConfigError(ValueError):
    """A registry setting that cannot work."""


def default_config_file() -> Path:
    """The file `kvserve models` and `kvserve serve --model NAME:VERSION` read when it exists."""
    return Path.home() / ".config" / "kvserve" / "registry.yaml"


def kvserve_cache_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kvserve"


@dataclass(frozen=True)
class RegistryConfig:
    url: str | None = None  # file:///path, a directory, or s3://bucket/prefix; None = ~/.cache/kvserve/registry
    s3_endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, Ceph, moto); None = AWS
    s3_region: str | None = None  # region of the bucket; None = boto3's default chain
    cache_dir: str | None = None  # where verified copies of pulled versions live; None = ~/.cache/kvserve/pulled

    def __post_init__(self) -> None:
        if self.url is not None:
            parsed = urlparse(self.url)
            if parsed.scheme not in ("", "file", "s3"):
                raise RegistryConfigError(f"registry URL must be file://, s3:// or a directory, got {self.url!r}")
            if parsed.scheme == "s3" and not parsed.netloc:
                raise RegistryConfigError(f"s3 registry URL needs a bucket: s3://BUCKET/PREFIX, got {self.url!r}")
        if self.s3_endpoint_url is not None and urlparse(self.s3_endpoint_url).scheme not in ("http", "https"):
            raise RegistryConfigError(f"s3_endpoint_url must be an http(s) URL, got {self.s3_endpoint_url!r}")

    def scheme(self) -> str:
        """The key of STORAGES that serves this registry."""
        return "s3" if self.url and self.url.startswith("s3://") else "local"

    def local_root(self) -> Path:
        if self.url is None:
            return kvserve_cache_dir() / "registry"
        if self.url.startswith("file://"):
            return Path(urlparse(self.url).path)
        return Path(self.url).expanduser()

    def s3_location(self) -> tuple[str, str]:
        """(bucket, key prefix without trailing '/')."""
        parsed = urlparse(self.url or "")
        return parsed.netloc, parsed.path.strip("/")

    def pulled_dir(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else kvserve_cache_dir() / "pulled"

    def describe(self) -> str:
        return self.url or str(self.local_root())

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> RegistryConfig:
        """Settings from the YAML file (default_config_file() when it exists), then `overrides`
        that are not None (flags win over the file)."""
        path = path or default_config_file()
        values = _read_file(path) if path.is_file() or path != default_config_file() else {}
        config = cls(**values)
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(config, **given) if given else config


def _read_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryConfigError(f"cannot read registry config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise RegistryConfigError(f"registry config {path} must be a mapping")
    names = {f.name for f in fields(RegistryConfig)}
    values = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise RegistryConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    bad = [k for k, v in values.items() if v is not None and not isinstance(v, str)]
    if bad:
        raise RegistryConfigError(f"in {path}: {', '.join(bad)} must be strings")
    return values
