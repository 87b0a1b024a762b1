"""The controller's per-cycle decision: safe on bad input, explore without a model, limits always."""

import numpy as np
import pytest
import torch

from mbrl_ros.core.control import ExplorationPolicy, RecedingHorizonController
from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.policies import ConstantPolicy
from mbrl_ros.core.stop import HoldCommand
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
    waiting = []
    modes = []
    for _ in range(40):
        waiting.append(controller.waiting_for_model)
        modes.append(controller.step(np.zeros(5), has_model=False).mode)
    assert modes == ["explore"] * 30 + ["safe"] * 10
    assert waiting == [False] * 30 + [True] * 10  # the node paces lockstep by it (pace_while_waiting)
    assert not make_controller().waiting_for_model  # no budget: it explores until a model comes
    waiting = controller.step(np.zeros(5), has_model=False)
    assert "budget" in waiting.reason
    np.testing.assert_array_equal(waiting.action, [0.0, 0.0])
    assert controller.waiting_for_model
    attach_mppi(controller, KinematicBicycle())
    assert not controller.waiting_for_model
    assert controller.step(np.zeros(5)).mode == "plan"
    with pytest.raises(ValueError, match="exploration_steps"):
        make_controller(exploration_steps=-1)


def test_rate_limit_holds_for_every_kind_of_output_but_the_stop():
    controller = make_controller(max_rate=[0.1, 0.1])
    attach_mppi(controller, KinematicBicycle())
    outputs = [controller.step(np.zeros(5), has_model=False).action for _ in range(20)]
    outputs += [controller.step(np.array([0.0, 0.0, 0.0, 1.0, 0.0])).action for _ in range(5)]
    steps = np.abs(np.diff(np.array(outputs), axis=0))
    assert np.all(steps <= 0.1 + 1e-9)
    controller.stop = HoldCommand([-1.0, 0.0])  # a hard brake, say
    controller.engage_e_stop()
    out = controller.step(np.zeros(5))
    assert out.mode == "safe" and out.reason == "e-stop engaged"
    assert out.action.tolist() == [-1.0, 0.0]  # at once: a stop never waits for the rate limit


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


def test_a_new_model_with_other_settings_is_swapped_in_whole():
    controller = make_controller()
    attach_mppi(controller, KinematicBicycle(BicycleParams(wheelbase=3.0), dt=0.2))
    controller.step(np.zeros(5))
    faster = KinematicBicycle(BicycleParams(wheelbase=3.0), dt=0.1)  # same weights' shapes, another dt
    controller.offer_model(faster)
    moving = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    out = controller.step(moving)
    assert controller.planner.model is faster and controller.planner.model.dt == 0.1
    # The plan's predicted states are the new dt's: 1 m/s moves about 0.1 m in the first step.
    state, plan = torch.tensor(moving, dtype=torch.float32)[None], out.plan.nominal_actions[None]
    expected = faster.rollout(state, plan)[0]
    torch.testing.assert_close(out.plan.predicted_states, expected, rtol=1e-4, atol=1e-5)
    assert float(out.plan.predicted_states[1, 0]) == pytest.approx(0.1, abs=0.03)


def test_exploration_rejects_a_bad_smoothing():
    with pytest.raises(ValueError, match="smoothing"):
        ExplorationPolicy(np.zeros(2) - 1, np.ones(2), smoothing=1.0)


def test_the_e_stop_is_latched_until_released_and_release_resets_the_warm_start():
    controller = make_controller()
    attach_mppi(controller, KinematicBicycle())
    state = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    assert controller.step(state).mode == "plan"
    assert controller.planner.previous_action is not None
    controller.engage_e_stop()
    assert [controller.step(state).mode for _ in range(5)] == ["safe"] * 5  # a good state does not clear it
    controller.release_e_stop()
    assert controller.planner.previous_action is None and controller.previous_plan is None
    assert controller.step(state).mode == "plan"


class FailingPlanner:
    """Stands in for a planner whose result goes bad on cue (the guard must not care why)."""

    def __init__(self, inner, ):
        self.inner, self.model, self.mode = inner, inner.model, "ok"

    def plan(self, state, previous_action=None):
        result = self.inner.plan(state, previous_action)
        if self.mode == "raise":
            raise FloatingPointError("diverged")
        if self.mode == "nan":
            result.nominal_actions[2, 0] = float("nan")
        if self.mode == "out":
            result.nominal_actions[0, 1] = 3.0
        return result

    def reset(self):
        self.inner.reset()


