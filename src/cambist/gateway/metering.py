"""Metering: turning what an upstream reported (or what was delivered) into a
settled usage record, charged at most the amount reserved."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from cambist.domain.billing import ModelPrice, Principal, Reservation, Wallet
from cambist.domain.endpoint import PrivacyTier
from cambist.domain.tokens import count_text_tokens
from cambist.domain.usage import UsageRecord
from cambist.gateway.routing import EndpointRoute

__all__ = ["Meter", "TextTally", "Usage", "usage_from", "usage_of_body"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def usage_from(obj: Any) -> Usage | None:
    """The ``usage`` object of an OpenAI response or chunk, if well formed."""
    if not isinstance(obj, Mapping):
        return None
    prompt = _count(obj.get("prompt_tokens"))
    if prompt is None:
        return None
    completion = _count(obj.get("completion_tokens")) or 0
    details = obj.get("completion_tokens_details")
    reasoning = _count(details.get("reasoning_tokens")) if isinstance(details, Mapping) else None
    return Usage(prompt, completion, reasoning or 0)


@dataclass(slots=True)
class TextTally:
    """Generated text per choice (content and reasoning kept apart), counted at the end
    so a word split across chunks counts as one word."""

    content: dict[int, list[str]] = field(default_factory=dict)
    reasoning: dict[int, list[str]] = field(default_factory=dict)

    def add_choice(self, choice: Any) -> None:
        """Add the text of one response choice or stream chunk choice."""
        if not isinstance(choice, Mapping):
            return
        index = choice.get("index", 0)
        index = index if isinstance(index, int) else 0
        part = choice.get("delta") or choice.get("message") or {}
        if isinstance(choice.get("text"), str):
            self.content.setdefault(index, []).append(choice["text"])
        if not isinstance(part, Mapping):
            return
        if isinstance(part.get("content"), str):
            self.content.setdefault(index, []).append(part["content"])
        for key in ("reasoning_content", "reasoning"):
            if isinstance(part.get(key), str):
                self.reasoning.setdefault(index, []).append(part[key])

    def add_chunk(self, data: bytes) -> None:
        """Add the choices of one stream chunk's JSON (skipped if malformed)."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        choices = chunk.get("choices") if isinstance(chunk, Mapping) else None
        if isinstance(choices, list):
            for choice in choices:
                self.add_choice(choice)

    def tokens(self) -> tuple[int, int]:
        """(completion tokens including reasoning, reasoning tokens)."""
        reasoning = sum(count_text_tokens("".join(p)) for p in self.reasoning.values())
        content = sum(count_text_tokens("".join(p)) for p in self.content.values())
        return content + reasoning, reasoning


def usage_of_body(body: Mapping[str, Any], prompt_estimate: int) -> Usage:
    """Usage of a complete response: as reported, else estimated from its text."""
    reported = usage_from(body.get("usage"))
    if reported is not None:
        return reported
    tally = TextTally()
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        tally.add_choice(choice)
    completion, reasoning = tally.tokens()
    return Usage(prompt_estimate, completion, reasoning)


@dataclass(slots=True)
class Meter:
    """Settles one request exactly once: charges the price of its usage, or the
    amount reserved if that books less (the ledger books whole micro-dollars,
    rounded once: never more than were held)."""

    wallet: Wallet
    reservation: Reservation
    price: ModelPrice
    principal: Principal
    request_id: str
    model: str
    created_at: float
    started: float  # time.monotonic() when the request arrived
    stream: bool
    privacy_tier: PrivacyTier = "standard"
    """The tier the request was served under, written into its usage record."""
    charged: Decimal | None = None
    done: bool = False
    on_done: Callable[[int], None] | None = None
    """Told the tokens used once the request settles (0 when released): the
    rate limiter corrects its token estimate with it."""
    on_charge: Callable[[UsageRecord], None] | None = None
    """Told each settled record once the wallet took it (key budgets count it)."""

    def elapsed_ms(self) -> float:
        """Milliseconds since the request arrived."""
        return (time.monotonic() - self.started) * 1000.0

    def settle(
        self, route: EndpointRoute, usage: Usage, status: str, ttft_ms: float | None
    ) -> Decimal:
        """Charge ``usage`` on ``route`` and append the usage record (idempotent)."""
        if self.done:
            return self.charged or Decimal(0)
        if route.endpoint.owner is not None and route.endpoint.owner == self.reservation.tenant_id:
            # Dedicated capacity: the tenant already pays for the lease (plus the
            # platform fee), so its own endpoints meter tokens without a charge.
            charge, micros = Decimal(0), 0
        else:
            charge = self.price.charge(usage.prompt_tokens, usage.completion_tokens)
            micros = self.price.charge_micros(usage.prompt_tokens, usage.completion_tokens)
            if micros > self.reservation.micros:  # past the hold (rare): charge the hold
                charge, micros = self.reservation.amount, self.reservation.micros
        record = UsageRecord(
            request_id=self.request_id,
            tenant_id=self.reservation.tenant_id,
            key_id=self.principal.key_id,
            model=self.model,
            endpoint_id=route.id,
            supplier=route.supplier,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            price=charge,
            compute_cost=route.compute_cost(
                usage.completion_tokens, usage.prompt_tokens),
            price_version=self.price.version,
            status=status,
            created_at=self.created_at,
            latency_ms=self.elapsed_ms(),
            ttft_ms=ttft_ms,
            stream=self.stream,
            privacy_tier=self.privacy_tier,
        )
        self.done = True
        self.charged = charge
        try:
            self.wallet.settle(self.reservation, record, micros)
            if self.on_charge is not None:
                self.on_charge(record)
        finally:
            if self.on_done is not None:
                self.on_done(usage.prompt_tokens + usage.completion_tokens)
        return charge

    def release(self) -> None:
        """Drop the hold without charging (idempotent)."""
        if not self.done:
            self.done = True
            try:
                self.wallet.release(self.reservation)
            finally:
                if self.on_done is not None:
                    self.on_done(0)
