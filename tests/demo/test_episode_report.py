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
