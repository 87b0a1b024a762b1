"""MPPI and CEM with a learned policy as prior (issue 12 §2): with few samples and narrow noise they plan better
than without, on the same seeds; with wide noise this policy does not help them, which the trainer's check
(``decide_prior``) finds before deploying a policy; the warm start is the policy's rollout only when that beats
the shifted previous plan, and the shifted plan then centres the prior's share of samples.

ROS-free. The policy is learned here (SHAC through the bicycle, a parking-like goal at the origin, one
torch thread, seeded): a mediocre policy on its own (it ends about 4 m from the spot from ~6.7 m).
Episodes are scored by each step's cost ``(x, u, x')`` summed. (Until stop 22 each step was scored as a
one-state trajectory, which this cost scores by its effort term alone: the test compared effort, and its
"35 % better with the prior" was the prior's smaller actions, not a better approach to the spot.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.policies import ConstantPolicy
from mbrl_ros.core.policies.config import PolicyConfig
from mbrl_ros.core.policies.learning import PolicyData, train_policy
from mbrl_ros.robots import get_robot
from mbrl_ros.robots.car.bicycle import BicycleParams, KinematicBicycle
from test_policies_learning import PARKING_LIKE, driven_episodes

def rollout(model, state, actions):
    states = [state]
    for action in actions:
        states.append(model(states[-1][None], action[None])[0])
    return states


CEM = {"horizon": 15, "elites": 4, "iterations": 3, "initial_std": 0.5}
MPPI = {"horizon": 15, "temperature": 0.05, "sigma": [0.5, 0.5], "noise_smoothing": "beta", "beta": 0.5,
        "compile": False}


@pytest.fixture(scope="module")
def task():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = KinematicBicycle(BicycleParams(), dt=0.2)
    cost = get_robot("car").build_cost(PARKING_LIKE, 5, 2)
    cost.set_context("goal", torch.zeros(5))
    data = PolicyData.from_dataset(driven_episodes(model, 60, 10, seed=0), val_fraction=0.3, seed=0)
    config = PolicyConfig.from_dict({"method": "shac", "actor": {"hidden_sizes": [64, 64], "angle_dims": [2]},
                                     "shac": {"iterations": 100, "batch_size": 64}})
    learned = train_policy(config, model, cost, data, [-1.0, -1.0], [1.0, 1.0])
    assert learned.decision.accept, learned.decision.reason
    yield model, cost, learned.actor, data.held_out[0].states[:6]
    torch.set_num_threads(threads)


def episode_costs(model, cost, starts, samples: int, seed: int, prior=None, fraction: float = 0.0,
                  steps: int = 30, planner: str = "mppi", extra: dict | None = None) -> float:
    """Mean cost of closed-loop episodes on the true model (= the planner's model), one per start."""
    settings = {**MPPI, "num_samples": samples} if planner == "mppi" else {**CEM, "population": samples}
    planner = build_planner(planner, model, cost, {**settings, "seed": seed, "policy_prior_fraction": fraction,
                                                   **(extra or {})})
    planner.set_prior(prior)
    totals = []
    with torch.no_grad():
        for start in starts:
            planner.reset()
            x, total = start.clone(), 0.0
            for _ in range(steps):
                action = planner.plan(x).action
                after = model(x[None], action[None])[0]
                total += float(cost(torch.stack([x, after])[None], action[None, None])[0])  # the step (x, u, x')
                x = after
            totals.append(total)
    return float(np.mean(totals))


@pytest.mark.parametrize("planner", ["mppi", "cem"])
def test_the_policy_prior_at_16_samples_and_narrow_noise_does_better_than_without_on_the_same_seeds(task, planner):
    """With noise of 0.05 (sigma, CEM's initial_std) the planner alone barely leaves its warm start in 16 samples;
    drawing half of them around the policy's rollout reaches further, on each of four planner seeds: MPPI 0.94,
    0.98, 0.95, 0.96 of the episode cost without the prior (mean 0.957), CEM 0.96, 0.96, 0.98, 0.97 (mean 0.967;
    2026-12-07). The actor is trained here, so its weights, and these ratios, move with the CPU's floating point:
    MPPI's seed 1 went from 0.97 on one machine to 0.98 on another, which failed the single-seed check this
    replaced (< 0.98 per seed); hence every seed must improve, and their mean by 2 %. With the usual noise of 0.5
    this mediocre policy costs 3-6 % more than no prior (1.04, 1.06, 1.03)."""
    model, cost, actor, starts = task
    narrow = {"sigma": [0.05, 0.05]} if planner == "mppi" else {"initial_std": 0.05}
    ratios = []
    for seed in range(4):
        without = episode_costs(model, cost, starts, 16, seed, planner=planner, extra=narrow)
        with_prior = episode_costs(model, cost, starts, 16, seed, prior=actor, fraction=0.5, planner=planner,
                                   extra=narrow)
        print(f"{planner} at 16 samples, seed {seed}: mean episode cost {without:.3f} without the prior, "
              f"{with_prior:.3f} with it")  # pytest -s shows the numbers
        ratios.append(with_prior / without)
    assert max(ratios) < 1.0 and float(np.mean(ratios)) < 0.98, ratios


def test_the_warm_start_is_the_policys_rollout_only_when_it_beats_the_shifted_plan(task):
    model, cost, actor, starts = task
    planner = build_planner("mppi", model, cost, {**MPPI, "num_samples": 16, "policy_prior_fraction": 0.25})
    planner.set_prior(actor)
    chosen = []
    for state in starts:  # from a cold start (zeros: standing still), the first plan of each episode
        planner.reset()
        prior = planner.prior_actions(state)
        assert prior.shape == (15, 2) and bool((prior.abs() <= 1.0).all())
        both = torch.stack([planner.nominal, prior])
        with torch.no_grad():
            states = torch.stack([torch.stack(rollout(model, state, a)) for a in both])
            better = bool(cost(states, both)[1] < cost(states, both)[0])
        # Both stay sampled: the warm start and the other centre swap roles when the policy's rollout wins, so
        # the prior's share goes around the shifted plan (all samples around a poor policy whose rollout only
        # looked better over the horizon took MPPI at 100 samples from 19/20 parked to 13/20).
        warm, centre, which = planner.warm_start_from_prior(state, planner.nominal)
        expected = (prior, planner.nominal) if better else (planner.nominal, prior)
        assert torch.equal(warm, expected[0]) and torch.equal(centre, expected[1]), which
        chosen.append(planner.plan(state).info["warm_start"])
        assert chosen[-1] == which == ("policy" if better else "shifted")
    assert "policy" in chosen, chosen
    state = starts[0]
    planner.set_prior(ConstantPolicy([1.0, 1.0]))  # full throttle, full lock: circles, worse than any plan
    assert planner.plan(state).info["warm_start"] == "shifted"
    planner.set_prior(lambda states: torch.full((states.shape[0], 2), float("nan")))  # a broken prior is ignored
    assert planner.prior_actions(state) is None and planner.plan(state).info["warm_start"] == "shifted"
    off = build_planner("mppi", model, cost, {**MPPI, "num_samples": 16})  # fraction 0: the prior is not used
    off.set_prior(actor)
    assert off.prior_actions(state) is None and off.plan(state).info["warm_start"] == "shifted"


def test_the_priors_rollout_takes_each_action_within_the_rate_limit_and_is_scored_as_driven(task):
    """The prior's closed-loop rollout runs beside the shifted plan in one batch; each of its actions is limited
    (bounds, then the rate window around the action before) as it is taken, so the states it is scored on are those
    of the actions it proposes."""
    model, cost, _, starts = task
    planner = build_planner("mppi", model, cost, {**MPPI, "num_samples": 16, "policy_prior_fraction": 0.25,
                                                  "max_rate": [0.1, 0.2]})
    planner.set_prior(ConstantPolicy([1.0, -1.0]))  # full throttle, full lock: the rate limit ramps towards it
    planner.previous_action = torch.tensor([0.3, 0.0])
    states, both = planner._prior_rollout(starts[0], planner.nominal)
    prior = both[1]
    steps = torch.arange(1, 16, dtype=prior.dtype)
    expected = torch.stack([torch.clamp(0.3 + 0.1 * steps, max=1.0), torch.clamp(-0.2 * steps, min=-1.0)], dim=1)
    assert torch.allclose(prior, expected), prior
    with torch.no_grad():
        driven = torch.stack([torch.stack(rollout(model, starts[0], actions)) for actions in both])
    assert torch.allclose(states, driven, atol=1e-5)  # both rows: the shifted plan open loop, the prior's actions
    assert torch.equal(planner.prior_actions(starts[0]), prior)


def test_the_priors_rollout_in_numpy_is_the_torch_one(task):
    """An actor (its numpy ``act``) on a model with a numpy form (the bicycle) rolls out in float64 numpy, ~7x
    faster side by side on the parking task; the same actions and states as the torch path (the same actor
    behind a plain function), within float32, rate limits included."""
    model, cost, actor, starts = task
    assert model.numpy_dynamics() is not None
    planner = build_planner("mppi", model, cost, {**MPPI, "num_samples": 16, "policy_prior_fraction": 0.25,
                                                  "max_rate": [0.1, 0.2]})
    planner.previous_action = torch.tensor([0.3, 0.0])
    for state in starts[:4]:
        planner.set_prior(actor)
        assert planner._numpy_prior_dynamics() is not None
        fast = planner._prior_rollout(state, planner.nominal)
        planner.set_prior(lambda states: actor(states))  # no act(): the torch path
        assert planner._numpy_prior_dynamics() is None
        slow = planner._prior_rollout(state, planner.nominal)
        for a, b in zip(fast, slow):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


def test_the_priors_share_of_samples_follows_the_weight_they_earn(task):
    """policy_prior_adaptation: after each plan the share of samples around the prior's other centre moves towards
    the softmax weight they earned, between one sample and policy_prior_fraction, reset with each episode. A prior
    that circles (full throttle, full lock) earns nothing and is soon one sample of 16; the learned one at narrow
    noise, where its rollout helps, keeps more of its share; without adaptation the share stays."""
    model, cost, actor, starts = task

    def shares(prior, adaptation: float, plans: int = 12, sigma: float = 0.5) -> list[float]:
        planner = build_planner("mppi", model, cost, {**MPPI, "num_samples": 16, "sigma": [sigma, sigma],
                                                      "policy_prior_fraction": 0.5,
                                                      "policy_prior_adaptation": adaptation})
        planner.set_prior(prior)
        seen, x = [], starts[2]
        for _ in range(plans):
            result = planner.plan(x)
            seen.append(result.info["prior_share"])
            x = model(x[None], result.action[None])[0]
        assert 1 / 16 <= planner.prior_share <= 0.5
        planner.reset()
        assert planner.prior_share == 0.5
        return seen + [planner.prior_share]

    circling = shares(ConstantPolicy([1.0, 1.0]), 0.5)
    assert circling[0] == 0.5 and circling[-2] == pytest.approx(1 / 16), circling
    assert shares(ConstantPolicy([1.0, 1.0]), 0.0) == [0.5] * 13  # no adaptation: the configured share
    learned = shares(actor, 0.5, sigma=0.05)
    assert max(learned[1:-1]) > 2 / 16 and sum(learned[:-1]) > sum(circling[:-1]), (learned, circling)


class _TurnsNonFinite:
    """A model's numpy form whose steps give NaN from its ``first_bad``-th call on: a model that blows up part way
    through the prior's rollout."""

    def __init__(self, inner, first_bad: int) -> None:
        self.inner, self.first_bad, self.calls = inner, first_bad, 0

    def step(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = self.inner.step(states, actions)
        return out if self.calls < self.first_bad else np.full_like(out, np.nan)

    def jacobians(self, states: np.ndarray, actions: np.ndarray):
        return self.inner.jacobians(states, actions)


@pytest.mark.parametrize("first_bad", [6, 15])  # mid-horizon (the actor then refuses the state); the last step
def test_the_numpy_priors_rollout_turning_non_finite_leaves_the_plan_without_the_prior(task, monkeypatch, first_bad):
    """Where the model's numpy rollout turns non-finite part way through the horizon, the prior is dropped for that
    plan: no prior actions, the shifted plan stays the warm start, and the plan is the one the same planner makes
    without a prior (the same noise), finite. At the last step the actor never sees the bad state; its actions are
    finite, but the states they are scored on are not, so it is dropped too."""
    model, cost, actor, starts = task
    settings = {**MPPI, "num_samples": 16, "max_rate": [0.1, 0.2], "seed": 3}
    planner = build_planner("mppi", model, cost, {**settings, "policy_prior_fraction": 0.5})
    planner.set_prior(actor)
    fast = planner._numpy_prior_dynamics()
    assert fast is not None  # the bicycle's numpy form, checked once against forward
    state = starts[1]
    assert planner._prior_rollout(state, planner.nominal) is not None  # the same rollout with a sound model
    broken = _TurnsNonFinite(fast, first_bad)
    monkeypatch.setattr(planner, "_numpy_prior_dynamics", lambda: broken)
    assert planner._prior_rollout(state, planner.nominal) is None and broken.calls == first_bad
    broken.calls = 0
    assert planner.prior_actions(state) is None
    without = build_planner("mppi", model, cost, settings)  # policy_prior_fraction 0: never asks for the prior
    for _ in range(3):  # a plan, and the warm starts it leaves
        broken.calls = 0
        result, expected = planner.plan(state), without.plan(state)
        assert result.info["warm_start"] == "shifted"
        assert torch.isfinite(result.nominal_actions).all() and torch.isfinite(result.predicted_states).all()
        assert math.isfinite(result.cost)
        assert torch.equal(result.nominal_actions, expected.nominal_actions)
        state = model(state[None], result.action[None])[0]


def test_a_policy_the_planner_does_better_without_is_rejected_as_its_prior(task):
    """decide_prior (the trainer's check before a policy is deployed for a planner that samples around it): the
    planner driven on the model from held-out starts with the candidate as prior, with the deployed one (or none)
    and alone, on the same noise; and the candidate alone. MPPI at 16 samples with little noise (sigma 0.05)
    barely leaves its warm start: the learned policy makes it reach further and is accepted where the ratio
    allows its cost alone (1.02 times MPPI's alone: ``alone_ratio`` 1.1 here, the default 1.0 rejects it); a prior
    that circles (full throttle, full lock), given 90 % of the samples, leaves it worse off."""
    from mbrl_ros.core.policies.rollouts import TaskCost
    from mbrl_ros.core.policies.validation import HeldOutStates, decide_prior

    model, cost, actor, starts = task
    held_out, task_cost = HeldOutStates("starts", starts), TaskCost(cost)

    def planner(fraction: float):
        settings = {**MPPI, "num_samples": 16, "sigma": [0.05, 0.05], "seed": 0, "policy_prior_fraction": fraction}
        return lambda m: build_planner("mppi", m, cost, settings)

    def policy(fn):  # a planner's prior takes states; decide_prior calls a policy with (states, contexts)
        return lambda states, contexts: fn(states)

    learned, circling = policy(actor), policy(ConstantPolicy([1.0, 1.0]))
    good = decide_prior(learned, None, planner(0.5), model, task_cost, held_out, 30, "mppi", alone_ratio=1.1)
    print(good.reason)  # -s shows the costs
    assert good.accept and "it helps mppi as a prior" in good.reason and "with no prior" in good.reason, good.reason
    assert good.candidate["planner"] < 0.95 * good.reference["planner"], good.reason
    assert good.reference["planner_alone"] == good.reference["planner"]  # alone it is about as good as MPPI alone
    bad = decide_prior(circling, None, planner(0.9), model, task_cost, held_out, 30, "mppi")
    print(bad.reason)
    assert not bad.accept and "mppi does better without it" in bad.reason, bad.reason
    assert bad.candidate["planner"] > 1.2 * bad.reference["planner"], bad.reason
    # Against a deployed policy: the circling one does not replace the learned one; the learned one replaces it.
    assert not decide_prior(circling, learned, planner(0.9), model, task_cost, held_out, 30).accept
    assert decide_prior(learned, circling, planner(0.9), model, task_cost, held_out, 30, alone_ratio=1.1).accept
    # A policy alone far worse than the planner alone is no prior for it (prior_alone_ratio), even where the
    # planner's cost with it is lower: the learned one costs 1.02 times what MPPI alone costs; with the default
    # ratio, 1.0, it is rejected for that alone.
    assert good.reference["planner_alone"] < good.candidate["alone"] <= 1.1 * good.reference["planner_alone"]
    strict = decide_prior(learned, None, planner(0.5), model, task_cost, held_out, 30, "mppi")
    print(strict.reason)
    assert not strict.accept and "alone it costs more than 1 times what mppi alone" in strict.reason, strict.reason
    assert strict.candidate["planner"] < strict.reference["planner"]


def test_a_round_checks_the_candidate_as_the_planners_prior_after_it_beats_the_reference():
    """PolicyLearner with ``prior_planner`` (the trainer's, where the controller's planner samples around the
    policy): a candidate that beats the reference is then checked by ``decide_prior`` on validation.prior_starts
    held-out starts, its costs in the decision's metrics; prior_starts: 0 turns the check off."""
    from mbrl_ros.core.policies.learning import PolicyLearner

    torch.manual_seed(0)
    model = KinematicBicycle(BicycleParams(), dt=0.2)
    cost = get_robot("car").build_cost(PARKING_LIKE, 5, 2)
    cost.set_context("goal", torch.zeros(5))
    data = PolicyData.from_dataset(driven_episodes(model, 30, 10, seed=0), val_fraction=0.3, seed=0)
    settings = {**MPPI, "num_samples": 16, "sigma": [0.05, 0.05], "policy_prior_fraction": 0.5}
    made = []

    def make_planner(m):
        made.append(m)
        return build_planner("mppi", m, cost, settings)

    def round_with(validation: dict):
        config = PolicyConfig.from_dict({"method": "shac", "actor": {"hidden_sizes": [64, 64], "angle_dims": [2]},
                                         "shac": {"iterations": 100, "batch_size": 64}, "validation": validation})
        learner = PolicyLearner(config, [-1.0, -1.0], [1.0, 1.0], prior_planner=(make_planner, "mppi"))
        return learner.round(model, cost, data)

    checked = round_with({"steps": 20, "prior_starts": 3})
    assert made and all(m is model for m in made)  # the planner drives the round's model
    assert "better than the constant action" in checked.decision.reason, checked.decision.reason
    assert "mppi's episode cost from 3 held-out starts" in checked.decision.reason, checked.decision.reason
    metrics = checked.metrics()
    for key in ("candidate_cost_planner", "candidate_cost_alone", "reference_cost_planner",
                "reference_cost_planner_alone", "candidate_cost_starts"):
        assert math.isfinite(metrics[key]), (key, metrics)
    strict = round_with({"steps": 20, "prior_starts": 3, "prior_alone_ratio": 0.01})
    assert not strict.decision.accept and "alone it costs more than 0.01 times" in strict.decision.reason, \
        strict.decision.reason
    made.clear()
    off = round_with({"steps": 20, "prior_starts": 0})
    assert not made and off.decision.accept and "mppi" not in off.decision.reason, off.decision.reason


# The car's parking cost (config/car_parking.yaml) and MPPI at 64 samples, the task's success highway-env's.
PARKING_COST = {
    "goal_pose": {"form": "parking_reward", "parking_weights": [1.0, 0.3, 0.0, 0.0, 0.1, 0.1], "stage_weight": 1.0,
                  "terminal_weight": 5.0},
    "walls": {"type": "obstacles", "boundary": [-34.5, -20.5, 34.5, 20.5], "robot_radius": 2.6, "margin": 1.0,
              "collision_cost": 100.0},
    "effort": {"weight": 0.001},
}
PARKING_MPPI = {"horizon": 30, "num_samples": 64, "temperature": 0.05, "sigma": [0.5, 0.5], "noise_smoothing": "beta",
                "beta": 0.5, "compile": False, "seed": 0, "policy_prior_fraction": 0.5, "policy_prior_adaptation": 0.0}


@pytest.fixture
def parking():
    """The known bicycle, the car and its parking cost, planned on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    car = get_robot("car")
    yield KinematicBicycle(BicycleParams(), dt=0.2), car, car.build_cost(PARKING_COST, 5, 2)
    torch.set_num_threads(threads)


def toward_the_spot(states, contexts):
    """A crude prior: head for the spot's centre at up to 4 m/s, whatever the spot's heading."""
    dx, dy = contexts[:, 0] - states[:, 0], contexts[:, 1] - states[:, 1]
    error = torch.atan2(dy, dx) - states[:, 2]
    error = torch.atan2(torch.sin(error), torch.cos(error))
    speed = torch.clamp(0.6 * torch.hypot(dx, dy), max=4.0)
    return torch.stack([torch.clamp(0.5 * (speed - states[:, 3]), -1, 1), torch.clamp(2.0 * error, -1, 1)], -1)


def test_the_prior_is_judged_by_the_episodes_that_succeed_and_only_then_by_cost(parking):
    """decide_prior with the task's success (the car's ``parked``, highway-env's is_success: what the stack's
    episodes are scored by), on the known bicycle: from the lot's centre to spots 8 m away, 60 steps, MPPI at
    64 samples with the car's parking cost, ``toward_the_spot`` as prior. From starts A, B, D it lowers MPPI's
    summed episode cost (about 133 against 144) but MPPI parks 0 with it where it parks 1 alone (D): the old rule
    (the cost alone, ``success`` None) deploys it; judged by parks, it is rejected. From A, B, C it lowers the cost
    and MPPI parks 1 with it (C) against 0 alone (and alone it parks 1/3): it is deployed."""
    from mbrl_ros.core.policies.rollouts import TaskCost
    from mbrl_ros.core.policies.validation import HeldOutStates, decide_prior

    model, car, cost = parking
    success = car.task_success("parked", "test")
    yaws = {"A": 1.6853, "B": 0.8424, "C": -2.3120, "D": 0.8313}
    spots = {"A": [-0.0599, -8.0, -math.pi / 2], "B": [-3.0812, -8.0, -math.pi / 2],
             "C": [-6.5844, 8.0, math.pi / 2], "D": [-0.7100, -8.0, -math.pi / 2]}

    def held_out(names: str) -> HeldOutStates:
        return HeldOutStates("starts", torch.tensor([[0.0, 0.0, yaws[n], 0.0, 0.0] for n in names]),
                             torch.tensor([[*spots[n], 0.0, 0.0] for n in names]))

    settings = {**PARKING_MPPI, "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0]}

    def check(names: str, with_success: bool, reference=None):
        return decide_prior(toward_the_spot, reference, lambda m: build_planner("mppi", m, cost, settings),
                            model, TaskCost(cost, "goal"), held_out(names), 60, "mppi", alone_ratio=10.0,
                            success=success if with_success else None)

    fewer = check("ABD", True)
    print(fewer.reason)  # -s shows the costs and parks
    assert fewer.candidate["planner"] < 0.95 * fewer.reference["planner"], fewer.reason  # a lower summed cost
    assert fewer.candidate["planner_successes"] < fewer.reference["planner_successes"], fewer.reason
    assert not fewer.accept and "mppi succeeds in fewer episodes with it" in fewer.reason, fewer.reason
    assert "(0/3 succeed) with it" in fewer.reason and "(1/3 succeed) with no prior" in fewer.reason
    by_cost = check("ABD", False)
    assert by_cost.accept and "succeed" not in by_cost.reason, by_cost.reason  # the cost alone passed it
    # With the task's success, the policy alone is judged by it too (prior_alone_success, 0.9 of the planner
    # alone's): against itself deployed the prior ties, and alone it parks 0/3 where MPPI alone parks 1/3.
    alone = check("ABD", True, reference=toward_the_spot)
    assert not alone.accept and "alone it succeeds in fewer than 0.9 times" in alone.reason, alone.reason
    more = check("ABC", True)
    print(more.reason)
    assert more.accept and "it helps mppi as a prior" in more.reason, more.reason
    assert more.candidate["planner_successes"] > more.reference["planner_successes"], more.reason


def test_the_planner_without_the_candidate_drives_once_for_every_candidate_of_a_round(parking):
    """decide_prior's ``baseline``: a round decides on several candidates (policy.candidates, policy.attempts) on
    the same model and held-out starts, so the planner's episodes alone and with the deployed policy are driven
    at the first candidate only; the later ones drive only their own, and are decided exactly as without it."""
    from mbrl_ros.core.policies.rollouts import TaskCost
    from mbrl_ros.core.policies.validation import HeldOutStates, decide_prior

    model, car, cost = parking
    held_out = HeldOutStates("starts", torch.tensor([[0.0, 0.0, 1.6853, 0.0, 0.0], [0.0, 0.0, -2.3120, 0.0, 0.0]]),
                             torch.tensor([[-0.0599, -8.0, -math.pi / 2, 0.0, 0.0],
                                           [-6.5844, 8.0, math.pi / 2, 0.0, 0.0]]))
    settings = {**PARKING_MPPI, "action_low": [-1.0, -1.0], "action_high": [1.0, 1.0]}
    built = []

    def make_planner(m):
        built.append(1)
        return build_planner("mppi", m, cost, settings)

    def check(prior, baseline=None):
        return decide_prior(prior, None, make_planner, model, TaskCost(cost, "goal"), held_out, 30, "mppi",
                            success=car.task_success("parked", "test"), baseline=baseline)

    def braking(states, contexts):
        return torch.stack([-torch.ones(states.shape[0]), torch.zeros(states.shape[0])], -1)

    baseline = {}
    first, second = check(toward_the_spot, baseline), check(braking, baseline)
    assert len(built) == 2 + 2 + 2  # alone, the first candidate, the second: one planner per start each
    built.clear()
    assert check(braking).reason == second.reason and len(built) == 4  # without the memo: alone again
    assert first.reference == second.reference and first.candidate != second.candidate
