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


class ShadowModel(Section):
    candidate: str  # the version that gets the copies (often one with weight 0)
    share: float = Field(0.1, gt=0, le=1)  # fraction of the model's other requests copied to it


class ShadowConfig(Section):
    """Copies of a share of a model's requests sent to a candidate version, off the client's path."""

    models: dict[str, ShadowModel] = {}  # client-facing model name -> its candidate
    max_in_flight: int = Field(16, ge=1)  # shadow requests open at once; beyond it a request is not copied
    timeout_s: float = Field(60.0, gt=0)  # a shadow request (and the wait for the primary) gives up after this
    similarity: bool = True  # embedding similarity of the two answers (all-MiniLM-L6-v2: the `semantic` extra)


class FeedbackConfig(Section):
    enabled: bool = False  # POST /v1/feedback: a score for an answer, kept per model version
    ttl_s: float = Field(7 * 86400.0, gt=0)  # how long an answer can be rated after it was given


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
