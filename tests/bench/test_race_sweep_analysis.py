"""Issue 10 §2: the race sweep's reading of its runs: the highest target speed each model kind sustains for
its laps, and the learned kinds' lap-time gain over the prior at the prior's best speed."""

from __future__ import annotations

import pytest

from mbrl_ros.bench.race_sweep import analyse, plot_sweep


def run(speed: float, success: float, lap: float | None, exits: int) -> dict:
    return {"target_speed": speed, "success_rate": success, "mean_lap_time_s": lap, "track_exits": exits}


RESULTS = {
    "parametric": [run(8.0, 1.0, 33.0, 0), run(10.0, 1.0, 27.0, 0), run(12.0, 0.0, None, 1)],
    "semiparametric": [run(8.0, 1.0, 32.0, 0), run(10.0, 1.0, 26.0, 0), run(12.0, 1.0, 22.0, 0)],
    # Sustains 8 only: at 10 one of its episodes left the track (a success rate below 1 is not sustained).
    "ensemble": [run(8.0, 1.0, 34.0, 0), run(10.0, 0.5, 27.5, 1), run(12.0, 0.0, None, 1)],
}


def test_sustained_speeds_and_gains_over_the_prior():
    got = analyse(RESULTS)
    assert got["highest_sustained_speed"] == {"parametric": 10.0, "semiparametric": 12.0, "ensemble": 8.0}
    assert got["prior_best_speed"] == 10.0
    assert got["lap_time_gain_at_prior_best_speed"] == {"semiparametric": pytest.approx(1 / 27),
                                                       "ensemble": None}
    assert got["lap_time_gain_fastest_clean_run"] == {"semiparametric": pytest.approx(5 / 27),
                                                     "ensemble": pytest.approx(-7 / 27)}


def test_a_prior_that_sustains_no_speed_gives_no_gain(tmp_path):
    results = {"parametric": [run(12.0, 0.0, None, 1)], "semiparametric": [run(12.0, 1.0, 22.0, 0)]}
    got = analyse(results)
    assert got["highest_sustained_speed"] == {"parametric": None, "semiparametric": 12.0}
    assert got["prior_best_speed"] is None and got["lap_time_gain_at_prior_best_speed"] == {}
    assert plot_sweep(tmp_path / "sweep.png", results).stat().st_size > 10_000
