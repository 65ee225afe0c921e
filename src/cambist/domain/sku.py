"""GPU SKUs: the canonical names, their datasheet specs, and name normalization.

Specs ship in ``data/gpu_specs.csv`` (see ``data/PROVENANCE.md``). Suppliers
call the same GPU many things ("NVIDIA H100 80GB HBM3", "gpu_1x_h100_sxm5",
"H100"); :func:`normalize_gpu` maps a raw name (plus the memory a supplier
reports) to one canonical SKU, and never guesses: when a family has variants
whose specs differ materially (H100 SXM vs PCIe) and the raw name does not say
which, the result is unresolved and the performance model refuses to quote it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources

__all__ = [
    "GpuSpec",
    "SkuMatch",
    "family_of",
    "gpu_spec",
    "gpu_specs",
    "known_skus",
    "normalize_gpu",
]


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Datasheet figures of one canonical SKU."""

    sku: str
    family: str
    memory_gib: int
    memory_bandwidth_tb_s: Decimal
    bf16_dense_tflops: Decimal | None
    fp8_dense_tflops: Decimal | None
    source: str

    @property
    def quotable(self) -> bool:
        """Whether the performance model has enough figures to quote it."""
        return self.bf16_dense_tflops is not None


@dataclass(frozen=True, slots=True)
class SkuMatch:
    """Result of normalizing a supplier's GPU name."""

    raw: str
    sku: str | None
    reason: str = ""

    @property
    def resolved(self) -> bool:
        return self.sku is not None


def _dec(text: str) -> Decimal | None:
    return Decimal(text) if text.strip() else None


@cache
def gpu_specs() -> dict[str, GpuSpec]:
    """All canonical SKUs with datasheet specs, by name."""
    text = resources.files("cambist.domain").joinpath("data/gpu_specs.csv").read_text()
    specs: dict[str, GpuSpec] = {}
    for row in csv.DictReader(text.splitlines()):
        sku = row["sku"]
        bw = _dec(row["memory_bandwidth_tb_s"])
        if bw is None:
            continue
        specs[sku] = GpuSpec(
            sku=sku,
            family=sku.split("-")[0],
            memory_gib=int(row["memory_gib"]),
            memory_bandwidth_tb_s=bw,
            bf16_dense_tflops=_dec(row["bf16_dense_tflops"]),
            fp8_dense_tflops=_dec(row["fp8_dense_tflops"]),
            source=row["source"],
        )
    # Family SKUs: variants that differ by under 10% in every figure collapse
    # to one SKU carrying the lowest (conservative) figures.
    a_sxm, a_pcie = specs["A100-80GB-SXM"], specs["A100-80GB-PCIe"]
    specs["A100-80GB"] = GpuSpec(
        sku="A100-80GB",
        family="A100",
        memory_gib=80,
        memory_bandwidth_tb_s=min(a_sxm.memory_bandwidth_tb_s, a_pcie.memory_bandwidth_tb_s),
        bf16_dense_tflops=a_pcie.bf16_dense_tflops,
        fp8_dense_tflops=None,
        source="A100 80GB family: lowest figures of the SXM and PCIe datasheets",
    )
    return specs


def known_skus() -> list[str]:
    """Canonical SKU names, sorted."""
    return sorted(gpu_specs())


def gpu_spec(sku: str) -> GpuSpec:
    """Specs of a canonical SKU; ``KeyError`` if unknown."""
    return gpu_specs()[sku]


# Canonical names for GPUs that appear in supplier catalogs but have no
# datasheet row shipped: they normalize (so they can be listed and rented) but
# are not quotable.
_UNSPECCED = {
    "A40": "A40-48GB",
    "B300": "B300-288GB",
    "RTXPRO6000": "RTXPRO6000-96GB",
    "RTX5090": "RTX5090-32GB",
    "RTX3090": "RTX3090-24GB",
    "RTX3080": "RTX3080-10GB",
    "RTX3070": "RTX3070-8GB",
    "RTX3060": "RTX3060-12GB",
    "RTX4070": "RTX4070-12GB",
    "RTX4060": "RTX4060-8GB",
    "RTXA6000": "RTXA6000-48GB",
    "RTXA2000": "RTXA2000-6GB",
}

