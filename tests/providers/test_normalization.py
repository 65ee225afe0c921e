"""GPU name normalization as the suppliers' offers exercise it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cambist.domain.sku import SkuMatch, family_of, gpu_specs, normalize_gpu
from cambist.providers import SIM_SUPPLIERS, SimSupplier
from cambist.providers.sim_profiles import PROFILES, raw_gpu_name

T0 = 1_767_225_600.0


@pytest.mark.parametrize(
    ("raw", "memory", "sku"),
    [
        ("gpu_8x_h100_sxm5", 80, "H100-80GB-SXM"),
        ("gpu_1x_h100_pcie", 80, "H100-80GB-PCIe"),
        ("NVIDIA H100 SXM5", 80, "H100-80GB-SXM"),
        ("nvidia-h100-sxm5", 80, "H100-80GB-SXM"),
        ("H100 NVL", None, "H100-94GB-NVL"),
        ("H100", 94, "H100-94GB-NVL"),  # NVL told apart by its memory
        ("H100", 93.6, "H100-94GB-NVL"),
        ("NVIDIA H200 SXM5", 141, "H200-141GB-SXM"),
        ("A100 40GB", 40, "A100-40GB"),
        ("A100 SXM4 80GB", 80, "A100-80GB-SXM"),
        ("A100 80GB", 80, "A100-80GB"),  # variants within 10%: the family SKU
        ("B200 HGX", 180, "B200-180GB"),
        ("RTX 4090", 24, "RTX4090-24GB"),
        ("RTX 6000 Ada", 48, "RTX6000Ada-48GB"),
        ("A10G", 22.4, "A10G-24GB"),
        ("L40S", 48, "L40S-48GB"),
    ],
)
def test_resolved_names(raw: str, memory: float | None, sku: str) -> None:
    match = normalize_gpu(raw, memory)
    assert match.sku == sku and match.resolved and match.raw == raw


@pytest.mark.parametrize(
    ("raw", "memory", "reason"),
    [
        ("H100", 80, "without form factor"),  # SXM or PCIe? never guessed
        ("H100 80GB", None, "without form factor"),
        ("H200", 141, "without form factor"),
        ("RTX 4090", 48, "modified card"),
        ("V100 SXM2 16GB", 16, "16GB"),
        ("RTX 5090", 32, "no datasheet row"),
        ("Potato GPU 9000", None, "unknown GPU name"),
    ],
)
def test_unresolved_names_say_why(raw: str, memory: float | None, reason: str) -> None:
    match = normalize_gpu(raw, memory)
    assert match.sku is None and not match.resolved
    assert reason in match.reason


@given(st.text(max_size=60), st.one_of(st.none(), st.floats(allow_nan=True)))
def test_normalize_never_raises(raw: str, memory: float | None) -> None:
    match = normalize_gpu(raw, memory)
    assert isinstance(match, SkuMatch)
    assert match.sku in gpu_specs() if match.sku is not None else match.reason


@pytest.mark.parametrize("name", SIM_SUPPLIERS)
async def test_supplier_names_normalize_as_intended(tmp_path: Path, name: str) -> None:
    offers = await SimSupplier(name, tmp_path).list_offers(T0)
    for o in offers:
        assert normalize_gpu(o.gpu_name, o.vram_gib).sku == o.sku
        if PROFILES[name].name_style != "bare" and family_of(o.gpu_name) in ("H100", "H200"):
            assert o.sku is not None, f"{o.id}: {o.gpu_name} should name its form factor"


async def test_marketplaces_keep_ambiguous_h100_unresolved(tmp_path: Path) -> None:
    shade = await SimSupplier("shadeform", tmp_path).list_offers(T0)
    h100 = [o for o in shade if family_of(o.gpu_name) == "H100"]
    assert h100 and all(o.sku is None and "form factor" in o.sku_note for o in h100)
    vast = await SimSupplier("vast", tmp_path).list_offers(T0)
    assert {o.sku for o in vast if family_of(o.gpu_name) == "H100"} == {"H100-94GB-NVL"}


def test_raw_names_follow_the_supplier_style() -> None:
    assert raw_gpu_name(PROFILES["aws"], "H100", 8) == "NVIDIA H100 SXM5"
    assert raw_gpu_name(PROFILES["gcp"], "A100-80GB", 8) == "nvidia-a100-sxm4-80gb"
    assert raw_gpu_name(PROFILES["lambda"], "H100", 8) == "gpu_8x_h100_sxm5"
    assert raw_gpu_name(PROFILES["lambda"], "H100", 1) == "gpu_1x_h100_pcie"
    assert raw_gpu_name(PROFILES["vast"], "H100", 4) == "H100"
