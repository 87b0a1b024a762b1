"""The arithmetic of the stack benchmarks (latency pairing, learning curve), on made-up cycles."""

import pytest

from mbrl_ros.bench.latency import analyse
from mbrl_ros.bench.learning_curve import curve
from mbrl_ros.stack_run import EpisodeTrace

MS = 1_000_000


def test_latency_pairs_each_planning_cycle_with_the_first_command_for_its_state():
    stamps = [1000 * MS + i * 50 * MS for i in range(100)]
    timings = [(s, "plan", 10.0, 50.0, 1) for s in stamps] + [(stamps[0] - 50 * MS, "explore", 0.1, 50.0, 0)]
    # Each command arrives 12 ms after its state's stamp; a duplicate 40 ms later must not count.
    commands = [(s, s + 12 * MS) for s in stamps] + [(stamps[5], stamps[5] + 40 * MS)]
    result = analyse(timings, commands, rate_hz=20.0, duration_s=5.0)
    assert result["cycles"] == 100 and result["expected_cycles"] == 100
    assert result["end_to_end_ms"]["p99"] == pytest.approx(12.0)
    assert result["overhead_ms"]["p50"] == pytest.approx(2.0)
    assert result["target_met"] and result["deadline_miss_rate"] == 0.0
    slow = analyse(timings, [(s, s + 20 * MS) for s in stamps], rate_hz=20.0, duration_s=5.0)
    assert not slow["target_met"]  # 20 ms end to end > 10 ms planning + 3 ms
    with pytest.raises(RuntimeError, match="no planning cycle"):
        analyse(timings, [], rate_hz=20.0, duration_s=5.0)


def trace(i: int, success: bool, steps: int) -> EpisodeTrace:
    return EpisodeTrace({"success": str(success), "steps": str(steps),
                         "start_stamp_ns": str(i * 100 * MS), "end_stamp_ns": str((i + 1) * 100 * MS)})


def test_learning_curve_counts_transitions_and_windows_success():
    outcomes = [False] * 4 + [True] * 8
    traces = [trace(i, ok, 100 if not ok else 40) for i, ok in enumerate(outcomes)]
    timings = [(i * 100 * MS + 5, "plan", 1.0, 200.0, 1 if i < 6 else 2) for i in range(12)]
    result = curve(traces, timings, window=4)
    points = result["points"]
    assert [p["transitions"] for p in points][:5] == [100, 200, 300, 400, 440]
    assert points[3]["success_rate"] == 0.0 and points[7]["success_rate"] == 1.0
    assert points[11]["model_version"] == 2
    # The first full window at >= 90 % ends at episode 7: 400 + 4 * 40 transitions.
    assert result["transitions_to_target"] == 560 and result["target_met"]
    assert result["min_success_rate_after_target"] == 1.0
