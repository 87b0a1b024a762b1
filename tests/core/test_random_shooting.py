"""Random shooting: drives the known bicycle to a goal in closed loop; bounds, seeds, config errors."""

from __future__ import annotations

import pytest
import torch

from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.planners import build_planner
from mbrl_ros.robots.car.bicycle import KinematicBicycle

GOAL = torch.tensor([8.0, 4.0, 0.0, 0.0, 0.0])


def goal_cost():
    cost = build_cost({"goal_pose": {"position_weight": 1.0, "yaw_weight": 0.0, "speed_weight": 1.0,
                                     "stage_weight": 0.1, "terminal_weight": 20.0},
                       "effort": {"weight": 0.01}}, 5, 2, source="test: cost")
    cost.set_context("goal", GOAL)
    return cost


def test_random_shooting_drives_the_bicycle_to_a_goal():
    """From rest at the origin facing +x to (8, 4), about 9 m away, and slow there."""
    car = KinematicBicycle()
    planner = build_planner("rs", car, goal_cost(), {"horizon": 20, "num_samples": 1000, "seed": 0})
    state = torch.zeros(5)
    distances = []
    for _ in range(60):  # 12 s
        state = car(state[None], planner.plan(state).action[None])[0]
        distances.append(float((state[:2] - GOAL[:2]).norm()))
    assert distances[0] > 7.0
    # Arrives and stays: uniform samples jitter around the goal rather than settle on it exactly.
    assert max(distances[-10:]) < 1.0 and abs(float(state[3])) < 1.0, (distances[-10:], state.tolist())


def test_plans_stay_in_bounds_and_a_seed_gives_one_plan():
    config = {"horizon": 10, "num_samples": 200, "action_low": [-0.5, -1.0], "action_high": [0.5, 1.0],
              "max_rate": 0.3, "seed": 4}
    plans = [build_planner("rs", KinematicBicycle(), goal_cost(), config).plan(torch.zeros(5)) for _ in range(2)]
    torch.testing.assert_close(plans[0].nominal_actions, plans[1].nominal_actions, rtol=0, atol=0)
    actions = plans[0].nominal_actions
    assert bool((actions[:, 0].abs() <= 0.5).all()) and bool((actions.diff(dim=0).abs() <= 0.3 + 1e-6).all())
    other = build_planner("rs", KinematicBicycle(), goal_cost(), {**config, "seed": 5}).plan(torch.zeros(5))
    assert not torch.equal(other.nominal_actions, actions)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="rs: num_samples: expected an integer >= 1"):
        build_planner("rs", KinematicBicycle(), goal_cost(), {"num_samples": 0})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['samples'\]"):
        build_planner("rs", KinematicBicycle(), goal_cost(), {"samples": 10})