@pytest.mark.parametrize("mode,fault", [("raise", "exception"), ("nan", "non_finite_plan"),
                                        ("out", "out_of_limit_plan")])
def test_a_bad_plan_gives_the_shifted_previous_plan_then_the_stop_and_is_counted(mode, fault):
    controller = make_controller()
    attach_mppi(controller, KinematicBicycle())
    controller.planner = FailingPlanner(controller.planner)
    state = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    good = controller.step(state)
    assert good.mode == "plan"
    nominal = good.plan.nominal_actions.numpy().astype(float)
    controller.planner.mode = mode
    outputs = [controller.step(state, now=0.0) for _ in range(len(nominal) + 1)]
    assert [o.mode for o in outputs] == ["fallback"] * (len(nominal) - 1) + ["safe"] * 2
    np.testing.assert_allclose(outputs[0].action, nominal[1], atol=1e-6)
    np.testing.assert_allclose(outputs[1].action, nominal[2], atol=1e-6)
    assert all(np.all(np.isfinite(o.action)) and np.all(np.abs(o.action) <= 1.0) for o in outputs)
    assert controller.faults[fault] == len(outputs)
    controller.planner.mode = "ok"
    assert controller.step(state).mode == "plan"  # the loop goes on


def test_a_missing_context_is_a_counted_fault_not_a_crash():
    controller = make_controller()
    cost = build_cost({"goal_pose": {"form": "quadratic"}}, 5, 2)  # no goal set
    controller.attach_planner(build_planner("mppi", KinematicBicycle(), cost, {"horizon": 5, "num_samples": 16,
                                                                                 "compile": False}))
    out = controller.step(np.zeros(5))
    assert out.mode == "safe" and "context not set" in out.reason and controller.faults["missing_context"] == 1


def test_an_overrun_sends_the_shifted_previous_plan_and_is_counted():
    controller = make_controller()
    attach_mppi(controller, KinematicBicycle())
    state = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    first = controller.step(state)
    late = controller.step(state, deadline_s=0.0)
    assert late.mode == "fallback" and controller.faults["overrun"] == 1 and "overran" in late.reason
    np.testing.assert_allclose(late.action, first.plan.nominal_actions[1].numpy(), atol=1e-6)
    assert not controller.error


def test_failing_longer_than_the_tolerance_is_an_error_until_a_cycle_succeeds():
    controller = make_controller(failure_tolerance=0.5)
    attach_mppi(controller, KinematicBicycle())
    state = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    for t in (0.0, 0.2, 0.4):
        assert controller.step(None, "state is stale", now=t).mode == "safe"
    assert not controller.error
    controller.step(None, "state is stale", now=0.6)
    assert controller.error
    controller.planner = FailingPlanner(controller.planner)
    controller.planner.mode = "raise"
    assert controller.step(state, now=0.8).mode == "safe" and controller.error  # no plan: still an error
    controller.planner.mode = "ok"
    assert controller.step(state, now=1.0).mode == "plan" and not controller.error


def test_a_stop_that_begins_on_a_stale_state_brakes_from_the_last_measured_speed():
    from mbrl_ros.robots.car.stop import CarStop

    controller = make_controller(stop=CarStop(3, 0, 2, accel_per_unit=5.0, deceleration=4.0, dt=0.2))
    controller.step(np.array([0.0, 0.0, 0.0, 3.0, 0.0]), has_model=False)  # exploring at 3 m/s
    brakes = [controller.step(None, "state is stale").action[0] for _ in range(6)]
    assert brakes == pytest.approx([-0.8, -0.8, -0.8, -0.6, 0.0, 0.0])  # 3 -> 2.2 -> 1.4 -> 0.6 -> 0, held


# ---- the learned policy: alone (controller:=policy) and as the fallback before the stop ------------------------

def goal_policy(bias: float = 0.0):
    """A small goal-reading actor (state and goal -> action), untrained: any fixed function will do."""
    from mbrl_ros.core.policies import Actor

    torch.manual_seed(0)
    actor = Actor(5, 2, [-1.0, -1.0], [1.0, 1.0], context_dim=5, hidden_sizes=[8], angle_dims=[2])
    with torch.no_grad():
        actor.net[-1].bias.fill_(bias)
    return actor.eval()


GOAL = [10.0, 0.0, 0.0, 0.0, 0.0]


