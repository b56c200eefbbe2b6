"""Config of the batch API at the gateway (`batches:` in gateway.yaml): where jobs run and
how many each tenant may have."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchQuota(Section):
    max_active_batches: int = Field(0, ge=0)  # a tenant's jobs that are not final yet; 0 = no limit
    max_lines: int = Field(0, ge=0)  # lines in a tenant's unfinished jobs together; 0 = no limit


class BatchesConfig(Section):
    enabled: bool = False  # answer /v1/files and /v1/batches (else 404)
    url: str | None = None  # the `kvserve serve` that keeps the files and runs the jobs (one replica)
    api_key: str | None = None  # sent to it as "Authorization: Bearer ..."; client keys never are
    max_file_bytes: int = Field(200 * 1024 * 1024, gt=0)  # uploads past this get 413 here
    quota: BatchQuota = BatchQuota()  # every tenant's, unless tenant_quotas names it
    tenant_quotas: dict[str, BatchQuota] = {}  # per-tenant quotas
    record_ttl_s: float = Field(30 * 24 * 3600.0, gt=0)  # how long the gateway remembers who owns an id

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/") if url else url

    @model_validator(mode="after")
    def _url_when_on(self) -> BatchesConfig:
        if self.enabled and self.url is None:
            raise ValueError("batches: enabled needs url (the replica that runs the jobs)")
        return self

    def quota_of(self, tenant: str) -> BatchQuota:
        return self.tenant_quotas.get(tenant, self.quota)
