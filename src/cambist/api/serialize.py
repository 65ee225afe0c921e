"""Domain objects as JSON for the REST API (money as strings, exact)."""

from __future__ import annotations

from typing import Any

from cambist.domain.deployment import Deployment, Replica
from cambist.domain.endpoint import Endpoint
from cambist.domain.lease import Lease
from cambist.domain.money import quantize_usd
from cambist.domain.offer import Offer
from cambist.placement.rank import Quote

__all__ = ["deployment_json", "endpoint_json", "lease_json", "offer_json"]


def offer_json(o: Offer, q: Quote | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": o.id, "supplier": o.supplier, "gpu_name": o.gpu_name, "sku": o.sku,
        "sku_note": o.sku_note, "gpu_count": o.gpu_count, "vram_gib": o.vram_gib,
        "region": o.region, "jurisdiction": o.jurisdiction,
        "price_per_gpu_hour": str(o.price_per_gpu_hour), "price_per_hour": str(o.price_per_hour),
        "spot": o.spot, "available": o.available, "expires_at": o.expires_at,
        "billing_increment_s": o.billing_increment_s, "billing_minimum_s": o.billing_minimum_s,
        "preemption_notice_s": o.preemption_notice_s, "interconnect": o.interconnect,
        "async_provisioning": o.async_provisioning,
        "term_prices": [{"months": t.months, "price_per_gpu_hour": str(t.price_per_gpu_hour)}
                        for t in o.term_prices],
    }
    if q is not None:
        d["cost_per_mtok"] = str(quantize_usd(q.cost_per_mtok)) if q.cost_per_mtok else None
        d["quote_note"] = q.reason
    return d


def lease_json(x: Lease, now: float) -> dict[str, Any]:
    return {
        "id": x.id, "supplier": x.supplier, "supplier_lease_id": x.supplier_lease_id,
        "offer_id": x.offer_id, "sku": x.sku, "gpu_name": x.gpu_name, "gpu_count": x.gpu_count,
        "region": x.region, "price_per_hour": str(x.price_per_hour), "spot": x.spot,
        "owner": x.owner, "state": str(x.state), "created_at": x.created_at,
        "started_at": x.started_at, "ended_at": x.ended_at,
        "cost_so_far": str(quantize_usd(x.cost_until(now))),
        "platform_fee_rate": str(x.platform_fee_rate), "client_token": x.client_token,
    }


def endpoint_json(e: Endpoint) -> dict[str, Any]:
    return {
        "id": e.id, "model": e.model, "url": e.url, "supplier": e.supplier, "owner": e.owner,
        "healthy": e.healthy, "deployment": e.deployment, "lease_id": e.lease_id, "sku": e.sku,
        "region": e.region, "cost_per_hour": str(e.cost_per_hour),
        "capacity_tok_s": round(e.capacity_tok_s, 1), "max_concurrency": e.max_concurrency,
    }


def deployment_json(d: Deployment, reps: list[Replica], leases: dict[str, Lease],
                    eps: dict[str, Endpoint], cost_per_mtok: dict[str, str | None]) -> dict:
    out_reps = []
    for r in reps:
        lease = leases.get(r.lease_id or "")
        ep = eps.get(r.endpoint_id or "")
        out_reps.append({
            "id": r.id, "state": str(r.state), "detail": r.detail, "lease_id": r.lease_id,
            "endpoint_id": r.endpoint_id, "url": ep.url if ep else None,
            "supplier": lease.supplier if lease else None, "sku": lease.sku if lease else None,
            "gpu_count": lease.gpu_count if lease else None,
            "region": lease.region if lease else None,
            "price_per_hour": str(lease.price_per_hour) if lease else None,
            "cost_per_mtok": cost_per_mtok.get(r.id),
        })
    return {
        "name": d.name, "model": d.model, "replicas": d.replicas, "owner": d.owner,
        "state": str(d.state), "created_at": d.created_at,
        "max_price_per_mtok": str(d.max_price_per_mtok) if d.max_price_per_mtok else None,
        "healthy_replicas": sum(1 for r in reps if str(r.state) == "healthy"),
        "replica_details": out_reps,
    }
