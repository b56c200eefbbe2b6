"""Config sections of what the gateway does with answers and records: output redaction,
the audit log and shadow traffic. Fields of `GatewayConfig` (config.py); each is off by
default."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kvserve.gateway.access.pii import DETECTORS

ALL_KINDS = "all"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _known_kinds(rules: dict[str, list[str]]) -> dict[str, list[str]]:
    for name, kinds in rules.items():
        unknown = set(kinds) - set(DETECTORS) - {ALL_KINDS}
        if unknown:
            raise ValueError(f"'{name}': unknown kind {', '.join(sorted(unknown))} "
                             f"(choose from {', '.join(DETECTORS)} or {ALL_KINDS})")
    return rules


class AuditConfig(Section):
    """The audit log (gateway/audit.py): hash-chained JSON lines of admin actions and requests."""

    path: str | None = None  # file the lines are appended to, "-" for stdout; none = no audit log
    requests: bool = True  # a line per request (metadata only); false = admin actions only


class RedactionConfig(Section):
    """PII and secrets redacted in answers: a request gets the union of its model's and its tenant's kinds."""

    models: dict[str, list[str]] = {}  # client-facing model name -> kinds (email, phone, card, secret, ip, ipv6, all)
    tenants: dict[str, list[str]] = {}  # tenant -> kinds
    max_hold_chars: int = Field(256, ge=16)  # a stream holds back at most this much of a possible match

    _kinds = field_validator("models", "tenants")(_known_kinds)

    @property
    def enabled(self) -> bool:
        return bool(self.models or self.tenants)

    def kinds(self, model: str, tenant: str) -> frozenset[str]:
        chosen = {*self.models.get(model, ()), *self.tenants.get(tenant, ())}
        return frozenset(DETECTORS) if ALL_KINDS in chosen else frozenset(chosen)