_FORM = re.compile(r"(sxm\d?|pcie|nvl|hgx)", re.I)


def _family_token(raw: str) -> str:
    """Reduce a raw name to a family token: 'NVIDIA H100 80GB HBM3' -> 'H100'."""
    s = raw.upper().replace("NVIDIA", "").replace("GEFORCE", "").replace("_", " ")
    s = re.sub(r"GPU ?\d+X ?", " ", s)  # lambda-style 'gpu_8x_h100_sxm5'
    s = s.replace("RTX PRO", "RTXPRO").replace("RTX-PRO", "RTXPRO").replace("RTX ", "RTX")
    s = s.replace("RTX-", "RTX").replace("-ADA", "ADA").replace(" ADA", "ADA")
    s = s.replace("RTXPRO-", "RTXPRO").replace("RTXPRO ", "RTXPRO")
    s = s.replace("RTXPRO6000S", "RTXPRO6000")
    for tok in re.split(r"[\s/]+", s.strip()):
        tok = tok.strip("-")
        tok = re.sub(r"-?\d+GB$", "", tok)
        if re.match(r"^(A|H|B|L|V|GH|MI|RTX)\w*\d", tok):
            return tok.split("-")[0]
    return s.strip()


def family_of(name: str) -> str:
    """The GPU family of a raw or canonical name: 'H100-80GB-SXM' -> 'H100'."""
    return _family_token(name)


def normalize_gpu(raw: str, memory_gib: float | None = None) -> SkuMatch:
    """Map a supplier's GPU name (and reported memory per GPU) to a canonical SKU.

    Unresolved results keep the raw name and say why.
    """
    fam = _family_token(raw)
    form_m = _FORM.search(raw)
    form = form_m.group(1).upper() if form_m else ""
    mem = memory_gib
    if fam == "H100":
        if "NVL" in form or (mem is not None and mem > 85):
            return SkuMatch(raw, "H100-94GB-NVL")
        if form.startswith("SXM") or form == "HGX":
            return SkuMatch(raw, "H100-80GB-SXM")
        if form == "PCIE":
            return SkuMatch(raw, "H100-80GB-PCIe")
        return SkuMatch(raw, None, "H100 80GB without form factor: SXM and PCIe differ by 40%")
    if fam == "H200":
        if "NVL" in form:
            return SkuMatch(raw, None, "H200 NVL has no datasheet row shipped")
        if form.startswith("SXM") or form == "HGX":
            return SkuMatch(raw, "H200-141GB-SXM")
        return SkuMatch(raw, None, "H200 without form factor: SXM and NVL differ")
    if fam == "A100":
        if mem is not None and mem <= 48:
            return SkuMatch(raw, "A100-40GB")
        if "40G" in raw.upper():
            return SkuMatch(raw, "A100-40GB")
        if form.startswith("SXM"):
            return SkuMatch(raw, "A100-80GB-SXM")
        if form == "PCIE":
            return SkuMatch(raw, "A100-80GB-PCIe")
        return SkuMatch(raw, "A100-80GB")
    simple = {
        "GH200": "GH200-96GB",
        "B200": "B200-180GB",
        "L40S": "L40S-48GB",
        "L4": "L4-24GB",
        "A10G": "A10G-24GB",
        "A10": "A10-24GB",
        "RTX4090": "RTX4090-24GB",
        "RTX6000ADA": "RTX6000Ada-48GB",
        "V100": "V100-32GB",
        "MI300X": "MI300X-192GB",
    }
    if fam in simple:
        sku = simple[fam]
        if fam == "RTX4090" and mem is not None and mem > 30:
            return SkuMatch(raw, None,
                            "RTX 4090 reported with 48 GB: a modified card, specs unknown")
        if fam == "V100" and mem is not None and mem < 20:
            return SkuMatch(raw, None, "V100 16GB has no datasheet row shipped")
        return SkuMatch(raw, sku)
    if fam in _UNSPECCED:
        return SkuMatch(raw, None, f"{_UNSPECCED[fam]}: no datasheet row shipped")
    return SkuMatch(raw, None, "unknown GPU name")
