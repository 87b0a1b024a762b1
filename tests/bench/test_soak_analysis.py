"""The soak's numbers from what it watched (``mbrl_ros.bench.soak.analyse``), without a stack."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_ros.bench.latency import planning_cycles
from mbrl_ros.bench.soak import PLANNED, analyse

T0 = 1_700_000_000 * 10**9 + 123  # real stamps: too many digits for a float64 to keep
DT = 200_000_000
MS = 1_000_000


def test_fifths_lost_messages_deadline_misses_and_memory():
    stamps = [T0 + k * DT for k in range(100)]  # 20 s: fifths of 4 s, 20 cycles each
    latency_ms = [10.0] * 80 + [20.0] * 20  # the last fifth twice as slow
    latency_ms[50] = 250.0  # one miss of the 200 ms period
    timings = [(s, "plan", 5.0, 200.0, 1) for s in stamps] + [(T0 - DT, "plan", 5.0, 200.0, 1)]  # one before
    timings[50] = (stamps[50], "fallback", 240.0, 200.0, 1)  # planning overran: the shifted plan went out
    commands = [(s, s + int(ms * MS)) for s, ms in zip(stamps, latency_ms)] + [(T0 - DT, T0)]
    rss = [(T0 + k * 2 * DT, 1000 + (100 if k >= 40 else 0)) for k in range(50)]  # +10 % in the last fifth
    logged = {"state": set(stamps) - {stamps[3], stamps[70]}, "hw/command": set(stamps) | {T0 - DT}}
    end = T0 + 100 * DT
    assert len(planning_cycles(timings, commands)[0]) == 100 and len(planning_cycles(timings, commands, PLANNED)[0]) == 101
    result = analyse(planning_cycles(timings, commands, PLANNED), rss, T0, end, 200.0, logged, restarts=2)
    assert result["minutes"] == pytest.approx(20 / 60)
    assert result["p99_drift_pct"] == pytest.approx(100.0)
    assert result["deadline_miss_rate"] == pytest.approx(0.01)
    assert result["rss_growth_pct"] == pytest.approx(10.0)
    assert result["messages_lost"] == 2 and result["restarts"] == 2

    with pytest.raises(RuntimeError, match="memory samples"):
        analyse(planning_cycles(timings, commands), rss[:5], T0, end, 200.0, logged, restarts=0)
    with pytest.raises(RuntimeError, match="planning cycles"):
        analyse(planning_cycles(timings, []), rss, T0, end, 200.0, logged, restarts=0)
    assert np.isnan(analyse(planning_cycles(timings, commands), [(t, 0) for t, _ in rss], T0, end, 200.0, logged,
                            0)["rss_growth_pct"])
