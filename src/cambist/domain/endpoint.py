"""Endpoints: OpenAI-compatible servers the gateway can route to.

Three kinds: ``deployment`` (an engine on capacity Cambist leases; its cost
comes from the lease and its load), ``external`` (a provider's API declared in
configuration, paid per token) and ``local`` (any OpenAI-compatible server an
admin registers: vLLM, SGLang, llama.cpp, Ollama, LM Studio; paid per token at
its declared price, often zero).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args
from urllib.parse import urlsplit

from cambist.domain.errors import InvalidRequest

__all__ = [
    "ENDPOINT_KINDS",
    "PRIVACY_TIERS",
    "STANDARD_PARAMETERS",
    "DataCollection",
    "Endpoint",
    "EndpointKind",
    "PrivacyTier",
    "external_endpoint_id",
    "format_tier_list",
    "is_env_var_name",
    "meet_tiers",
    "normalize_upstream_url",
    "parse_tier_list",
]

EndpointKind = Literal["deployment", "external", "local"]
ENDPOINT_KINDS: tuple[str, ...] = get_args(EndpointKind)

PrivacyTier = Literal["standard", "zero_retention", "anonymous", "confidential"]
"""A request's privacy tier (what each guarantees: README, "Privacy tiers")."""
PRIVACY_TIERS: tuple[PrivacyTier, ...] = get_args(PrivacyTier)


def parse_tier_list(value: str | None) -> frozenset[PrivacyTier] | None:
    """A stored or typed tier policy (``"zero_retention,confidential"``) as a set;
    ``None`` or ``""`` means any tier. Raises ``InvalidRequest`` naming an
    unknown tier."""
    if value is None or not value.strip():
        return None
    tiers: set[PrivacyTier] = set()
    for name in value.split(","):
        name = name.strip()
        match = [t for t in PRIVACY_TIERS if t == name]
        if not match:
            raise InvalidRequest(f"unknown privacy tier {name!r}; use a comma-separated list "
                                 f"of {', '.join(PRIVACY_TIERS)}", param="privacy_tiers")
        tiers.add(match[0])
    return frozenset(tiers)


def format_tier_list(tiers: frozenset[str] | None) -> str | None:
    """The stored form of a tier policy, in ``PRIVACY_TIERS`` order."""
    return None if tiers is None else ",".join(t for t in PRIVACY_TIERS if t in tiers)


def meet_tiers(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """The tiers allowed by both policies (``None`` allows any)."""
    if a is None:
        return b
    return a if b is None else a & b

DataCollection = Literal["allow", "deny"]
"""An upstream's data policy: ``allow`` means it may store or train on requests."""

STANDARD_PARAMETERS: frozenset[str] = frozenset({
    "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "tools", "tool_choice", "parallel_tool_calls", "response_format", "echo", "best_of",
    "suffix", "encoding_format", "dimensions",
})
"""Request parameters the reference engine and vLLM honour (the default for every
endpoint; external upstreams may declare their own set)."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def is_env_var_name(name: str) -> bool:
    """Whether ``name`` is a plausible environment variable name."""
    return bool(_ENV_NAME.match(name))


def normalize_upstream_url(url: str, param: str = "url") -> str:
    """An upstream base URL, checked: ``http``/``https`` only, a host, no
    credentials, no query or fragment, and no path beyond an optional ``/v1``.
    Returns it without a trailing slash; raises ``InvalidRequest`` naming ``param``."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest("the URL must be a non-empty string", param=param)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"the URL is malformed ({exc})", param=param) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequest("the URL scheme must be http or https", param=param)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidRequest("the URL must not carry credentials; give the API key's "
                             "environment variable name instead", param=param)
    if not parts.hostname:
        raise InvalidRequest("the URL needs a host", param=param)
    if parts.query or parts.fragment:
        raise InvalidRequest("the URL must not have a query or fragment", param=param)
    path = parts.path.rstrip("/")
    if path not in ("", "/v1"):
        raise InvalidRequest("the URL must be the server's base URL, optionally ending "
                             "in /v1 (no other path)", param=param)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{path}"


def external_endpoint_id(upstream: str, model: str) -> str:
    """The stable id of a configured external upstream's endpoint for ``model``."""
    digest = hashlib.sha256(f"{upstream}\n{model}".encode()).hexdigest()[:16]
    return f"ep_ext_{digest}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A routable upstream serving one model.

    For own deployments ``cost_per_hour`` is what the capacity under it costs
    (the lease price) and ``capacity_tok_s`` the throughput the performance
    model expects at full batch; together they give the live marginal cost the
    router uses. External and local endpoints instead declare what they charge
    per million tokens (``input_price_per_mtok``/``output_price_per_mtok``).
    ``api_key_env`` names the environment variable holding the upstream's API
    key (never the key itself). ``zdr`` is ``None`` when it follows from the
    kind (own deployments and local servers retain nothing; externals do unless
    declared otherwise); ``supported_parameters`` ``None`` means
    :data:`STANDARD_PARAMETERS`. The last three come from configuration only.
    """

    id: str
    model: str
    url: str
    supplier: str
    owner: str | None
    healthy: bool
    deployment: str | None = None
    lease_id: str | None = None
    sku: str | None = None
    region: str = ""
    cost_per_hour: Decimal = Decimal(0)
    capacity_tok_s: float = 0.0
    max_concurrency: int = 64
    context_length: int = 0
    created_at: float = 0.0
    kind: EndpointKind = "deployment"
    input_price_per_mtok: Decimal | None = None
    output_price_per_mtok: Decimal | None = None
    api_key_env: str | None = None
    quantization: str | None = None
    zdr: bool | None = None
    data_collection: DataCollection = "deny"
    supported_parameters: frozenset[str] | None = None
    attested_until: float | None = None

    @property
    def retains_nothing(self) -> bool:
        """Zero data retention: declared, or implied by the kind."""
        return self.zdr if self.zdr is not None else self.kind != "external"

    @property
    def privacy_tiers(self) -> frozenset[PrivacyTier]:
        """The tiers this endpoint offers: every endpoint ``standard``; those that
        retain nothing ``zero_retention``; only pass-through (external)
        endpoints ``anonymous``; ``confidential`` only those whose attestation
        verified and has not expired (``attested_until``, set by the routing
        refresh from the last verification), and that retain nothing."""
        tiers: set[PrivacyTier] = {"standard"}
        if self.retains_nothing:
            tiers.add("zero_retention")
        if self.kind == "external":
            tiers.add("anonymous")
        if self.attested_until is not None and self.retains_nothing:
            tiers.add("confidential")
        return frozenset(tiers)

    @property
    def collects_data(self) -> bool:
        """Whether the upstream may store or train on requests (never for own or local)."""
        return self.kind == "external" and self.data_collection == "allow"

    @property
    def parameters(self) -> frozenset[str]:
        """Request parameters this endpoint honours."""
        return STANDARD_PARAMETERS if self.supported_parameters is None \
            else self.supported_parameters

    @property
    def declared_prices(self) -> tuple[Decimal, Decimal] | None:
        """(input, output) $/Mtok the upstream charges, when both are declared."""
        if self.input_price_per_mtok is None or self.output_price_per_mtok is None:
            return None
        return self.input_price_per_mtok, self.output_price_per_mtok
