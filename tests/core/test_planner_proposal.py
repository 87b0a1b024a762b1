"""A proposal as the planner's prior (Planner.set_prior): its per-plan ``prepare`` hook, and the planner's
output bias in the prior's rollout (ROS-free, on the kinematic bicycle)."""

from __future__ import annotations

import pytest
import torch

from mbrl_ros.core.costs import build_cost
from mbrl_ros.core.planners import build_planner
from mbrl_ros.core.policies import ConstantPolicy
from mbrl_ros.robots.car.bicycle import KinematicBicycle

MPPI = {"horizon": 6, "num_samples": 32, "compile": False, "policy_prior_fraction": 0.5}


class Proposal(ConstantPolicy):
    """A constant action that has something only on the cycles it is told to."""

    def __init__(self, action, ready: bool) -> None:
        super().__init__(action)
        self.ready, self.calls = ready, []

    def prepare(self, state, planner) -> bool:
        self.calls.append((state.clone(), planner))
        return self.ready


def planner(**settings):
    cost = build_cost({"goal_pose": {"form": "quadratic"}}, 5, 2)
    cost.set_context("goal", torch.tensor([5.0, 0.0, 0.0, 0.0, 0.0]))
    return build_planner("mppi", KinematicBicycle(), cost, {**MPPI, **settings})


def test_prepare_runs_once_per_plan_and_a_proposal_with_nothing_is_not_rolled_out():
    state = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    idle, ready = Proposal([0.5, 0.0], ready=False), Proposal([0.5, 0.0], ready=True)
    for proposal in (idle, ready):
        mppi = planner()
        mppi.set_prior(proposal)
        mppi.plan(state)
        mppi.plan(state)
        assert len(proposal.calls) == 2 and proposal.calls[0][1] is mppi
        torch.testing.assert_close(proposal.calls[0][0], state)
    assert idle.calls and planner().prior_actions(state) is None
    mppi = planner()
    mppi.set_prior(idle)
    assert mppi.prior_actions(state) is None
    mppi.set_prior(ready)
    torch.testing.assert_close(mppi.prior_actions(state), torch.tensor([[0.5, 0.0]] * 6))


class NumpyConstant(ConstantPolicy):
    """With ``act``: the prior's rollout runs in float64 numpy."""

    def act(self, state):
        return self.action.double().numpy()


@pytest.mark.parametrize("prior_class", [ConstantPolicy, NumpyConstant])
def test_the_priors_rollout_adds_the_planners_output_bias_as_its_own_rollouts_do(prior_class):
    state = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    plain, biased = planner(), planner(bias_correction=0.5)
    assert plain.output_bias() is None
    biased.output_bias().copy_(torch.tensor([0.1, -0.05, 0.0, 0.02, 0.0]))
    for mppi in (plain, biased):
        mppi.set_prior(prior_class([0.5, 0.2]))
    plan = plain.initial_actions()
    states, _ = plain._prior_rollout(state, plan)
    shifted, _ = biased._prior_rollout(state, plan)
    # Each step is the model's from the step before, plus the bias.
    expected = torch.stack([biased.model(shifted[:, t], torch.stack([plan[t], torch.tensor([0.5, 0.2])]))
                            + biased.output_bias() for t in range(6)], dim=1)
    torch.testing.assert_close(shifted[:, 1:], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(shifted, states)


class OpenLoop(NumpyConstant):
    """A held action (the hand's ReachProposal's kind): ``open_loop``, so the planner does not roll it out."""

    open_loop = True

    def __init__(self, action) -> None:
        super().__init__(action)
        self.prepared = 0

    def prepare(self, state, planner) -> bool:
        self.prepared += 1
        return True


def test_an_open_loop_proposal_is_not_rolled_out_but_scored_as_one_noise_free_sample(monkeypatch):
    state = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    mppi = planner(temperature=1e-6, sigma=[2.0, 0.5], zero_noise_fraction=0.0, max_rate=[0.1, 0.1])
    assert mppi._noise_mask is None
    proposal = OpenLoop([0.8, 0.1])
    mppi.set_prior(proposal)
    assert mppi._noise_mask is not None and float(mppi._noise_mask[-1]) == 0.0 and float(mppi._noise_mask[:-1].min()) == 1.0
    monkeypatch.setattr(mppi, "_prior_rollout", lambda *args: pytest.fail("an open-loop prior was rolled out"))
    mppi.previous_action = torch.tensor([0.5, 0.0])
    # Its actions: held, within the rate window from the previous action (0.1 a step) and the bounds.
    expected = torch.tensor([[0.6, 0.1], [0.7, 0.1]] + [[0.8, 0.1]] * 4)
    torch.testing.assert_close(mppi.prior_actions(state), expected)
    result = mppi.plan(state)
    assert proposal.prepared == 2 and result.info["warm_start"] == "shifted"
    # The noise-free sample on it is among the scored ones: at a near-zero temperature the plan costs no more.
    with torch.no_grad():
        x, states = state, [state]
        for u in expected:
            x = mppi.model(x[None], u[None])[0]
            states.append(x)
        proposal_cost = float(mppi.cost(torch.stack(states)[None], expected[None])[0])
    assert result.cost <= proposal_cost + 1e-4
    mppi.set_prior(ConstantPolicy([0.8, 0.1]))  # a closed-loop prior again: rolled out, no noise-free sample on it
    assert mppi._noise_mask is None
