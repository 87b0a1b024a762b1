"""Per-node health numbers published as diagnostic_msgs/DiagnosticArray.

Every node reports the same things: loop rate, latency p50/p99 over a sliding
window, deadline misses, and inputs it rejected with the last reason.
"""

from __future__ import annotations

import collections
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from mbrl_ros.ros.gc_pauses import PAUSES


class LoopStats:
    """Sliding-window latency and rate statistics of one loop."""

    def __init__(self, window: int = 500) -> None:
        self.latencies_ms: collections.deque[float] = collections.deque(maxlen=window)
        self.stamps: collections.deque[float] = collections.deque(maxlen=window)
        self.deadline_misses = 0
        self.cycles = 0
        self.rejected = 0
        self.last_rejection = ""

    def record(self, latency_ms: float, deadline_ms: float | None = None) -> None:
        self.cycles += 1
        self.latencies_ms.append(latency_ms)
        self.stamps.append(time.monotonic())
        if deadline_ms is not None and latency_ms > deadline_ms:
            self.deadline_misses += 1

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.last_rejection = reason

    def rate_hz(self) -> float:
        if len(self.stamps) < 2 or self.stamps[-1] == self.stamps[0]:
            return 0.0
        return (len(self.stamps) - 1) / (self.stamps[-1] - self.stamps[0])

    def percentiles(self) -> tuple[float, float]:
        if not self.latencies_ms:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(np.fromiter(self.latencies_ms, float), [50, 99])
        return float(p50), float(p99)

    def as_key_values(self) -> dict[str, str]:
        p50, p99 = self.percentiles()
        return {
            "rate_hz": f"{self.rate_hz():.2f}",
            "latency_p50_ms": f"{p50:.3f}",
            "latency_p99_ms": f"{p99:.3f}",
            "cycles": str(self.cycles),
            "deadline_misses": str(self.deadline_misses),
            "rejected_inputs": str(self.rejected),
            "last_rejection": self.last_rejection,
        }


def diagnostic_array(node, name: str, values: dict[str, str], level: int = DiagnosticStatus.OK,
                     message: str = "ok") -> DiagnosticArray:
    """One DiagnosticStatus named ``name`` holding ``values``."""
    array = DiagnosticArray()
    array.header.stamp = node.get_clock().now().to_msg()
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=node.get_namespace())
    if PAUSES.started:  # the process's cyclic collector (run_node): every node reports it
        values = {**values, **PAUSES.as_key_values()}
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    array.status = [status]
    return array