def mppi_with_goal() -> RecedingHorizonController:
    """As the node builds it: the cost and planner settings first, then the model and the goal."""
    controller = make_controller(cost=build_cost({"goal_pose": {"form": "quadratic"}}, 5, 2), planner="mppi",
                                 planner_config={"horizon": 10, "num_samples": 64, "compile": False})
    controller.set_model(KinematicBicycle())
    controller.set_context("goal", GOAL, goal=True)
    return controller


def expected_action(actor, state, goal=GOAL):
    with torch.no_grad():
        return actor(torch.tensor(np.array([state]), dtype=torch.float32), torch.tensor([goal])).numpy()[0]


def test_an_overrun_or_a_bad_plan_sends_the_policys_action_before_the_shifted_plan():
    controller = mppi_with_goal()
    state = np.array([0.0, 0.0, 0.3, 1.0, 0.0])
    assert controller.step(state).mode == "plan"
    policy = goal_policy(bias=0.4)
    controller.set_policy(policy)  # given the goal the controller has
    late = controller.step(state, deadline_s=0.0)
    assert late.mode == "fallback_policy" and "overran" in late.reason and controller.faults["overrun"] == 1
    np.testing.assert_allclose(late.action, expected_action(policy, state), atol=1e-5)
    assert late.plan is not None and not controller.error  # a valid plan, late: no failure
    controller.planner = FailingPlanner(controller.planner)
    controller.planner.mode = "nan"
    bad = controller.step(state, now=0.0)
    assert bad.mode == "fallback_policy" and controller.faults["non_finite_plan"] == 1
    np.testing.assert_allclose(bad.action, expected_action(policy, state), atol=1e-5)
    # Failing for longer than the tolerance: the stop, even with a policy (the safety layer has the last word).
    assert controller.step(state, now=0.3).mode == "fallback_policy"
    assert controller.step(state, now=0.6).mode == "safe" and controller.error
    controller.planner.mode = "ok"
    assert controller.step(state, now=0.7).mode == "plan"


def test_a_policy_that_fails_or_gives_non_finite_actions_is_skipped_for_the_shifted_plan_then_the_stop():
    controller = mppi_with_goal()
    state = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    first = controller.step(state)
    broken = goal_policy()
    with torch.no_grad():
        broken.net[0].weight[0, 0] = float("nan")
    controller.set_policy(broken)
    late = controller.step(state, deadline_s=0.0)
    assert late.mode == "fallback" and controller.faults["policy"] == 1 and "policy" in controller.last_fault
    np.testing.assert_allclose(late.action, first.plan.nominal_actions[1].numpy(), atol=1e-6)
    unset = make_controller()  # a goal-reading policy with no goal yet cannot act
    attach_mppi(unset, KinematicBicycle())
    unset.set_policy(goal_policy())
    unset.step(state)
    assert unset.step(state, deadline_s=0.0).mode == "fallback" and "set_context" in unset.last_fault


def test_controller_policy_drives_with_the_actor_alone_clipped_and_given_the_goal():
    cost = {"goal_pose": {"form": "quadratic"}}
    controller = RecedingHorizonController([-1.0, -0.5], [1.0, 0.5], [0.0, 0.0], cost=build_cost(cost, 5, 2),
                                           planner="policy", needs_goal=True, explore=False)
    state = np.array([1.0, 2.0, 0.3, 1.0, 0.0])
    controller.set_model(KinematicBicycle())  # no planner is built for the policy alone
    assert controller.planner is None
    out = controller.step(state)
    assert out.mode == "safe" and out.reason == "no model yet"  # no policy yet
    policy = goal_policy(bias=2.0)  # saturates: the controller's narrower bounds clip it
    controller.set_policy(policy)
    assert controller.step(state).reason == "no goal received yet"
    controller.set_context("goal", GOAL, goal=True)
    out = controller.step(state)
    assert out.mode == "policy" and out.plan is None
    np.testing.assert_allclose(out.action, np.clip(expected_action(policy, state), [-1.0, -0.5], [1.0, 0.5]),
                               atol=1e-5)
    assert out.action[1] == 0.5
    controller.set_context("goal", [0.0, 0.0, 3.0, 0.0, 0.0], goal=True)  # a new goal reaches the actor
    np.testing.assert_allclose(controller.step(state).action, np.clip(expected_action(
        policy, state, [0.0, 0.0, 3.0, 0.0, 0.0]), [-1.0, -0.5], [1.0, 0.5]), atol=1e-5)
    broken = goal_policy()
    with torch.no_grad():
        broken.net[0].weight.fill_(float("nan"))
    controller.set_policy(broken)
    out = controller.step(state, now=0.0)
    assert out.mode == "safe" and "policy" in out.reason and controller.faults["policy"] == 1


