"""Simulated suppliers calibrated on the public price catalog.

One :class:`SimSupplier` per catalog supplier. Its offers are generated from
the supplier's catalog rows (``offers_seen`` offers per GPU, prices spread
from the row's minimum through its median to its maximum, spread over the
regions seen, spot offers where a spot price was listed); its behaviour
(billing, volatility, capacity, naming) comes from :mod:`.sim_profiles`.

Dynamics advance only in :meth:`SimSupplier.step`: each offer's log price
follows an Ornstein-Uhlenbeck process around its base (exact discretization,
so results do not depend on the step size's history beyond the draws), the
capacity other customers hold jumps now and then, and offers disappear and
come back. Randomness is a ``random.Random`` seeded from (seed, supplier), so
the same seed and the same sequence of ``step(now)`` calls give the same market.
Market episodes (gluts and surges, see :mod:`.sim_profiles`) come from a
schedule that is a pure function of (seed, SKU, time), shared by every
supplier; they shift each offer's price and units on top of the processes
above without drawing from the supplier's generator, so a market with
episodes off (``episode_rate=0``) is draw-for-draw the market without them.
:meth:`SimSupplier.episodes` lists the ground truth.
Spot leases get a preemption time drawn at lease time (exponential with the
configured rate) from a generator seeded by the lease id, so leasing never
disturbs the market's own random sequence.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from cambist.domain.errors import OfferUnavailable
from cambist.domain.offer import Offer, TermPrice
from cambist.domain.sku import family_of, normalize_gpu
from cambist.providers.base import EngineHandle, EngineSpec, SupplierLease
from cambist.providers.catalog import PriceLevel, jurisdiction_of, price_levels_for
from cambist.providers.engine_process import (
    effective_time_scale,
    launch_reference_engine,
    stop_engine_process,
)
from cambist.providers.lease_store import LeaseRecord, LeaseStore, lease_id_for
from cambist.providers.sim_profiles import (
    DEFAULT_EPISODES,
    PROFILES,
    EpisodeProfile,
    SimEpisode,
    SupplierProfile,
    count_mix,
    episode_schedule,
    interconnect_for,
    raw_gpu_name,
)

__all__ = ["PRICE_QUANTUM", "SimSupplier", "market_key", "spread_prices"]

PRICE_QUANTUM = Decimal("0.0001")
_MAX_LOG_MOVE = math.log(1.8)


STICKY_PRICE_BAND = Decimal("0.015")
"""Relative move of the latent price that makes a supplier re-publish its list price."""


def spread_prices(level: PriceLevel, n: int) -> list[Decimal]:
    """``n`` ascending prices from the row's min through its median to its max.

    Piecewise linear in rank: the middle rank sits at the median, so an odd
    ``n`` reproduces the median exactly and an even one straddles it.
    """
    lo, mid, hi = level.min_price, level.median_price, level.max_price
    if n == 1:
        return [mid.quantize(PRICE_QUANTUM)]
    out = []
    for i in range(n):
        q = Decimal(i) / Decimal(n - 1)
        below = q <= Decimal("0.5")
        p = lo + (mid - lo) * q * 2 if below else mid + (hi - mid) * (q * 2 - 1)
        out.append(p.quantize(PRICE_QUANTUM))
    return out


def market_key(offer: Offer) -> str:
    """The SKU an offer trades under in market data: its canonical SKU, or its
    GPU family when the name could not be resolved (``"H100"``). The same rule
    as ``cambist.market.replay.market_key`` (providers may not import market)."""
    return offer.sku or family_of(offer.gpu_name)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class _SimOffer:
    """One offer's fixed description and its moving state."""

    template: Offer
    base: Decimal
    capacity: int
    volatility: float
    x: float = 0.0
    """Log deviation of the price from ``base``."""
    price: Decimal = Decimal(0)
    external: int = 0
    """Units rented by other customers of the supplier."""
    absent_until: float | None = None
    episode: SimEpisode | None = None
    """The market episode in force at the last step."""

    def absent(self, now: float) -> bool:
        return self.absent_until is not None and now < self.absent_until


