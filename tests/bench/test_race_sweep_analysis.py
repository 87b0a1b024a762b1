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


def test_with_several_seeds_a_speed_counts_only_where_every_seed_drove_clean_and_lap_times_are_their_mean():
    results = {
        "parametric": [run(16.0, 1.0, 17.0, 0), run(16.0, 1.0, 18.0, 0), run(17.0, 1.0, 16.0, 0),
                       run(17.0, 0.0, 16.2, 1)],  # one seed of two left the track at 17: not sustained
        "semiparametric": [run(16.0, 1.0, 16.0, 0), run(16.0, 1.0, 17.0, 0), run(20.0, 1.0, 14.0, 0),
                           run(20.0, 1.0, 13.0, 0), run(21.0, 0.0, 13.0, 1), run(21.0, 1.0, 12.5, 0)],
    }
    got = analyse(results)
    assert got["highest_sustained_speed"] == {"parametric": 16.0, "semiparametric": 20.0}
    assert got["lap_time_gain_at_prior_best_speed"] == {"semiparametric": pytest.approx(1 / 17.5)}
    assert got["lap_time_gain_fastest_clean_run"] == {"semiparametric": pytest.approx(4 / 17.5)}


def test_the_sweep_runs_each_seed_at_each_speed_and_kind(tmp_path, monkeypatch):
    """``run`` with several seeds: one demo per (speed, kind, seed), each folder named by its seed, the seed
    passed to the demo and kept with its summary; a speed one seed failed at is not sustained."""
    import json

    import mbrl_ros.demo.run as demo
    from mbrl_ros.bench import race_sweep

    calls = []

    def fake_demo(robot, task, *, model_kind, seed, out_dir, json_path, overrides, **_):
        speed = overrides["controller"]["cost"]["path_tracking"]["target_speed"]
        calls.append((speed, model_kind, seed, out_dir))
        clean = not (speed == 18.0 and seed == 1)
        summary = {"target_speed": speed, "success_rate": 1.0 if clean else 0.0, "laps": 3 if clean else 1,
                   "mean_lap_time_s": 20.0 - speed / 2 + seed, "track_exits": 0 if clean else 1}
        with open(json_path, "w") as f:
            json.dump(summary, f)
        return 0

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    report = race_sweep.run([16.0, 18.0], ["parametric"], seeds=[0, 1], out=str(tmp_path))
    assert [c[:3] for c in calls] == [(18.0, "parametric", 0), (18.0, "parametric", 1),
                                      (16.0, "parametric", 0), (16.0, "parametric", 1)]
    assert calls[1][3] == str(tmp_path / "parametric_18_s1")
    assert [r["sweep_seed"] for r in report["runs"]["parametric"]] == [0, 1, 0, 1]
    assert report["seeds"] == [0, 1] and report["highest_sustained_speed"] == {"parametric": 16.0}
    assert (tmp_path / "race_sweep.png").stat().st_size > 10_000


def test_the_sweep_passes_the_simulated_car_the_retraining_interval_and_the_cap_margin_to_each_demo(tmp_path, monkeypatch):
    """``--sim`` sets sim_car's race_model, ``--retrain-every`` the trainer's, ``--speed-cap-margin`` the
    controller's; left out, the config decides."""
    import json

    import mbrl_ros.demo.run as demo
    from mbrl_ros.bench import race_sweep

    seen = []

    def fake_demo(robot, task, *, json_path, overrides, **_):
        seen.append(overrides)
        with open(json_path, "w") as f:
            json.dump({"target_speed": 12.0, "success_rate": 1.0, "laps": 3, "mean_lap_time_s": 19.0,
                       "track_exits": 0}, f)
        return 0

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    report = race_sweep.run([12.0], ["parametric"], out=str(tmp_path / "a"), retrain_every=100, sim="st",
                            speed_cap_margin=2.0)
    assert seen[0]["sim_car"] == {"race_model": "st"} and seen[0]["trainer"] == {"retrain_every": 100}
    assert seen[0]["controller"]["speed_cap_margin"] == 2.0 and report["speed_cap_margin"] == 2.0
    assert report["sim"] == "st" and report["retrain_every"] == 100
    race_sweep.run([12.0], ["parametric"], out=str(tmp_path / "b"))
    assert "sim_car" not in seen[1] and "trainer" not in seen[1] and "speed_cap_margin" not in seen[1]["controller"]
