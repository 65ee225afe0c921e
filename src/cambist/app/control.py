"""The control plane of ``cambist up``: market feed, leases, deployments,
health, price history, attestation and autoscaling, wired onto an exchange.

Kept apart from :mod:`cambist.app.exchange` and imported only for the ``up``
role, so that ``cambist gateway`` processes never load the placement solver
(HiGHS, NumPy), the suppliers or the deploy layer they do not run."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from cambist.api.context import ControlPlane
from cambist.deploy import (
    Autoscaling,
    DeployController,
    HealthProbe,
    LeaseDesk,
    LeaseSync,
    MarketFeed,
    Records,
)
from cambist.deploy import EngineLoad as DeploymentLoad
from cambist.deploy.health import engine_in_flight
from cambist.deploy.recovery import recover
from cambist.domain.attestation import SELF_SIGNED_FORMAT
from cambist.domain.schedule import Loop
from cambist.gateway.attest_selfsigned import SelfSignedVerifier
from cambist.gateway.attestation import AttestationProbe, TrustFile
from cambist.gateway.registry import RoutingRefresh
from cambist.market.book import OfferBook
from cambist.market.history import PriceHistory
from cambist.perf.model import PerfModel
from cambist.providers.local import LocalGpu
from cambist.providers.registry import build_default_registry

if TYPE_CHECKING:
    from cambist.app.exchange import Exchange

__all__ = ["TRUST_FILE", "open_control_plane"]

TRUST_FILE = "attestation-trust.json"
"""The attestation trust policy, under ``$CAMBIST_HOME`` (``cambist.gateway.attestation``)."""


async def open_control_plane(ex: Exchange, refresh: RoutingRefresh) \
        -> tuple[ControlPlane, list[Loop]]:
    """Build the control plane on ``ex`` (recovering engines and leases a crash
    left) and return it with the loops only the leader runs."""
    s = ex.settings
    registry = build_default_registry(
        s.home / "suppliers", seed=s.seed, provision_delay_s=s.provision_delay_s,
        spot_preemption_per_hour=s.spot_preemption_per_hour, time_scale=s.engine_time_scale,
        local_gpus=[LocalGpu(g.sku, g.count, g.price_per_gpu_hour) for g in s.local_gpus],
        local_engine_command=s.local_engine_command)
    book = OfferBook(ex.events)
    feed = MarketFeed(registry, book, interval_s=s.market_interval_s)
    await feed.step(ex.clock.now())
    records = Records(ex.db)
    perf = PerfModel()
    desk = LeaseDesk(book=book, suppliers=registry, records=records, journal=ex.wallet,
                     credit=ex.wallet, events=ex.events, clock=ex.clock,
                     fee_rate=s.platform_fee_rate, period_s=s.lease_period_s)
    controller = DeployController(records=records, desk=desk, perf=perf, events=ex.events,
                                  clock=ex.clock, time_scale=s.engine_time_scale,
                                  interval_s=s.reconcile_interval_s,
                                  in_flight=partial(engine_in_flight, ex.http),
                                  endpoints_changed=lambda: refresh.step(ex.clock.now()))
    await recover(records, controller, s.home / "suppliers", ex.http, ex.clock.now())
    # The confidential tier: challenge attesting endpoints; the trust policy is a
    # file the operator edits (re-read on change). A verdict change refreshes routing.
    verifiers = {SELF_SIGNED_FORMAT: SelfSignedVerifier(TrustFile(s.home / TRUST_FILE))}
    attestation = AttestationProbe(ex.db, ex.http, verifiers,
                                   on_change=lambda: refresh.step(ex.clock.now()))
    cp = ControlPlane(clock=ex.clock, db=ex.db, book=book, desk=desk, controller=controller,
                      records=records, perf=perf, events=ex.events, auth=ex.keyring,
                      keyring=ex.keyring, journal=ex.journal, wallet=ex.wallet,
                      prices=ex.prices, price_book=ex.prices, attestation=attestation,
                      budgets=ex.gateway.budgets)
    leader: list[Loop] = [
        controller, feed, LeaseSync(desk),
        HealthProbe(records, controller, ex.http, interval_s=s.health_interval_s),
        # price history: OHLC/volume rollups of the book and the leases (market/history.py)
        PriceHistory(ex.db, book, interval_s=s.market_interval_s),
        attestation,
        # autoscaling of deployments with --max-replicas, from their engines' load
        Autoscaling(controller, DeploymentLoad(records, ex.http)),
    ]
    return cp, leader