class SimSupplier:
    """A simulated supplier implementing the ``Supplier`` protocol."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        *,
        seed: int = 7,
        provision_delay_s: float = 2.0,
        spot_preemption_per_hour: float = 0.02,
        time_scale: float = 1.0,
        offer_ttl_s: float = 300.0,
        reference_engine_argv: Sequence[str] | None = None,
        profile: SupplierProfile | None = None,
        levels: Sequence[PriceLevel] | None = None,
        episode_rate: float | None = None,
        episode_profile: EpisodeProfile = DEFAULT_EPISODES,
    ) -> None:
        """``time_scale`` is the reference engines' time scale unless an
        ``EngineSpec`` sets its own; ``reference_engine_argv`` replaces
        ``python -m cambist.engine``; ``episode_rate`` (market episodes per SKU
        per day, 0 disables) overrides ``episode_profile.per_day``."""
        if profile is None and name not in PROFILES:
            raise ValueError(f"no simulation profile for supplier {name!r}")
        if spot_preemption_per_hour < 0 or provision_delay_s < 0 or offer_ttl_s <= 0:
            raise ValueError("rates and delays must be >= 0 and the offer ttl > 0")
        self.name = name
        self.profile = profile or PROFILES[name]
        self.state_dir = Path(state_dir)
        self.seed = seed
        self.provision_delay_s = provision_delay_s
        self.spot_preemption_per_hour = spot_preemption_per_hour
        self.time_scale = time_scale
        self.offer_ttl_s = offer_ttl_s
        self._engine_argv = reference_engine_argv
        if episode_rate is not None:
            episode_profile = replace(episode_profile, per_day=episode_rate)
        self.episode_profile = episode_profile
        rows = list(levels) if levels is not None else price_levels_for(name)
        if not rows:
            raise ValueError(f"the price catalog has no rows for supplier {name!r}")
        self._rng = random.Random(f"{seed}:{name}")
        self._offers = self._generate(rows)
        self._by_id = {o.template.id: o for o in self._offers}
        self._last_step: float | None = None
        self._episode_cache: dict[str, tuple[int, list[SimEpisode]]] = {}
        self._leases = LeaseStore(self.state_dir / "suppliers" / f"{name}.json", name)
        self.unsupported: dict[str, str] = {
            "real_engines": "a simulated supplier has no GPUs to run vLLM, SGLang or llama.cpp "
            "on; launch_engine starts the reference engine, which simulates the GPU",
        }
        if not any(o.template.spot for o in self._offers):
            self.unsupported["spot"] = f"{name} lists no spot capacity in the catalog"
        if self.profile.term_12m_factor is None:
            self.unsupported["term_pricing"] = f"{name} publishes no committed-term prices"

    # ----------------------------------------------------------------- offers

    def _generate(self, rows: Sequence[PriceLevel]) -> list[_SimOffer]:
        out: list[_SimOffer] = []
        for level in rows:
            n = level.offers_seen
            regions = list(level.regions)
            if level.all_regions:
                regions = self._rng.sample(regions, min(n, len(regions)))
            else:
                k = self._rng.randrange(len(regions))
                regions = regions[k:] + regions[:k]
            mix = count_mix(self.profile, level.gpu)
            prices = spread_prices(level, n)
            units = [(regions[i % len(regions)], self._rng.choice(mix)) for i in range(n)]
            for i, (region, count) in enumerate(units):
                out.append(self._make(level, f"{_slug(level.gpu)}-{i:02d}", region, count,
                                      prices[i], spot=False))
            if level.min_spot_price is None:
                continue
            n_spot = max(1, n // 2)
            for i in range(n_spot):
                region, count = units[i]
                frac = Decimal(i) / Decimal(n_spot) * Decimal("0.35")
                spot = level.min_spot_price + (prices[i] - level.min_spot_price) * frac
                spot = min(spot, prices[i]) if i else level.min_spot_price
                out.append(self._make(level, f"{_slug(level.gpu)}-{i:02d}-spot", region, count,
                                      spot.quantize(PRICE_QUANTUM), spot=True))
        return out

    def _make(self, level: PriceLevel, local_id: str, region: str, count: int,
              base: Decimal, *, spot: bool) -> _SimOffer:
        prof = self.profile
        raw = raw_gpu_name(prof, level.gpu, count)
        match = normalize_gpu(raw, level.gpu_memory_gib)
        template = Offer(
            id=f"{self.name}:{local_id}",
            supplier=self.name,
            gpu_name=raw,
            sku=match.sku,
            gpu_count=count,
            vram_gib=level.gpu_memory_gib,
            region=region,
            jurisdiction=jurisdiction_of(region),
            price_per_gpu_hour=base,
            spot=spot,
            available=0,
            expires_at=0.0,
            billing_increment_s=prof.billing_increment_s,
            billing_minimum_s=prof.billing_minimum_s,
            preemption_notice_s=prof.preemption_notice_s if spot else None,
            interconnect=interconnect_for(raw, match.sku, count),
            async_provisioning=True,
            sku_note=match.reason,
        )
        capacity = self._rng.randint(*prof.capacity)
        return _SimOffer(
            template=template,
            base=base,
            capacity=capacity,
            volatility=prof.log_volatility * (2.0 if spot else 1.0),
            price=base,
            external=self._rng.randint(0, capacity // 2),
        )

    def _available(self, so: _SimOffer, held: dict[str, int]) -> int:
        capacity, external, ep = so.capacity, so.external, so.episode
        if ep is not None and ep.kind == "glut":
            capacity = round(capacity * ep.capacity_factor)
        elif ep is not None:
            external = max(external, round(capacity * ep.capacity_factor))
        return max(0, capacity - external - held.get(so.template.id, 0))

    def _snapshot(self, so: _SimOffer, now: float, held: dict[str, int]) -> Offer:
        terms: tuple[TermPrice, ...] = ()
        factor = self.profile.term_12m_factor
        if factor is not None and not so.template.spot:
            terms = (TermPrice(12, (so.price * factor).quantize(PRICE_QUANTUM)),)
        return replace(
            so.template,
            price_per_gpu_hour=so.price,
            available=self._available(so, held),
            expires_at=now + self.offer_ttl_s,
            term_prices=terms,
        )

    async def list_offers(self, now: float) -> list[Offer]:
        """Offers present at ``now`` (sold-out ones included, ``available == 0``)."""
        held = self._leases.units_held(now)
        return [self._snapshot(o, now, held) for o in self._offers if not o.absent(now)]

    # --------------------------------------------------------------- dynamics

    async def step(self, now: float) -> None:
        """Advance prices, capacity and presence of every offer to ``now``."""
        if self._last_step is None:
            self._last_step = now
            for o in self._offers:
                if self._episode_at(market_key(o.template), now) is not None:
                    self._reprice(o, now)
            return
        if now <= self._last_step:
            return
        dt = now - self._last_step
        self._last_step = now
        prof = self.profile
        theta = math.log(2) / prof.half_life_s
        decay = math.exp(-theta * dt)
        p_shock = 1.0 - math.exp(-prof.shocks_per_hour * dt / 3600.0)
        p_vanish = 1.0 - math.exp(-prof.vanish_per_hour * dt / 3600.0)
        rng = self._rng
        for o in self._offers:
            # Same number of draws per offer per step whatever happens, so one
            # offer's fate never shifts another's random sequence.
            z, u_shock, level, u_vanish, dur = (rng.gauss(0.0, 1.0), rng.random(),
                                                rng.random(), rng.random(), rng.random())
            bound = min(4.0 * o.volatility, _MAX_LOG_MOVE)
            x = o.x * decay + o.volatility * math.sqrt(1.0 - decay * decay) * z
            o.x = max(-bound, min(bound, x))
            self._reprice(o, now)
            if u_shock < p_shock:
                o.external = min(o.capacity, int(level * (o.capacity + 1)))
            if o.absent_until is not None:
                if now >= o.absent_until:
                    o.absent_until = None
            elif u_vanish < p_vanish:
                o.absent_until = now + (-math.log(1.0 - dur)) * prof.absent_mean_s

    def _reprice(self, o: _SimOffer, now: float) -> None:
        """Price from the log deviation and the market episode in force.

        List prices are sticky, as suppliers' are: the published price follows
        the latent one only when they differ by more than ``STICKY_PRICE_BAND``
        (or an episode starts or ends), so the book sees discrete re-pricings
        instead of a change on every step."""
        episode = self._episode_at(market_key(o.template), now)
        shift = math.log(episode.price_factor) if episode is not None else 0.0
        move = max(-_MAX_LOG_MOVE, min(_MAX_LOG_MOVE, o.x + shift))
        target = (o.base * Decimal(f"{math.exp(move):.6f}")).quantize(PRICE_QUANTUM)
        changed_episode = episode != o.episode
        o.episode = episode
        if o.price and not changed_episode and abs(target / o.price - 1) < STICKY_PRICE_BAND:
            return
        o.price = target

    def _episode_at(self, key: str, now: float) -> SimEpisode | None:
        block = math.floor(now / self.episode_profile.block_s)
        cached = self._episode_cache.get(key)
        if cached is None or cached[0] != block:
            lo = block * self.episode_profile.block_s
            found = episode_schedule(self.seed, key, lo, lo + self.episode_profile.block_s,
                                     self.episode_profile)
            cached = (block, found)
            self._episode_cache[key] = cached
        return next((e for e in cached[1] if e.active(now)), None)

    def episodes(self, start: float, end: float) -> list[SimEpisode]:
        """The ground truth: market episodes overlapping ``[start, end)`` of the
        SKUs this supplier lists (shared with every supplier of the same seed)."""
        keys = sorted({market_key(o.template) for o in self._offers})
        found = [e for k in keys
                 for e in episode_schedule(self.seed, k, start, end, self.episode_profile)]
        return sorted(found, key=lambda e: (e.start, e.sku))

    # ---------------------------------------------------------------- leasing

    async def lease(self, offer: Offer, now: float, client_token: str) -> SupplierLease:
        """Rent one unit of ``offer``; idempotent on ``client_token``."""
        existing = self._leases.by_token(client_token, offer.id)
        if existing is not None:
            return existing.view(now)
        so = self._by_id.get(offer.id)
        if so is None:
            raise OfferUnavailable(f"offer {offer.id} does not exist at {self.name}")
        if so.absent(now):
            raise OfferUnavailable(f"offer {offer.id} has been withdrawn by {self.name}")
        if offer.expires_at <= now:
            raise OfferUnavailable(
                f"offer {offer.id} expired at {offer.expires_at:.3f} (now {now:.3f}); "
                "list offers again for a fresh quote"
            )
        if self._available(so, self._leases.units_held(now)) <= 0:
            raise OfferUnavailable(f"offer {offer.id} at {self.name} is sold out")
        lease_id = lease_id_for(self.name, client_token)
        preempt_at = None
        if so.template.spot and self.spot_preemption_per_hour > 0:
            draw = random.Random(f"{self.seed}:{self.name}:{lease_id}")
            preempt_at = now + draw.expovariate(self.spot_preemption_per_hour / 3600.0)
        rec = LeaseRecord(
            supplier_lease_id=lease_id,
            offer_id=offer.id,
            client_token=client_token,
            created_at=now,
            ready_at=now + self.provision_delay_s,
            spot=so.template.spot,
            preempt_at=preempt_at,
            preemption_notice_s=so.template.preemption_notice_s,
        )
        self._leases.add(rec)
        return rec.view(now)

    async def lease_status(self, supplier_lease_id: str, now: float) -> SupplierLease:
        """State of a lease at ``now``; ``NotFound`` if unknown."""
        return self._leases.get(supplier_lease_id).view(now)

    async def release(self, supplier_lease_id: str, now: float) -> SupplierLease:
        """End a lease, restoring its unit; a no-op on an ended lease."""
        return self._leases.release(supplier_lease_id, now).view(now)

    # ---------------------------------------------------------------- engines

    async def launch_engine(self, spec: EngineSpec) -> EngineHandle:
        """Start the reference engine simulating ``spec``'s GPUs."""
        scaled = replace(spec, time_scale=effective_time_scale(spec, self.time_scale))
        return await launch_reference_engine(
            scaled, self.state_dir, engine_argv=self._engine_argv, supplier=self.name
        )

    async def stop_engine(self, handle: EngineHandle) -> None:
        """Stop an engine this supplier launched (no error if already gone)."""
        await stop_engine_process(handle, self.state_dir)
