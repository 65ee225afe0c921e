"""The performance model: throughput, latency and memory fit, hence $/Mtok."""

from cambist.perf.model import PerfEstimate, PerfModel, Workload

__all__ = ["PerfEstimate", "PerfModel", "Workload"]