def test_the_policy_becomes_mppis_prior_whether_it_arrives_before_or_after_the_model():
    late_model = make_controller(cost=build_cost({"goal_pose": {"form": "quadratic"}}, 5, 2), planner="mppi",
                                 planner_config={"horizon": 10, "num_samples": 64, "compile": False,
                                                 "policy_prior_fraction": 0.5})
    policy = goal_policy()
    late_model.set_policy(policy)
    late_model.set_context("goal", GOAL, goal=True)
    late_model.step(np.zeros(5), has_model=False)  # swapped in, no planner yet
    late_model.set_model(KinematicBicycle())
    assert late_model.planner.prior is policy
    out = late_model.step(np.array([0.0, 0.0, 0.0, 1.0, 0.0]))
    assert out.mode == "plan" and out.plan.info["warm_start"] in ("policy", "shifted")
    controller = mppi_with_goal()
    controller.set_policy(policy)
    controller.step(np.zeros(5))
    assert controller.planner.prior is policy


def test_a_robots_proposal_is_mppis_prior_until_a_learned_policy_takes_its_place():
    proposal = ConstantPolicy([0.3, 0.0])
    controller = make_controller(cost=build_cost({"goal_pose": {"form": "quadratic"}}, 5, 2), planner="mppi",
                                 planner_config={"horizon": 10, "num_samples": 64, "compile": False,
                                                 "policy_prior_fraction": 0.5}, proposal=proposal)
    controller.set_model(KinematicBicycle())
    controller.set_context("goal", GOAL, goal=True)
    assert controller.planner.prior is proposal
    assert controller.step(np.array([0.0, 0.0, 0.0, 1.0, 0.0])).mode == "plan"
    policy = goal_policy()
    controller.set_policy(policy)
    controller.step(np.zeros(5))
    assert controller.planner.prior is policy


def test_speed_caps_follow_the_speeds_seen_at_each_model_and_stay_under_the_configured_cap():
    """``speed_cap_margin``: each model that arrives sets the racing cost's cap to the fastest speed of the states
    so far plus the margin (at most the configured cap), so a model is not asked to plan far beyond its data;
    without it, the configured cap."""
    def controller(margin):
        cost = build_cost({"path_tracking": {"speed_form": "cap", "speed_weight": 5.0, "target_speed": 20.0,
                                             "progress_weight": 1.0}}, 5, 2)
        cost.set_context("path", torch.tensor([[0.0, 0.0], [100.0, 0.0]]))
        return RecedingHorizonController([-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], cost=cost, planner="mppi",
                                         planner_config={"horizon": 5, "num_samples": 16, "compile": False},
                                         speed_cap_margin=margin), cost.terms["path_tracking"]

    following, term = controller(2.0)
    for v in (3.0, 11.5, 9.0):  # random driving reached 11.5 m/s
        following.step(np.array([0.0, 0.0, 0.0, v, 0.0]), has_model=False)
    following.set_model(KinematicBicycle())
    assert term.target_speed == pytest.approx(13.5) and following.speed_caps == {"path_tracking": 13.5}
    following.step(np.array([0.0, 0.0, 0.0, 13.4, 0.0]))
    assert term.target_speed == pytest.approx(13.5)  # a cap moves with a model only
    following.set_model(KinematicBicycle())
    following.step(np.zeros(5))
    assert term.target_speed == pytest.approx(15.4)
    following.step(np.array([0.0, 0.0, 0.0, 19.5, 0.0]))
    following.set_model(KinematicBicycle())
    assert term.target_speed == 20.0  # never above the configured cap
    fixed, term = controller(0.0)
    fixed.step(np.array([0.0, 0.0, 0.0, 3.0, 0.0]), has_model=False)
    fixed.set_model(KinematicBicycle())
    assert term.target_speed == 20.0 and fixed.speed_caps == {}
    with pytest.raises(ValueError, match="speed_cap_margin"):
        RecedingHorizonController([-1.0], [1.0], [0.0], speed_cap_margin=-1.0)
