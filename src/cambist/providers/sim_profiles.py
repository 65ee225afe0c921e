"""How each simulated supplier behaves: billing, volatility, capacity, naming.

Price *levels* come from the public catalog (``catalog``); everything here is
a modelling assumption about the *kind* of supplier, chosen to be plausible
rather than measured:

- hyperscalers (AWS, GCP): deep capacity, list prices that barely move,
  per-second billing with a 60 s minimum, 12-month committed-use prices,
  multi-GPU HGX instances (8x) for the big GPUs, spot with a notice;
- neoclouds (Lambda, Nebius, Verda): smaller pools, slow price moves, per-minute
  billing where the supplier bills by the minute;
- marketplaces (Vast.ai, RunPod, Shadeform, Hyperbolic): individual hosts or
  resold capacity, small and volatile, frequent disappearance, 1/2/4/8-GPU
  units, and GPU names without a form factor.

Market episodes (:class:`EpisodeProfile`, :func:`episode_schedule`) are
market-wide per SKU: a *glut* (a capacity shock: new capacity comes online,
so units per offer jump and prices sag) or a *surge* (a demand wave: other
customers take most units, prices spike). Every supplier listing the SKU
feels the same episode, because the schedule is a pure function of the
market seed, the SKU and the time: it is drawn per fixed block of time (two
maximum durations long) from a generator seeded by (seed, SKU, block), with at
most one episode per block, so it does not depend on when or how often a
supplier steps, and the ground truth can be listed for any interval.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "DEFAULT_EPISODES",
    "GPU_NAMES",
    "PROFILES",
    "EpisodeProfile",
    "SimEpisode",
    "SupplierProfile",
    "count_mix",
    "episode_schedule",
    "interconnect_for",
    "raw_gpu_name",
]

_BIG = frozenset({"H100", "H200", "B200", "B300", "A100", "A100-80GB", "GH200"})
_HOUR = 3600.0
_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class SupplierProfile:
    """The behaviour of one simulated supplier."""

    name: str
    kind: str
    """``hyperscaler``, ``neocloud`` or ``marketplace``."""
    billing_increment_s: int
    billing_minimum_s: int
    log_volatility: float
    """Stationary standard deviation of the log price around its base."""
    half_life_s: float
    """Mean-reversion half-life of the log price."""
    capacity: tuple[int, int]
    """Units per offer (inclusive range)."""
    shocks_per_hour: float
    """Rate at which the capacity other customers use jumps to a new level."""
    vanish_per_hour: float
    absent_mean_s: float
    name_style: str
    """``nvidia`` ("NVIDIA H100 SXM5"), ``gcp`` ("nvidia-h100-sxm5"), ``lambda``
    ("gpu_8x_h100_sxm5"), ``formfactor`` ("H100 SXM5"), ``bare`` ("H100")."""
    preemption_notice_s: int | None = None
    term_12m_factor: Decimal | None = None
    """12-month committed price as a fraction of on-demand (``None``: no term)."""


PROFILES: dict[str, SupplierProfile] = {
    p.name: p
    for p in (
        SupplierProfile("aws", "hyperscaler", 1, 60, 0.01, 7 * _DAY, (6, 20), 0.1, 0.005,
                        _HOUR, "nvidia", 120, Decimal("0.70")),
        SupplierProfile("gcp", "hyperscaler", 1, 60, 0.01, 7 * _DAY, (6, 20), 0.1, 0.005,
                        _HOUR, "gcp", 30, Decimal("0.63")),
        SupplierProfile("lambda", "neocloud", 60, 60, 0.02, 2 * _DAY, (2, 8), 0.5, 0.03,
                        1800.0, "lambda"),
        SupplierProfile("nebius", "neocloud", 1, 60, 0.03, _DAY, (2, 10), 0.4, 0.02,
                        1800.0, "nvidia", 30),
        SupplierProfile("verda", "neocloud", 60, 60, 0.03, _DAY, (2, 8), 0.5, 0.03,
                        1800.0, "formfactor", 60),
        SupplierProfile("runpod", "marketplace", 1, 60, 0.06, 6 * _HOUR, (2, 6), 1.0, 0.1,
                        1800.0, "bare", 5),
        SupplierProfile("vast", "marketplace", 1, 0, 0.12, 2 * _HOUR, (1, 2), 2.0, 0.5,
                        _HOUR, "bare"),
        SupplierProfile("shadeform", "marketplace", 60, 60, 0.05, 6 * _HOUR, (1, 4), 1.0, 0.2,
                        1800.0, "bare"),
        SupplierProfile("hyperbolic", "marketplace", 60, 60, 0.08, 4 * _HOUR, (1, 3), 1.5, 0.3,
                        1800.0, "formfactor"),
    )
}

# Catalog GPU -> (name with form factor, bare name as marketplaces list it).
GPU_NAMES: dict[str, tuple[str, str]] = {
    "A10": ("A10", "A10"),
    "A100": ("A100 SXM4 40GB", "A100 40GB"),
    "A100-80GB": ("A100 SXM4 80GB", "A100 80GB"),
    "A10G": ("A10G", "A10G"),
    "A40": ("A40", "A40"),
    "B200": ("B200 HGX", "B200"),
    "B300": ("B300 HGX", "B300"),
    "GH200": ("GH200", "GH200"),
    "H100": ("H100 SXM5", "H100"),
    "H200": ("H200 SXM5", "H200"),
    "L4": ("L4", "L4"),
    "L40S": ("L40S", "L40S"),
    "RTX-6000-Ada": ("RTX 6000 Ada", "RTX 6000 Ada"),
    "RTX6000-Ada": ("RTX 6000 Ada", "RTX 6000 Ada"),
    "RTX-PRO-6000": ("RTX PRO 6000", "RTX PRO 6000"),
    "RTXPRO6000S": ("RTX PRO 6000 S", "RTX PRO 6000 S"),
    "RTX3060": ("RTX 3060", "RTX 3060"),
    "RTX3070": ("RTX 3070", "RTX 3070"),
    "RTX3080": ("RTX 3080", "RTX 3080"),
    "RTX3090": ("RTX 3090", "RTX 3090"),
    "RTX4060": ("RTX 4060", "RTX 4060"),
    "RTX4070": ("RTX 4070", "RTX 4070"),
    "RTX4090": ("RTX 4090", "RTX 4090"),
    "RTX5090": ("RTX 5090", "RTX 5090"),
    "RTXA2000": ("RTX A2000", "RTX A2000"),
    "RTXA6000": ("RTX A6000", "RTX A6000"),
    "V100": ("V100 SXM2 16GB", "V100"),
}


def raw_gpu_name(profile: SupplierProfile, gpu: str, count: int) -> str:
    """The GPU name as ``profile``'s supplier would print it for a ``count``-GPU unit."""
    form, bare = GPU_NAMES.get(gpu, (gpu, gpu))
    style = profile.name_style
    if style == "bare":
        return bare
    if style == "nvidia":
        return f"NVIDIA {form}"
    if style == "gcp":
        return "nvidia-" + re.sub(r"[^a-z0-9]+", "-", form.lower()).strip("-")
    if style == "lambda":
        if gpu == "H100" and count == 1:
            form = "H100 PCIe"  # Lambda's single-GPU H100 is the PCIe card
        return f"gpu_{count}x_" + re.sub(r"[^a-z0-9]+", "_", form.lower()).strip("_")
    return form


