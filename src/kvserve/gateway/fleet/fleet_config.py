"""Settings of how the gateway finds its replicas and waits for them (no imports beyond pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class HoldConfig(BaseModel):
    """Scale to zero: a request whose pools have no ready endpoint waits for one (while the
    autoscaler starts a replica) instead of failing at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(0.0, ge=0, le=3600)  # longest wait for a ready endpoint; 0: no wait (503 at once)
    retry_after_s: int = Field(5, ge=1)  # Retry-After of the 503 when the wait runs out
    poll_s: float = Field(0.05, gt=0, le=5)  # how often a held request looks for a ready endpoint


class DnsDiscoveryConfig(BaseModel):
    """A pool's endpoints from DNS, e.g. a Kubernetes headless Service: A records (with
    `port`) or SRV records (which carry their ports). Re-resolved every `interval_s`;
    endpoints that leave the records leave the pool (their requests in flight finish)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=253)  # e.g. kvserve-replicas.default.svc.cluster.local
    record: Literal["A", "SRV"] = "A"  # SRV: _http._tcp.<service>... names carry the port
    port: int | None = Field(None, ge=1, le=65535)  # port of A-record endpoints (required for A)
    scheme: Literal["http", "https"] = "http"
    interval_s: float = Field(5.0, gt=0)  # how often the name is resolved again
    timeout_s: float = Field(2.0, gt=0)  # per lookup; a failed lookup keeps the last answer
    nameserver: str | None = None  # IP of the DNS server (default: the system's resolv.conf)
    nameserver_port: int = Field(53, ge=1, le=65535)
    api_key: str | None = None  # sent upstream to discovered endpoints as "Authorization: Bearer ..."

    @field_validator("name")
    @classmethod
    def _dns_name(cls, name: str) -> str:
        labels = name.rstrip(".").split(".")
        if any(not label or len(label) > 63 or not all(c.isalnum() or c in "-_" for c in label) for label in labels):
            raise ValueError(f"'{name}' is not a DNS name")
        return name

    @model_validator(mode="after")
    def _port_for_a(self) -> DnsDiscoveryConfig:
        if self.record == "A" and self.port is None:
            raise ValueError("record A needs `port`")
        return self
