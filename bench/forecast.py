"""Backtest of the price forecast: ``python bench/forecast.py``.

Rolling-origin evaluation on simulated hourly price indices calibrated on the
shipped price levels (the median of the catalog's median prices per GPU), for
four price processes the simulated suppliers do not use (mean-reverting,
trending, regime-switching, jumpy; ``cambist.market.synth.price_index``). For
each family, ``--series`` series of 35 days; forecasts from origins on days
21-33 (24 h) and 21-27 (7 d), each seeing only the hours before it. Prints
MAPE and 80%/95% interval coverage of the model and of the naive and
seasonal-naive baselines, per family and overall. Seeds are ``bench:...``
(the model was tuned on ``tune:...`` seeds).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict
from decimal import Decimal

from cambist.market.backtest import METHODS, Tally, backtest
from cambist.market.synth import PROCESSES, price_index
from cambist.providers.catalog import load_price_levels

DAY = 24
ORIGINS = {24: [d * DAY for d in (21, 23, 25, 27, 29, 31, 33)],
           168: [d * DAY for d in (21, 24, 27)]}


def levels() -> dict[str, float]:
    """Median of the catalog's median prices per GPU (the calibration)."""
    by_gpu: dict[str, list[Decimal]] = defaultdict(list)
    for row in load_price_levels():
        by_gpu[row.gpu].append(row.median_price)
    return {gpu: float(statistics.median(p)) for gpu, p in sorted(by_gpu.items())}


def run(n_series: int, seed: str) -> dict[tuple[int, str], dict[str, Tally]]:
    """Tallies per (horizon, family); family ``all`` pools them."""
    gpus = levels()
    names = sorted(gpus)
    out: dict[tuple[int, str], dict[str, Tally]] = {}
    for horizon, origins in ORIGINS.items():
        pooled = {m: Tally() for m in METHODS}
        for family in PROCESSES:
            tallies = {m: Tally() for m in METHODS}
            for k in range(n_series):
                rng = random.Random(f"{seed}:{family}:{k}")
                gpu = names[rng.randrange(len(names))]
                series = price_index(family, 35 * DAY, gpus[gpu], rng,
                                     volatility=rng.uniform(0.6, 1.4))
                backtest(series, origins, horizon, tallies)
            out[(horizon, family)] = tallies
            for m in METHODS:
                pooled[m].ape += tallies[m].ape
                pooled[m].in80 += tallies[m].in80
                pooled[m].in95 += tallies[m].in95
        out[(horizon, "all")] = pooled
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=8, help="series per family")
    ap.add_argument("--seed", default="bench")
    args = ap.parse_args()
    started = time.perf_counter()
    results = run(args.series, args.seed)
    print(f"{len(levels())} GPUs calibrated on the catalog; {args.series} series per family; "
          f"{time.perf_counter() - started:.0f} s")
    print("| horizon | process | MAPE model | MAPE naive | MAPE seasonal-naive "
          "| cover 80 (model/naive/snaive) | cover 95 (model/naive/snaive) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for (horizon, family), t in results.items():
        label = "24 h" if horizon == 24 else "7 d"
        cov80 = "/".join(f"{t[m].coverage80:.0f}" for m in METHODS)
        cov95 = "/".join(f"{t[m].coverage95:.0f}" for m in METHODS)
        mark = "" if t["model"].mape < min(t["naive"].mape, t["seasonal_naive"].mape) else " (*)"
        print(f"| {label} | {family} | {t['model'].mape:.2f}{mark} | {t['naive'].mape:.2f} "
              f"| {t['seasonal_naive'].mape:.2f} | {cov80} | {cov95} |")
    print("(*) the model does not beat both baselines on MAPE there")


if __name__ == "__main__":
    main()