def count_mix(profile: SupplierProfile, gpu: str) -> tuple[int, ...]:
    """GPUs per unit the supplier sells ``gpu`` in (repeats weight the draw)."""
    big = gpu in _BIG
    name = profile.name
    if profile.kind == "hyperscaler":
        return (8,) if big else (1, 1, 4, 8)
    if name == "lambda":
        if gpu in ("H100", "A100"):
            return (1, 2, 4, 8)
        return (8,) if gpu in ("B200", "A100-80GB", "V100") else (1,)
    if name == "nebius":
        return (1, 8, 8) if big else (1,)
    if name == "verda":
        return (1, 2, 4, 8) if big else (1, 2, 4)
    return (1, 1, 1, 2, 4, 8) if big else (1, 1, 1, 2, 4)


def interconnect_for(raw_name: str, sku: str | None, count: int) -> str:
    """``nvlink`` for multi-GPU SXM/HGX units, ``pcie`` otherwise."""
    if count > 1:
        if re.search(r"sxm|hgx", raw_name, re.I) or (sku or "").endswith("-SXM"):
            return "nvlink"
        if (sku or "").startswith(("B200", "GH200")):
            return "nvlink"
    return "pcie"


@dataclass(frozen=True, slots=True)
class EpisodeProfile:
    """How often market episodes happen and how hard they hit (all ranges uniform)."""

    per_day: float = 0.5
    """Episodes per SKU per day (approximately; at most one per block). 0 disables."""
    duration_s: tuple[float, float] = (1 * _HOUR, 4 * _HOUR)
    glut_capacity: tuple[float, float] = (1.8, 2.6)
    """Units per offer are multiplied by this during a glut."""
    glut_price: tuple[float, float] = (0.75, 0.86)
    surge_taken: tuple[float, float] = (0.75, 0.92)
    """Share of each offer's units other customers hold during a surge (at least)."""
    surge_price: tuple[float, float] = (1.18, 1.4)

    def __post_init__(self) -> None:
        if self.per_day < 0 or not 0 < self.duration_s[0] <= self.duration_s[1]:
            raise ValueError("episode rate must be >= 0 and durations positive and ordered")

    @property
    def block_s(self) -> float:
        return 2.0 * self.duration_s[1]


