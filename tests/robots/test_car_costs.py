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
    # The episode's success, as parking-v0 ends an episode: some state parked.
    episodes = get_robot("car").task_success("parked", "test")
    trajectories = torch.tensor(states, dtype=torch.float32).reshape(100, 4, NX)
    contexts = torch.tensor(goals, dtype=torch.float32).reshape(100, 4, NX)[:, 0]
    expected = parked(trajectories, contexts[:, None]).any(-1)
    assert episodes(trajectories, contexts).tolist() == expected.tolist()
    with pytest.raises(ValueError, match="no task success 'reach'"):
        get_robot("car").task_success("reach", "test")
