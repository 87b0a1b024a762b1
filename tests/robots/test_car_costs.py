"""The car's cost terms: highway-env's parking reward as a goal_pose form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.costs import build_cost
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.car.costs import CarGoalPoseTerm, parking_reward

NX, NU = 5, 2


def trajectory(*states, actions=None):
    """One trajectory [1, H+1, nx] from state rows, and zero actions [1, H, nu] unless given."""
    s = torch.tensor([list(x) for x in states], dtype=torch.float32)[None]
    a = torch.zeros(1, s.shape[1] - 1, NU) if actions is None else torch.tensor(actions, dtype=torch.float32)[None]
    return s, a


def highway_env_observation(x, y, yaw, v):
    """highway-env's scaled KinematicsGoal observation, written out independently."""
    return np.array([x / 100, y / 100, v * math.cos(yaw) / 5, v * math.sin(yaw) / 5, math.cos(yaw), math.sin(yaw)])


def highway_env_reward(achieved, desired, weights=(1, 0.3, 0, 0, 0.02, 0.02), p=0.5):
    return -np.power(np.dot(np.abs(achieved - desired), np.array(weights)), p)


def test_parking_reward_matches_highway_env_formula():
    term = CarGoalPoseTerm(NX, NU, form="parking_reward", stage_weight=1.0, terminal_weight=0.0)
    goal = (3.0, -4.0, 0.5, 0.0)
    term.set_goal(torch.tensor([*goal, 0.0]))
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y, yaw, v = rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-3, 3), rng.uniform(-4, 4)
        states, actions = trajectory([0, 0, 0, 0, 0], [x, y, yaw, v, 0.2])
        want = highway_env_reward(highway_env_observation(x, y, yaw, v), highway_env_observation(*goal))
        assert -term(states, actions).item() == pytest.approx(want, rel=1e-4)
        achieved = torch.tensor(highway_env_observation(x, y, yaw, v))
        desired = torch.tensor(highway_env_observation(*goal))
        assert parking_reward(achieved, desired).item() == pytest.approx(want, rel=1e-9)


def test_a_bad_goal_pose_form_names_the_cars_forms():
    with pytest.raises(ValueError) as info:
        build_cost({"goal_pose": {"form": "l2"}}, NX, NU, source="car.yaml: cost", kinds=get_robot("car").term_kinds())
    for word in ["goal_pose", "form", "parking_reward"]:
        assert word in str(info.value)


def test_parked_is_highway_envs_is_success():
    """The parking task's success (``parked``, the trainer's check of a prior counts it) is parking-v0's own
    ``is_success`` on the same car and spot: states around the threshold, on both sides of it."""
    import os

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    import gymnasium as gym
    import highway_env  # noqa: F401
    from mbrl_ros.robots.car.costs import parked

    env = gym.make("parking-v0").unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    goals, states, want = [], [], []
    for _ in range(400):
        gx, gy, gyaw = rng.uniform(-30, 30), rng.uniform(-15, 15), rng.uniform(-math.pi, math.pi)
        scale = rng.choice([0.3, 1.0, 3.0])
        x, y = gx + scale * rng.normal(), gy + scale * rng.normal()
        yaw, v = gyaw + rng.choice([0.0, math.pi]) + 0.3 * scale * rng.normal(), scale * rng.normal()
        goals.append([gx, gy, gyaw, 0.0, 0.0])
        states.append([x, y, yaw, v, 0.1])
        want.append(bool(env._is_success(highway_env_observation(x, y, yaw, v),
                                         highway_env_observation(gx, gy, gyaw, 0.0))))
    got = parked(torch.tensor(states, dtype=torch.float64), torch.tensor(goals, dtype=torch.float64))
    assert 50 < sum(want) < 350  # both sides of the threshold
    assert got.tolist() == want
    # The episode's success, as parking-v0 ends an episode: some state parked, on the episodes that reach no wall
    # (those that do: test_an_episode_that_reaches_a_wall_before_it_parks_does_not_succeed).
    from mbrl_ros.robots.car.costs import crashed

    episodes = get_robot("car").task_success("parked", "test")
    trajectories = torch.tensor(states, dtype=torch.float32).reshape(100, 4, NX)
    clean = ~crashed(trajectories).any(-1)
    assert clean.sum() >= 80, int(clean.sum())
    contexts = torch.tensor(goals, dtype=torch.float32).reshape(100, 4, NX)[:, 0]
    expected = parked(trajectories, contexts[:, None]).any(-1)
    assert episodes(trajectories, contexts)[clean].tolist() == expected[clean].tolist()
    with pytest.raises(ValueError, match="no task success 'reach'"):
        get_robot("car").task_success("reach", "test")