DEFAULT_EPISODES = EpisodeProfile()


@dataclass(frozen=True, slots=True)
class SimEpisode:
    """One simulated market episode of a SKU (``end`` exclusive): the ground truth."""

    sku: str
    kind: str
    """``"glut"`` or ``"surge"``."""
    start: float
    end: float
    capacity_factor: float
    """Glut: units multiplier; surge: share of units others hold."""
    price_factor: float

    def active(self, now: float) -> bool:
        return self.start <= now < self.end


def _block_episode(seed: int, sku: str, block: int, profile: EpisodeProfile
                   ) -> SimEpisode | None:
    rng = random.Random(f"{seed}:episodes:{sku}:{block}")
    happens, kind_draw, length, offset, size, price = (rng.random() for _ in range(6))
    if happens >= 1.0 - math.exp(-profile.per_day * profile.block_s / 86400.0):
        return None
    lo, hi = profile.duration_s
    duration = lo + (hi - lo) * length
    start = block * profile.block_s + (profile.block_s - duration) * offset
    if kind_draw < 0.5:
        kind, cap_range, price_range = "glut", profile.glut_capacity, profile.glut_price
    else:
        kind, cap_range, price_range = "surge", profile.surge_taken, profile.surge_price
    return SimEpisode(sku, kind, start, start + duration,
                      cap_range[0] + (cap_range[1] - cap_range[0]) * size,
                      price_range[0] + (price_range[1] - price_range[0]) * price)


def episode_schedule(seed: int, sku: str, start: float, end: float,
                     profile: EpisodeProfile = DEFAULT_EPISODES) -> list[SimEpisode]:
    """Episodes of ``sku`` in the market seeded ``seed`` that overlap ``[start, end)``."""
    if profile.per_day <= 0 or end <= start:
        return []
    first, last = math.floor(start / profile.block_s), math.floor(end / profile.block_s)
    found = (_block_episode(seed, sku, b, profile) for b in range(first, last + 1))
    return [e for e in found if e is not None and e.start < end and start < e.end]
