"""The `rollouts` section of the gateway config: how often rollouts are judged, and the
registry whose tag a promotion may move."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kvserve.control.registry_config import RegistryConfig, RegistryConfigError


class RolloutsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_s: float = Field(1.0, gt=0, le=60)  # how often each running rollout is judged
    max_samples: int = Field(100_000, ge=100)  # newest request outcomes kept per version under a rollout
    history: int = Field(50, ge=1)  # events kept per rollout (started, advanced, rolled back, ...)
    registry: str | None = None  # registry URL (a directory, file:///path, s3://bucket/prefix) whose tags promotions move
    s3_endpoint_url: str | None = None  # S3-compatible endpoint of that registry (MinIO, moto)

    @model_validator(mode="after")
    def _valid_registry(self) -> RolloutsConfig:
        if self.s3_endpoint_url is not None and self.registry is None:
            raise ValueError("s3_endpoint_url needs registry")
        self.registry_config()
        return self

    def registry_config(self) -> RegistryConfig | None:
        """The registry promotions tag in, or None when none is configured."""
        if self.registry is None:
            return None
        try:
            return RegistryConfig(url=self.registry, s3_endpoint_url=self.s3_endpoint_url)
        except RegistryConfigError as exc:
            raise ValueError(str(exc)) from None
