"""The public price catalog the simulated suppliers calibrate on.

Rows of ``cambist.domain/data/gpu_price_levels.csv`` (see ``PROVENANCE.md``
beside it) become typed :class:`PriceLevel` objects; regions are expanded
(``all-17-regions`` becomes a fixed region list) and mapped to a legal
jurisdiction. This module only reads facts; ``sim`` turns them into offers.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources

__all__ = [
    "ALL_REGIONS",
    "EU_COUNTRIES",
    "PriceLevel",
    "catalog_suppliers",
    "jurisdiction_of",
    "load_price_levels",
    "price_levels_for",
]

ALL_REGIONS_TOKEN = "all-17-regions"

# Suppliers that list one price in every region: the region names the
# simulation expands ``all-17-regions`` to. Lambda's public region names
# (US East/West/South/Midwest, Germany, India, Japan, Korea, Israel,
# Australia); the simulation only needs a stable, plausible list.
ALL_REGIONS: dict[str, tuple[str, ...]] = {
    "lambda": (
        "us-east-1", "us-east-2", "us-east-3", "us-west-1", "us-west-2", "us-west-3",
        "us-south-1", "us-south-2", "us-south-3", "us-midwest-1", "us-midwest-2",
        "europe-central-1", "asia-south-1", "asia-northeast-1", "asia-northeast-2",
        "me-west-1", "australia-east-1",
    ),
}

EU_COUNTRIES = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
})

# Cloud region names (AWS, GCP, Nebius, Verda, Lambda, RunPod, Hyperbolic) ->
# jurisdiction: an ISO country code, or "EU" for member states of the Union.
_REGION_JURISDICTION: dict[str, str] = {
    # AWS
    "ap-east-1": "HK", "ap-northeast-1": "JP", "ap-northeast-2": "KR", "ap-south-1": "IN",
    "ap-southeast-1": "SG", "ap-southeast-2": "AU", "ap-southeast-3": "ID",
    "ca-central-1": "CA", "eu-central-1": "EU", "eu-north-1": "EU", "eu-south-2": "EU",
    "eu-west-1": "EU", "eu-west-2": "GB", "eu-west-3": "EU", "me-central-1": "AE",
    # GCP and Nebius
    "asia-southeast1": "SG", "europe-west4": "EU", "eu-north1": "EU", "eu-west1": "EU",
    # Verda (Finland)
    "FIN-01": "EU", "FIN-02": "EU", "FIN-03": "EU",
    # Lambda
    "europe-central-1": "EU", "asia-south-1": "IN", "asia-northeast-1": "JP",
    "asia-northeast-2": "KR", "me-west-1": "IL", "australia-east-1": "AU",
    # RunPod lists a bare country
    "US": "US",
}

# Shadeform region names are "<city>-<country>-<n>".
_COUNTRY_NAMES: dict[str, str] = {
    "usa": "US", "canada": "CA", "japan": "JP", "france": "FR", "poland": "PL",
    "germany": "DE", "finland": "FI", "netherlands": "NL", "uk": "GB", "india": "IN",
}


@dataclass(frozen=True, slots=True)
class PriceLevel:
    """One catalog row: a supplier's public price level for one GPU type."""

    supplier: str
    gpu: str
    gpu_memory_gib: float
    offers_seen: int
    min_price: Decimal
    median_price: Decimal
    max_price: Decimal
    min_spot_price: Decimal | None
    regions: tuple[str, ...]
    """Regions seen; ``all-17-regions`` already expanded to the supplier's list."""
    all_regions: bool = False
    """Whether the catalog said the same price is listed in every region."""


def _regions(supplier: str, text: str) -> tuple[tuple[str, ...], bool]:
    if text.strip() == ALL_REGIONS_TOKEN:
        if supplier not in ALL_REGIONS:
            raise ValueError(f"{supplier}: {ALL_REGIONS_TOKEN} but no region list is known")
        return ALL_REGIONS[supplier], True
    regions = tuple(r.strip() for r in text.split(";") if r.strip())
    return regions or ("default",), False


def _row(row: dict[str, str]) -> PriceLevel:
    regions, every = _regions(row["supplier"], row["regions"])
    spot = row["min_spot_usd_per_gpu_hour"].strip()
    return PriceLevel(
        supplier=row["supplier"],
        gpu=row["gpu"],
        gpu_memory_gib=float(row["gpu_memory_gib"]),
        offers_seen=max(1, int(row["offers_seen"])),
        min_price=Decimal(row["min_usd_per_gpu_hour"]),
        median_price=Decimal(row["median_usd_per_gpu_hour"]),
        max_price=Decimal(row["max_usd_per_gpu_hour"]),
        min_spot_price=Decimal(spot) if spot else None,
        regions=regions,
        all_regions=every,
    )


@cache
def load_price_levels() -> tuple[PriceLevel, ...]:
    """Every row of the shipped price catalog, in file order."""
    text = (
        resources.files("cambist.domain")
        .joinpath("data/gpu_price_levels.csv")
        .read_text(encoding="utf-8")
    )
    return tuple(_row(r) for r in csv.DictReader(text.splitlines()))


def price_levels_for(supplier: str) -> list[PriceLevel]:
    """The catalog rows of one supplier (empty if it is not in the catalog)."""
    return [p for p in load_price_levels() if p.supplier == supplier]


def catalog_suppliers() -> list[str]:
    """Supplier names present in the catalog, sorted."""
    return sorted({p.supplier for p in load_price_levels()})


def jurisdiction_of(region: str) -> str:
    """The legal jurisdiction of a catalog region: ``"US"``, ``"EU"``, ``"JP"``, ...

    Handles cloud region names, Vast.ai host locations (``"Bavaria, DE, EU"``)
    and Shadeform's ``"<city>-<country>-<n>"``; ``"unknown"`` when it cannot
    tell (Hyperbolic's ``"default"``), never a guess.
    """
    if region in _REGION_JURISDICTION:
        return _REGION_JURISDICTION[region]
    if region.startswith("us-"):
        return "US"
    parts = [p.strip() for p in region.split(",")]
    if len(parts) >= 2:  # Vast.ai: "<place>, <country code>, <continent>" or "<cc>, <continent>"
        code = parts[-2].upper()
        if len(code) == 2 and code.isalpha():
            return "EU" if code in EU_COUNTRIES else code
    dashed = region.split("-")
    if len(dashed) == 3 and dashed[1] in _COUNTRY_NAMES:
        code = _COUNTRY_NAMES[dashed[1]]
        return "EU" if code in EU_COUNTRIES else code
    return "unknown"
