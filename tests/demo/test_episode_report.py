"""The demo's summary.json holds each evaluated episode's report with its numbers and booleans as JSON
numbers and booleans (sim/episodes carries every value as a string)."""

from __future__ import annotations

import json

from mbrl_ros.demo.run import typed


def test_a_reports_strings_become_json_numbers_and_booleans():
    report = {"episode": "12", "seed": "12", "success": "True", "crashed": "False", "steps": "50",
              "start_stamp_ns": "1700000000000000000", "final_goal_distance_m": "0.01234",
              "final_position_error_m": "nan", "note": "time limit"}
    values = json.loads(json.dumps(typed(report)))
    assert values == {"episode": 12, "seed": 12, "success": True, "crashed": False, "steps": 50,
                      "start_stamp_ns": 1700000000000000000, "final_goal_distance_m": 0.01234,
                      "final_position_error_m": None, "note": "time limit"}


def test_race_reports_give_laps_lap_times_and_exits_as_numbers():
    """Issue 10 §2: the demo's race summary from the episode reports sim_car publishes (strings): laps summed,
    the mean lap time weighted by laps, the best lap, exits = episodes that ended off the track."""
    from mbrl_ros.demo.run import lap_summary
    from mbrl_ros.stack_run import EpisodeTrace

    reports = [
        {"success": "True", "crashed": "False", "laps": "3", "mean_lap_time_s": "20.0", "best_lap_time_s": "19.5"},
        {"success": "False", "crashed": "True", "laps": "1", "mean_lap_time_s": "24.0", "best_lap_time_s": "24.0"},
        {"success": "False", "crashed": "True", "laps": "0", "mean_lap_time_s": "nan", "best_lap_time_s": "nan"},
    ]
    summary = lap_summary([EpisodeTrace(r) for r in reports])
    assert summary == {"laps": 4, "mean_lap_time_s": 21.0, "best_lap_time_s": 19.5, "track_exits": 2}
    assert json.loads(json.dumps(summary)) == summary
    none = lap_summary([EpisodeTrace(reports[2])])
    assert none == {"laps": 0, "mean_lap_time_s": None, "best_lap_time_s": None, "track_exits": 1}


def test_the_summary_json_has_no_nan():
    """A run without planning cycles in its episodes has no latency: null in JSON, not the non-standard NaN."""
    from mbrl_ros.demo.run import json_numbers

    text = json.dumps(json_numbers({"controller_latency_ms": {"p50": float("nan"), "p99": 3.0},
                                    "rates": [float("inf"), 0.5], "laps": 2}))
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"controller_latency_ms": {"p50": None, "p99": 3.0}, "rates": [None, 0.5], "laps": 2}
