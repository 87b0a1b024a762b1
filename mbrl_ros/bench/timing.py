"""Timing helpers shared by the benchmarks: medians and p99 after warm-up."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


@dataclass
class Timing:
    median_ms: float
    p99_ms: float
    repeats: int


def time_call(fn: Callable[[], object], repeats: int, warmup: int) -> Timing:
    """Wall-clock ``fn`` ``repeats`` times after ``warmup`` calls (CPU: no sync needed)."""
    for _ in range(warmup):
        fn()
    samples = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        samples[i] = time.perf_counter() - start
    samples *= 1e3
    return Timing(float(np.median(samples)), float(np.percentile(samples, 99)), repeats)


def gemm_gflops(m: int = 1024, k: int = 512, n: int = 512, repeats: int = 50) -> float:
    """The machine's fp32 GEMM rate: the ceiling network rollouts are measured against."""
    a = torch.randn(m, k)
    b = torch.randn(k, n)
    out = torch.empty(m, n)
    timing = time_call(lambda: torch.mm(a, b, out=out), repeats=repeats, warmup=10)
    return 2.0 * m * k * n / (timing.median_ms * 1e-3) / 1e9