def test_crashed_is_where_the_simulator_stops_the_car_at_a_wall():
    """``crashed`` (the car's body at one of parking-v0's walls) on the model's states is where the simulator ends
    the episode crashed: from the lot's centre, full throttle straight ahead at several headings (into the side
    walls and the end walls), the same commands through the kinematic bicycle with highway-env's parameters (the
    deployed model: it knows no walls and drives on): its first crashed state is the simulator's crash step or the
    next (the simulator stops the car when a wall is less than one of its 15 Hz substeps ahead), none before."""
    from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle
    from mbrl_ros.robots.car.costs import crashed
    from mbrl_ros_hardware.car.parking import ParkingSim

    sim, model = ParkingSim(max_episode_steps=100), KinematicBicycle(BicycleParams(), dt=0.2)
    walls = set()
    for seed in range(6):
        state = sim.reset(seed=seed)
        x, states, crash_step = torch.tensor(state, dtype=torch.float32), [], None
        for k in range(1, 60):
            step = sim.step(np.array([1.0, 0.0]))
            with torch.no_grad():
                x = model(x[None], torch.tensor([[1.0, 0.0]]))[0]
            states.append(x)
            if step.crashed:
                crash_step = k
                break
        assert crash_step is not None, f"seed {seed}: the simulator's car never reached a wall"
        on_model = crashed(torch.stack(states + [model(x[None], torch.tensor([[1.0, 0.0]]))[0]]))
        first = int(on_model.nonzero()[0]) + 1
        assert first in (crash_step, crash_step + 1), (seed, first, crash_step)
        walls.add("end" if abs(float(x[0])) > 30 else "side")
    assert walls == {"end", "side"}
    # A car parked in a spot (the spots are 10-18 m from the lot's centre line, the walls' faces 20.5 m) is clear.
    assert not crashed(torch.tensor([[10.0, 14.0, math.pi / 2, 0.0, 0.0], [-30.0, -14.0, -math.pi / 2, 0.0, 0.0]])).any()
    assert crashed(torch.tensor([[0.0, 18.1, math.pi / 2, 0.0, 0.0], [32.1, 0.0, 0.0, 0.0, 0.0],
                                 [33.6, 0.0, math.pi / 2, 0.0, 0.0]])).all()


def test_an_episode_that_reaches_a_wall_before_it_parks_does_not_succeed():
    """The car's ``parked`` episode success as parking-v0 scores an episode: success at the first parked state
    unless the car touched a wall before (the episode ended crashed there); parked before the wall, it succeeded."""
    goal = [0.0, 14.0, math.pi / 2, 0.0, 0.0]
    at_spot, at_wall, driving = [0.0, 14.0, math.pi / 2, 0.0, 0.0], [0.0, 19.0, math.pi / 2, 3.0, 0.0], \
        [0.0, 5.0, math.pi / 2, 3.0, 0.0]
    episodes = torch.tensor([[driving, at_wall, at_spot], [driving, at_spot, at_wall], [driving, driving, driving]])
    success = get_robot("car").task_success("parked", "test")
    assert success(episodes, torch.tensor([goal] * 3)).tolist() == [False, True, False]
