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
