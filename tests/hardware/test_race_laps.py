"""Issue 10 §2: the race's lap counting and track exits, on trajectories whose laps are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mbrl_ros_hardware.car.race import LapCounter, RaceSim, arc_length, stadium_track

PATH = stadium_track()
LENGTH = 2 * 60.0 + 2 * np.pi * 20.0  # two straights and two half circles
FINE = stadium_track(spacing=0.01)


def along(s: np.ndarray, offset: float = 0.0) -> np.ndarray:
    """Points at arc lengths ``s`` on the track, ``offset`` m to the left of the centre line."""
    fine = FINE
    index = np.round(np.asarray(s) % LENGTH / 0.01).astype(int) % len(fine)
    heading = np.roll(fine, -1, axis=0) - fine
    left = np.stack((-heading[:, 1], heading[:, 0]), axis=1) / np.linalg.norm(heading, axis=1, keepdims=True)
    return fine[index] + np.asarray(offset)[..., None] * left[index]


def test_arc_length_and_track_length():
    assert LapCounter(PATH, 0.05).length == pytest.approx(LENGTH, rel=1e-3)
    for s in (0.0, 17.3, 100.0, 200.0, LENGTH - 1.0):
        assert arc_length(along(s, offset=2.0), PATH) == pytest.approx(s, abs=0.05)


def test_laps_and_lap_times_at_known_speeds():
    """3.5 laps at 10 m/s from mid-straight, starting 4 m off the line: 3 laps, each LENGTH / 10 s."""
    dt = 0.05
    counter = LapCounter(PATH, dt)
    start = 30.0
    counter.reset(along(start, offset=4.0))
    t = np.arange(1, int(3.5 * LENGTH / 10.0 / dt) + 1) * dt
    completed = [counter.update(p) for p in along(start + 10.0 * t, offset=4.0 * np.cos(t))]
    assert counter.laps == 3 == sum(completed)
    np.testing.assert_allclose(counter.lap_times, LENGTH / 10.0, atol=2 * dt)


def test_driving_back_and_forth_or_backwards_counts_no_lap():
    dt = 0.05
    counter = LapCounter(PATH, dt)
    counter.reset(along(0.0))
    t = np.arange(1, 4000) * dt
    for p in along(50.0 * np.sin(0.2 * t)):  # 100 m swings across the start line
        counter.update(p)
    assert counter.laps == 0
    for p in along(-10.0 * t):  # 2,000 m the wrong way round
        counter.update(p)
    assert counter.laps == 0 and counter.progress < -1900


def test_the_race_sim_ends_an_episode_at_its_laps_or_at_an_exit():
    sim = RaceSim(laps=1, episode_steps=10_000)
    sim.reset(seed=0)
    # The car moved along the centre line at 20 m/s by setting its pose (its physics frozen): a lap, then the end.
    sim._dynamics = lambda x, u, p: [0.0] * 7
    steps, s = 0, arc_length(sim._x[:2], PATH)
    while True:
        s += 20.0 * sim.dt
        sim._x[:2] = along(s)
        step = sim.step(np.zeros(2))
        steps += 1
        if step.done:
            break
    assert step.success and step.laps == 1 and not step.crashed
    assert steps == pytest.approx(LENGTH / (20.0 * sim.dt), abs=1)
    # Straight on at the first bend: off the track, an exit, not a success.
    sim = RaceSim(laps=1, episode_steps=10_000)
    sim.reset(seed=0, speed=20.0)
    while not (step := sim.step(np.array([0.0, 0.0]))).done:
        pass
    assert step.crashed and not step.success and step.laps == 0 and step.cross_track_error > sim.track_half_width


def test_the_race_costs_edges_are_where_the_race_sim_decides_an_exit():
    """The race config's path_tracking half_width (the cost's track edges) is the sim's track_half_width."""
    config = yaml.safe_load((Path(__file__).parents[2] / "config" / "car_race.yaml").read_text())
    path_tracking = config["/**"]["ros__parameters"]["cost"]["path_tracking"]
    assert path_tracking["half_width"] == RaceSim().track_half_width
    assert 0 < path_tracking["edge_margin"] < path_tracking["half_width"] and path_tracking["edge_weight"] > 0


def test_the_drift_models_tyres_hold_the_car_to_the_roads_grip_and_its_odometry_keeps_the_layout():
    """``model: std`` (commonroad's single-track drift model, Pacejka tyres): at full lock the lateral
    acceleration (speed times yaw rate) stays near 1 g whatever the speed, where ``st``'s linear tyres give
    the 20 m/s car 6 g; so a turn has a top speed. The state and twist keep the layout the stack reads
    (x, y, yaw, longitudinal v, steer; v, v_y, yaw rate), the wheels' speeds inside the simulator."""
    peaks = {}
    for model in ("st", "std"):
        sim = RaceSim(model=model)
        state = sim.reset(seed=0, speed=20.0)
        assert state.shape == (5,) and state[3] == pytest.approx(20.0)
        peak = 0.0
        for _ in range(30):  # 1.5 s at full lock
            step = sim.step(np.array([0.0, 1.0]))
            v, v_y, yaw_rate = sim.twist
            assert step.state[3] == pytest.approx(v) and step.state.shape == (5,)
            peak = max(peak, np.hypot(v, v_y) * abs(yaw_rate))
        peaks[model] = peak
        assert abs(sim.twist[1]) > 0.1  # it slips sideways: v_y is there to measure
    assert peaks["st"] > 50.0 and 7.0 < peaks["std"] < 16.0, peaks
    assert RaceSim(model="std")._x.shape == (9,)
    with pytest.raises(ValueError, match="model must be one of"):
        RaceSim(model="ks")


def test_the_race_config_drives_the_friction_limited_car():
    config = yaml.safe_load((Path(__file__).parents[2] / "config" / "car_race.yaml").read_text())
    assert config["/**/sim_car"]["ros__parameters"]["race_model"] == "std"
