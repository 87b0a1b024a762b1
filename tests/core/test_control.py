"""The controller's per-cycle decision: safe on bad input, explore without a model, limits always."""

import numpy as np
import pytest
import torch

from mbrl_ros.core.control import ExplorationPolicy, RecedingHorizonController
from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.planners import build_planner
from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle


def make_controller(**kwargs) -> RecedingHorizonController:
    return RecedingHorizonController([-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], **kwargs)


def attach_mppi(controller: RecedingHorizonController, model: KinematicBicycle) -> None:
    cost = build_cost({"goal_pose": {"form": "quadratic"}}, 5, 2)
    cost.set_context("goal", torch.tensor([10.0, 0.0, 0.0, 0.0, 0.0]))
    controller.attach_planner(build_planner("mppi", model, cost, {"horizon": 10, "num_samples": 64,
                                                                  "compile": False}))


def test_problems_give_the_safe_action_with_the_reason():
    controller = make_controller()
    attach_mppi(controller, KinematicBicycle())
    out = controller.step(np.zeros(5), problem="state is stale")
    assert out.mode == "safe" and out.reason == "state is stale"
    np.testing.assert_array_equal(out.action, [0.0, 0.0])
    out = controller.step(np.array([0.0, np.nan, 0.0, 0.0, 0.0]))
    assert out.mode == "safe" and "non-finite" in out.reason


def test_without_a_model_it_explores_within_bounds_or_stays_safe():
    controller = make_controller(explore=True)
    actions = np.array([controller.step(np.zeros(5), has_model=False).action for _ in range(200)])
    assert np.all(np.abs(actions) <= 1.0)
    assert actions.std(axis=0).min() > 0.1  # it really drives around
    still = make_controller(explore=False).step(np.zeros(5), has_model=False)
    assert still.mode == "safe" and still.reason == "no model yet"


def test_exploration_stops_when_its_budget_is_spent_and_planning_starts_with_a_model():
    controller = make_controller(exploration_steps=30)
    modes = [controller.step(np.zeros(5), has_model=False).mode for _ in range(40)]
    assert modes == ["explore"] * 30 + ["safe"] * 10
    waiting = controller.step(np.zeros(5), has_model=False)
    assert "budget" in waiting.reason
    np.testing.assert_array_equal(waiting.action, [0.0, 0.0])
    attach_mppi(controller, KinematicBicycle())
    assert controller.step(np.zeros(5)).mode == "plan"
    with pytest.raises(ValueError, match="exploration_steps"):
        make_controller(exploration_steps=-1)


def test_rate_limit_holds_for_every_kind_of_output():
    controller = make_controller(max_rate=[0.1, 0.1])
    attach_mppi(controller, KinematicBicycle())
    outputs = [controller.step(np.zeros(5), has_model=False).action for _ in range(20)]
    outputs += [controller.step(np.array([0.0, 0.0, 0.0, 1.0, 0.0])).action for _ in range(5)]
    outputs += [controller.step(None, problem="e-stop engaged").action for _ in range(5)]
    steps = np.abs(np.diff(np.array(outputs), axis=0))
    assert np.all(steps <= 0.1 + 1e-9)


def test_a_new_model_is_swapped_in_between_cycles_in_place():
    controller = make_controller()
    model = KinematicBicycle(BicycleParams(wheelbase=3.0))
    attach_mppi(controller, model)
    controller.step(np.zeros(5))
    controller.offer_model(KinematicBicycle(BicycleParams(wheelbase=4.2)))
    assert float(controller.planner.model.theta[0]) == pytest.approx(3.0)  # not before the next cycle
    controller.step(np.zeros(5))
    assert controller.planner.model is model  # same object: a compiled planner keeps its graph
    assert float(model.theta[0]) == pytest.approx(4.2)


def test_exploration_rejects_a_bad_smoothing():
    with pytest.raises(ValueError, match="smoothing"):
        ExplorationPolicy(np.zeros(2) - 1, np.ones(2), smoothing=1.0)
